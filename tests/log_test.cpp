// agent/log: one line per event; JSON keeps the types of values, text prints them plainly.
#include "log.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

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
