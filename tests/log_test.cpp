// agent/log: one line per event; JSON keeps the types of values, text prints them plainly.
#include "log.h"

#include <fcntl.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <future>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

using namespace lease_agent;

namespace {

// Selects a format for one test and restores text afterwards.
struct Format {
  explicit Format(const std::string& f) { log_set_format(f); }
  ~Format() { log_set_format("text"); }
};

}  // namespace

TEST_CASE("JSON lines keep the types of values: numbers, booleans, strings", "[log]") {
  Format json("json");
  log_set_origin("c1", "n1");
  const std::string line =
      log_format_line(LogLevel::info, "promoted", {{"epoch", std::int64_t{42}}, {"ttl_ms", 2000}, {"latency_ms", 1.25},
                                                   {"may_acquire", true}, {"cause", "free"}, {"empty", ""}});
  REQUIRE(!line.empty());
  CHECK(line.back() == '\n');
  CHECK(line.find('\n') == line.size() - 1);
  const nlohmann::json j = nlohmann::json::parse(line);
  CHECK(j["level"] == "info");
  CHECK(j["cluster"] == "c1");
  CHECK(j["node"] == "n1");
  CHECK(j["msg"] == "promoted");
  CHECK(j["epoch"].is_number_integer());
  CHECK(j["epoch"] == 42);
  CHECK(j["ttl_ms"] == 2000);
  CHECK(j["latency_ms"].is_number_float());
  CHECK(j["latency_ms"] == Approx(1.25));
  CHECK(j["may_acquire"].is_boolean());
  CHECK(j["may_acquire"] == true);
  CHECK(j["cause"] == "free");
  CHECK(j["empty"] == "");
  log_set_origin("", "");
}

TEST_CASE("text lines print values plainly and quote what would break the line", "[log]") {
  Format text("text");
  const std::string line = log_format_line(
      LogLevel::warning, "two\nlines", {{"epoch", 7}, {"ok", false}, {"why", "a b"}, {"ratio", 0.5}, {"none", ""}});
  CHECK(line.find('\n') == line.size() - 1);
  CHECK(line.find(" warning ") != std::string::npos);
  CHECK(line.find("two lines") != std::string::npos);
  CHECK(line.find(" epoch=7") != std::string::npos);
  CHECK(line.find(" ok=false") != std::string::npos);
  CHECK(line.find(" why=\"a b\"") != std::string::npos);
  CHECK(line.find(" ratio=0.5") != std::string::npos);
  CHECK(line.find(" none=\"\"") != std::string::npos);
}

TEST_CASE("a string that is not UTF-8 still makes one valid JSON line", "[log]") {
  Format json("json");
  const std::string line = log_format_line(LogLevel::error, std::string("bad \xff byte"), {{"k", "\xfe"}});
  REQUIRE(!line.empty());
  CHECK_NOTHROW(nlohmann::json::parse(line));
}

TEST_CASE("LogValue picks the type from the C++ type, not from the text", "[log]") {
  CHECK(LogValue("12").type() == LogValue::Type::string);
  CHECK(LogValue(std::string("x")).type() == LogValue::Type::string);
  CHECK(LogValue(12).type() == LogValue::Type::integer);
  CHECK(LogValue(12LL).type() == LogValue::Type::integer);
  CHECK(LogValue(12u).type() == LogValue::Type::integer);
  CHECK(LogValue(true).type() == LogValue::Type::boolean);
  CHECK(LogValue(1.5).type() == LogValue::Type::real);
  CHECK(LogValue(-3).plain() == "-3");
  CHECK(LogValue(true).plain() == "true");
}

// ---------------------------------------------------------------------------
// The queue: log_event never waits for stderr; what does not fit is counted.

namespace {

// This process's stderr on a small pipe that nobody reads until start_reading().
class StderrToPipe {
 public:
  StderrToPipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
    read_end_ = fds[0];
    REQUIRE(::fcntl(fds[1], F_SETPIPE_SZ, 4096) > 0);
    saved_ = ::dup(STDERR_FILENO);
    REQUIRE(saved_ >= 0);
    REQUIRE(::dup2(fds[1], STDERR_FILENO) == STDERR_FILENO);
    ::close(fds[1]);
  }
  ~StderrToPipe() {
    if (saved_ >= 0) finish();
  }
  StderrToPipe(const StderrToPipe&) = delete;
  StderrToPipe& operator=(const StderrToPipe&) = delete;

