// Tests of HookRunner: environment, exit status, order, timeouts, process
// groups, descriptors and signals of the hooks, and the log lines they cause.
#include "hooks.h"
#include "log.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace fs = std::filesystem;
using lease_agent::HookCall;
using lease_agent::HookRunner;
using namespace std::chrono_literals;

namespace {

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "hooks_test.XXXXXX").string();
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    REQUIRE(::mkdtemp(buf.data()) != nullptr);
    path_ = buf.data();
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Sends this process's stderr (where the log goes) to a file while alive.
class CaptureStderr {
 public:
  explicit CaptureStderr(std::string path) : path_(std::move(path)) {
    std::cerr.flush();
    std::fflush(stderr);
    saved_ = ::dup(2);
    int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(saved_ >= 0);
    REQUIRE(fd >= 0);
    ::dup2(fd, 2);
    ::close(fd);
  }
  ~CaptureStderr() { restore(); }
  // Stops capturing and returns what was written.
  std::string text() {
    restore();
    return read_file(path_);
  }

 private:
  void restore() {
    if (saved_ < 0) return;
    lease_agent::log_flush(std::chrono::seconds(10));  // the log is written by a thread of its own
    std::cerr.flush();
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::string path_;
  int saved_ = -1;
};

// Single-quotes a path for /bin/sh.
std::string q(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'')
      out += "'\\''";
    else
      out += c;
  }
  return out + "'";
}

HookCall call(const std::string& command, const std::string& name = "on-promote",
              const std::string& role = "master", std::int64_t epoch = 7) {
  HookCall c;
  c.name = name;
  c.command = command;
  c.role = role;
  c.epoch = epoch;
  return c;
}

// Waits (without sleeping) until process `pid`, not necessarily our child,
// has exited; true when it did within `timeout`.
bool await_exit(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;  // already gone (and reaped)
  pollfd p{fd, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  } while (rc < 0 && errno == EINTR);
  ::close(fd);
  return rc == 1;
}

pid_t read_pid(const std::string& path) {
  std::string text = read_file(path);
  REQUIRE_FALSE(text.empty());
  return static_cast<pid_t>(std::stol(text));
}

bool is_running(pid_t pid) {
  // A zombie still answers kill(pid, 0); look at its state instead.
  std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= stat.size()) return false;
  char state = stat[close_paren + 2];
  return state != 'Z' && state != 'X';
}

// Reads the pid a hook writes into the FIFO `path` once it runs: a reader that
// does not block, and a bounded wait for it.
pid_t read_pid_from_fifo(const std::string& path) {
  const int rfd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  REQUIRE(rfd >= 0);
  std::string got;
  for (int i = 0; i < 100 && got.find('\n') == std::string::npos; ++i) {
    pollfd p{rfd, POLLIN, 0};
    if (::poll(&p, 1, 200) <= 0) continue;
    char buf[64];
    const ssize_t n = ::read(rfd, buf, sizeof buf);
    if (n > 0) got.append(buf, static_cast<std::size_t>(n));
  }
  ::close(rfd);
  REQUIRE(got.find('\n') != std::string::npos);
  const pid_t pid = static_cast<pid_t>(std::stol(got));
  REQUIRE(pid > 0);
  return pid;
}

}  // namespace

TEST_CASE("hooks get the LEASE_AGENT_ variables and the agent's environment") {
  TempDir dir;
  ::setenv("HOOKS_TEST_INHERITED", "inherited-value", 1);
  ::setenv("LEASE_AGENT_ROLE", "stale-value", 1);  // must be replaced, not duplicated
  HookRunner runner("cluster-a", "node-1", 5s);
  std::string out = dir.file("env");

  int status = runner.run_now(call(
      "printf '%s\\n' \"$LEASE_AGENT_CLUSTER\" \"$LEASE_AGENT_NODE\" \"$LEASE_AGENT_ROLE\" "
      "\"$LEASE_AGENT_EPOCH\" \"$HOOKS_TEST_INHERITED\" > " + q(out) +
          "; env | grep -c '^LEASE_AGENT_ROLE=' >> " + q(out),
      "on-promote", "master", 42));

  ::unsetenv("HOOKS_TEST_INHERITED");
  ::unsetenv("LEASE_AGENT_ROLE");
  CHECK(status == 0);
  CHECK(lines_of(read_file(out)) ==
        std::vector<std::string>{"cluster-a", "node-1", "master", "42", "inherited-value", "1"});
}

TEST_CASE("run_now returns the hook's exit status") {
  HookRunner runner("c", "n", 5s);
  CHECK(runner.run_now(call("true")) == 0);
  CHECK(runner.run_now(call("exit 3")) == 3);
  CHECK(runner.run_now(call("exit 255")) == 255);
  CHECK(runner.run_now(call("command-that-does-not-exist-here")) == 127);
  CHECK(runner.run_now(call("kill -KILL $$")) == 128 + SIGKILL);
}

TEST_CASE("queued calls run in order and drain waits for all of them") {
  TempDir dir;
  std::string out = dir.file("order");
  HookRunner runner("c", "n", 5s);
  // An on-demote first, then promotions (a demotion would supersede promotions queued
  // before it: see below).
  for (int i = 1; i <= 6; ++i)
    runner.enqueue(call("echo " + std::to_string(i) + " \"$LEASE_AGENT_ROLE\" >> " + q(out),
                        i == 1 ? "on-demote" : "on-promote", i == 1 ? "standby" : "master"));
  runner.drain();
  CHECK(lines_of(read_file(out)) ==
        std::vector<std::string>{"1 standby", "2 master", "3 master", "4 master", "5 master", "6 master"});
  runner.drain();  // nothing queued: returns at once
}

TEST_CASE("enqueue returns while the hook is still running") {
  TempDir dir;
  std::string fifo = dir.file("fifo");
  std::string out = dir.file("out");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  HookRunner runner("c", "n", 10s);

  // The hook blocks until this thread writes to the FIFO: were enqueue to
  // wait for the hook, the hook would be killed at its timeout and `out`
  // would stay empty.
  runner.enqueue(call("read line < " + q(fifo) + " && echo \"got $line\" > " + q(out)));
  {
    std::ofstream w(fifo);  // opens once the hook opened the FIFO for reading
    w << "go\n";
  }
  runner.drain();
  CHECK(read_file(out) == "got go\n");
}

TEST_CASE("the destructor finishes the calls already queued") {
  TempDir dir;
  std::string out = dir.file("out");
  {
    HookRunner runner("c", "n", 5s);
    runner.enqueue(call("echo one >> " + q(out)));
    runner.enqueue(call("echo two >> " + q(out)));
  }
  CHECK(lines_of(read_file(out)) == std::vector<std::string>{"one", "two"});
}

TEST_CASE("a hook that outlives its timeout is killed") {
  TempDir dir;
  HookRunner runner("c", "n", 200ms);
  CaptureStderr log(dir.file("log"));
  auto start = std::chrono::steady_clock::now();
  int status = runner.run_now(call("sleep 30"));
  auto elapsed = std::chrono::steady_clock::now() - start;
  std::string text = log.text();

  CHECK((status == 128 + SIGTERM || status == 128 + SIGKILL));
  CHECK(elapsed < 10s);  // a guard against a hang, not a performance figure
  CHECK(contains(text, "hook on-promote still running after hook-timeout 200ms"));
  CHECK(contains(text, "hook on-promote exited with status " + std::to_string(status)));
}

TEST_CASE("a hook that ignores SIGTERM gets SIGKILL") {
  HookRunner runner("c", "n", 500ms);
  auto start = std::chrono::steady_clock::now();
  // An ignored signal stays ignored across exec: sleep ignores SIGTERM too.
  int status = runner.run_now(call("trap '' TERM; sleep 30"));
  CHECK(status == 128 + SIGKILL);
  CHECK(std::chrono::steady_clock::now() - start < 10s);
}

TEST_CASE("a timeout kills the hook's background processes too") {
  TempDir dir;
  std::string pidfile = dir.file("pid");
  HookRunner runner("c", "n", 200ms);

  SECTION("while the shell is still running") {
    int status = runner.run_now(call("sleep 30 & echo $! > " + q(pidfile) + "; wait"));
    CHECK((status == 128 + SIGTERM || status == 128 + SIGKILL));
    CHECK(await_exit(read_pid(pidfile), 5000ms));
  }
  SECTION("after the shell exited, while they hold its output open") {
    int status = runner.run_now(call("sleep 30 & echo $! > " + q(pidfile) + "; exit 0"));
    CHECK(status == 0);
    CHECK(await_exit(read_pid(pidfile), 5000ms));
  }
}