  void start_reading() {
    if (reader_.joinable()) return;
    reader_ = std::thread([this] {
      char buf[4096];
      for (;;) {
        const ssize_t n = ::read(read_end_, buf, sizeof buf);
        if (n > 0) out_.append(buf, static_cast<std::size_t>(n));
        else if (n < 0 && errno == EINTR) continue;
        else return;  // end of file: stderr restored, the last write done
      }
    });
  }
  // Restores stderr; returns everything that was written to the pipe.
  std::string finish() {
    start_reading();
    ::dup2(saved_, STDERR_FILENO);
    ::close(saved_);
    saved_ = -1;
    reader_.join();
    ::close(read_end_);
    return out_;
  }

 private:
  int read_end_ = -1;
  int saved_ = -1;
  std::thread reader_;
  std::string out_;
};

void log_numbered(int from, int to) {
  for (int i = from; i < to; ++i) log_info("line", {{"seq", i}});
}

}  // namespace

TEST_CASE("a stalled stderr never blocks log_event; dropped lines are counted where they were dropped, "
          "the rest comes in order",
          "[log]") {
  const int first = static_cast<int>(kLogQueueLines) * 3;  // more than the pipe and the queue hold
  const int second = static_cast<int>(kLogQueueLines) * 2;
  std::string out;
  {
    StderrToPipe stderr_pipe;
    // On a thread of its own, so that the test fails rather than hangs if it blocks.
    std::promise<void> logged;
    std::future<void> done = logged.get_future();
    std::thread([&logged, first] {
      log_numbered(0, first);
      logged.set_value();
    }).detach();
    REQUIRE(done.wait_for(std::chrono::seconds(30)) == std::future_status::ready);
    // Nothing is read yet: the flush gives up at its bound.
    CHECK_FALSE(log_flush(std::chrono::milliseconds(100)));

    // stderr drains while more lines come: some are dropped again, some get in.
    stderr_pipe.start_reading();
    log_numbered(first, first + second);
    REQUIRE(log_flush(std::chrono::seconds(30)));
    out = stderr_pipe.finish();
  }

  // Every line either came, in order, or is counted by the notice just before the next
  // line that came (or by the last notice).
  int expected = 0;
  long long gap = 0;  // announced by the notices just read
  int lines = 0, notices = 0;
  std::istringstream in(out);
  std::string line;
  while (std::getline(in, line)) {
    INFO("line: " << line);
    const auto dropped = line.find(" log lines dropped");
    if (dropped != std::string::npos) {
      // (Two in a row when a flush wrote the count so far: they add up.)
      const auto start = line.rfind(' ', dropped - 1) + 1;
      const long long n = std::stoll(line.substr(start, dropped - start));
      REQUIRE(n > 0);
      gap += n;
      CHECK(line.find("event=log-dropped") != std::string::npos);
      ++notices;
      continue;
    }
    const auto seq = line.find("seq=");
    REQUIRE(seq != std::string::npos);
    REQUIRE(std::stoi(line.substr(seq + 4)) == expected + gap);
    expected += static_cast<int>(gap) + 1;
    gap = 0;
    ++lines;
  }
  CHECK(expected + gap == first + second);
  CHECK(notices >= 1);
  CHECK(lines >= static_cast<int>(kLogQueueLines));  // the queue's worth, at least
  CHECK(lines < first + second);
}

TEST_CASE("log_flush returns once everything logged is written", "[log]") {
  std::string out;
  {
    StderrToPipe stderr_pipe;
    stderr_pipe.start_reading();
    log_numbered(0, 10);
    REQUIRE(log_flush(std::chrono::seconds(30)));
    out = stderr_pipe.finish();
  }
  for (int i = 0; i < 10; ++i) CHECK(out.find("seq=" + std::to_string(i) + "\n") != std::string::npos);
  CHECK(out.find("dropped") == std::string::npos);
}