TEST_CASE("a detached background process with its output redirected is left alone") {
  TempDir dir;
  std::string pidfile = dir.file("pid");
  HookRunner runner("c", "n", 200ms);
  int status = runner.run_now(call("sleep 30 >/dev/null 2>&1 & echo $! > " + q(pidfile)));
  CHECK(status == 0);
  pid_t pid = read_pid(pidfile);
  CHECK(is_running(pid));
  ::kill(pid, SIGKILL);
  CHECK(await_exit(pid, 5000ms));
}

TEST_CASE("an empty command is ignored") {
  TempDir dir;
  HookRunner runner("c", "n", 5s);
  CaptureStderr log(dir.file("log"));
  runner.enqueue(call(""));
  runner.drain();
  CHECK(runner.run_now(call("")) == 0);
  CHECK_FALSE(contains(log.text(), "hook on-promote"));
}

TEST_CASE("each line of a hook's output is logged, and its exit status") {
  TempDir dir;
  HookRunner runner("c", "n", 5s);
  CaptureStderr log(dir.file("log"));
  int status = runner.run_now(
      call("echo first line; echo 'on stderr' >&2; "
           "head -c 10000 /dev/zero | tr '\\0' x; echo; printf 'partial'; exit 3",
           "on-demote", "standby"));
  std::string text = log.text();

  CHECK(status == 3);
  CHECK(contains(text, "hook on-demote: first line"));
  CHECK(contains(text, "hook on-demote: on stderr"));
  CHECK(contains(text, "hook on-demote: partial"));
  CHECK(contains(text, "hook on-demote exited with status 3"));
  CHECK(contains(text, "hook on-demote: " + std::string(4096, 'x')));
  CHECK_FALSE(contains(text, std::string(4097, 'x')));
}

TEST_CASE("hooks get no descriptors of the agent, stdin from /dev/null") {
  TempDir dir;
  std::string out = dir.file("fds");
  // A descriptor without O_CLOEXEC, as a careless library might leave one.
  const int leaky = 57;
  int fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::dup2(fd, leaky) == leaky);  // dup2 clears O_CLOEXEC
  ::close(fd);
  HookRunner runner("c", "n", 5s);
  int status = runner.run_now(call("ls /proc/$$/fd > " + q(out) + "; readlink /proc/$$/fd/0 >> " +
                                   q(out)));
  ::close(leaky);
  CHECK(status == 0);
  std::vector<std::string> lines = lines_of(read_file(out));
  CHECK(std::find(lines.begin(), lines.end(), "0") != lines.end());
  CHECK(std::find(lines.begin(), lines.end(), std::to_string(leaky)) == lines.end());
  CHECK(std::find(lines.begin(), lines.end(), "/dev/null") != lines.end());
}

TEST_CASE("hooks start with no blocked signals and default dispositions") {
  TempDir dir;
  std::string out = dir.file("status");
  // The agent ignores SIGPIPE and blocks SIGTERM in its threads.
  struct sigaction old_pipe {};
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  REQUIRE(::sigaction(SIGPIPE, &ignore, &old_pipe) == 0);
  sigset_t block, old_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGTERM);
  sigaddset(&block, SIGINT);
  REQUIRE(::pthread_sigmask(SIG_BLOCK, &block, &old_mask) == 0);

  HookRunner runner("c", "n", 200ms);
  // exec: the shell itself becomes grep, which reads its own mask (a waiting
  // dash blocks signals for a moment, so /proc/$$ would be a race).
  int status =
      runner.run_now(call("exec grep -E '^(SigBlk|SigIgn):' /proc/self/status > " + q(out)));
  // SIGTERM must reach a hook that outlives its timeout.
  int killed = runner.run_now(call("sleep 30"));

  ::pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  ::sigaction(SIGPIPE, &old_pipe, nullptr);

  CHECK(status == 0);
  CHECK(killed == 128 + SIGTERM);
  std::string text = read_file(out);
  CHECK(contains(text, "SigBlk:\t0000000000000000"));
  auto pos = text.find("SigIgn:\t");
  REQUIRE(pos != std::string::npos);
  unsigned long long ignored = std::stoull(text.substr(pos + 8, 16), nullptr, 16);
  CHECK((ignored & (1ULL << (SIGPIPE - 1))) == 0);
  CHECK((ignored & (1ULL << (SIGTERM - 1))) == 0);
}

TEST_CASE("failing hooks do not stop the runner") {
  TempDir dir;
  std::string out = dir.file("out");
  HookRunner runner("c", "n", 5s);
  runner.enqueue(call("exit 1"));
  runner.enqueue(call("this is ( not valid sh"));
  runner.enqueue(call("echo still running > " + q(out)));
  runner.drain();
  CHECK(read_file(out) == "still running\n");
}

// Found by the fault suite (an agent whose on-promote works for a while): an
// on-demote waited behind a still-running on-promote, up to hook-timeout, while
// another node was promoted: two nodes in "master" state by their hooks.
TEST_CASE("an on-demote supersedes a running on-promote: it is killed and the demotion runs now") {
  TempDir dir;
  const std::string fifo = dir.file("fifo"), finished = dir.file("finished"), demoted = dir.file("demoted");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::optional<HookRunner> runner;
  runner.emplace("c", "n", 60s);
  CaptureStderr log(dir.file("log"));
  runner->enqueue(call("echo $$ > " + q(fifo) + "; sleep 30; echo done > " + q(finished)));
  const pid_t promote_pid = read_pid_from_fifo(fifo);
  runner->enqueue(call("echo \"$LEASE_AGENT_ROLE\" > " + q(demoted), "on-demote", "standby"));
  runner->drain();  // without the supersession: 30 s
  runner.reset();   // reaps the killed hook
  const std::string text = log.text();
  CHECK(read_file(demoted) == "standby\n");
  CHECK_FALSE(fs::exists(finished));
  CHECK_FALSE(is_running(promote_pid));
  CHECK(contains(text, "hook on-promote superseded by a demotion while still running, sending SIGKILL"));
  CHECK(contains(text, "hook on-promote exited with status " + std::to_string(128 + SIGKILL)));
}

// Found by the fault suite (30 min at ttl 500ms): the on-demote that superseded a
// slow on-promote started only once the killed hook was reaped, 88 ms after the
// deadline on a loaded machine, and the next master's on-promote ran 1 ms before
// it. Killed processes die when the kernel gets to them; the demotion starts first.
TEST_CASE("an on-demote does not wait for the superseded on-promote to die") {
  TempDir dir;
  const std::string fifo = dir.file("fifo"), demoted = dir.file("demoted");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  std::optional<HookRunner> runner;
  runner.emplace("c", "n", 60s);
  CaptureStderr log(dir.file("log"));
  runner->enqueue(call("echo $$ > " + q(fifo) + "; sleep 30"));
  const pid_t promote_pid = read_pid_from_fifo(fifo);
  runner->enqueue(call("echo \"$LEASE_AGENT_ROLE\" > " + q(demoted), "on-demote", "standby"));
  runner->drain();
  runner.reset();  // reaps the killed hook
  CHECK(await_exit(promote_pid, 10s));
  const std::vector<std::string> lines = lines_of(log.text());
  const auto at = [&](const std::string& what) {
    return std::find_if(lines.begin(), lines.end(), [&](const std::string& l) { return contains(l, what); });
  };
  const auto killed = at("hook on-promote superseded by a demotion");
  const auto demote_started = at("hook on-demote started");
  const auto promote_reaped = at("hook on-promote exited with status " + std::to_string(128 + SIGKILL));
  REQUIRE(killed != lines.end());
  REQUIRE(demote_started != lines.end());
  REQUIRE(promote_reaped != lines.end());
  CHECK(read_file(demoted) == "standby\n");
  // The kill, then the demotion, then (when nothing waits) the killed hook's end.
  CHECK(killed < demote_started);
  CHECK(demote_started < promote_reaped);
}

TEST_CASE("an on-demote drops queued on-promote calls; an on-promote never cancels an on-demote") {
  TempDir dir;
  const std::string fifo = dir.file("fifo"), out = dir.file("out");
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  HookRunner runner("c", "n", 60s);
  CaptureStderr log(dir.file("log"));
  // A demotion that waits for this thread, then a promotion and a demotion queued behind it.
  runner.enqueue(call("read line < " + q(fifo) + "; echo demote1 >> " + q(out), "on-demote", "standby"));
  runner.enqueue(call("echo promote >> " + q(out)));
  runner.enqueue(call("echo demote2 >> " + q(out), "on-demote", "standby"));
  {
    std::ofstream w(fifo);
    w << "go\n";
  }
  runner.drain();
  CHECK(lines_of(read_file(out)) == std::vector<std::string>{"demote1", "demote2"});
  CHECK(contains(log.text(), "hook on-promote dropped from the queue: superseded by a demotion before it started"));
}
