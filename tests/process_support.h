// Process harness for the tests of the lease-agent binary as processes, against
// the real PostgreSQL of LEASE_AGENT_TEST_DSN (tests/test_support.h).
//
// Header only, so that CMake needs nothing beyond tests/process_test.cpp.
//
// - Cluster: one cluster of agents in a temp dir: starts `lease-agent run ...` (fork+exec)
//   with stderr to a log file per start, signals, bounded waits for exit, kill -9 of
//   whatever is left in its destructor (and PR_SET_PDEATHSIG if the test process dies).
// - wait_until / hold_for: polling with a bounded deadline at ~10 ms steps; a
//   timeout FAILs with the name of what was awaited and the tail of every log.
// - http_status: one request with short timeouts; -1 when nothing answered.
// - run_command: a one-shot command (status, check-config, a bad usage) with its
//   exit status, stdout and stderr, bounded in time.
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <pqxx/pqxx>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "proc_util.h"
#include "test_support.h"

extern char** environ;

namespace lease_agent_test {

using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

#ifndef LEASE_AGENT_BINARY
#error "LEASE_AGENT_BINARY must name the lease-agent binary"
#endif

inline const std::string& agent_binary() {
  static const std::string path = LEASE_AGENT_BINARY;
  return path;
}

constexpr Ms kDefaultWait{10000};  // the bound of every "wait until"
constexpr Ms kStep{10};            // the polling step

// ---------------------------------------------------------------------------
// Small things.

inline std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

inline std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) out.push_back(line);
  return out;
}

inline std::string tail(const std::string& text, std::size_t max_chars = 2500) {
  if (text.size() <= max_chars) return text;
  return "..." + text.substr(text.size() - max_chars);
}

inline int free_port() {
  try {
    return lease_agent_proc::free_port();
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  return -1;
}

// The test DSN with some keywords replaced (parsed with libpq, so a URI works too).
inline std::string dsn_with(const std::map<std::string, std::string>& overrides) {
  std::map<std::string, std::string> kv = dsn_keywords(test_dsn());
  for (const auto& [k, v] : overrides) kv[k] = v;
  std::string out;
  for (const auto& [k, v] : kv) {
    std::string q;
    for (char c : v) {
      if (c == '\'' || c == '\\') q += '\\';
      q += c;
    }
    if (!out.empty()) out += ' ';
    const bool plain = !q.empty() && q.find_first_of(" '\\") == std::string::npos;
    out += k + "=" + (plain ? q : "'" + q + "'");
  }
  return out;
}

inline std::string sql_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

// HTTP status of one request to 127.0.0.1:port, or -1 when nothing answered in time.
// A new connection per request (never keep-alive: the agent serves with two threads).
inline int http_status(int port, const std::string& path, const std::string& method = "GET",
                       std::string* body = nullptr, Ms read_timeout = Ms(1000)) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(0, 300000);
  c.set_read_timeout(read_timeout.count() / 1000, (read_timeout.count() % 1000) * 1000);
  c.set_write_timeout(1, 0);
  httplib::Result r = method == "HEAD" ? c.Head(path.c_str()) : c.Get(path.c_str());
  if (!r) return -1;
  if (body) *body = r->body;
  return r->status;
}

// A request written on a raw connection now, answered whenever the server reads it
// (e.g. after a SIGCONT): send() returns once the request is in the socket.
class PendingRequest {
 public:
  PendingRequest(int port, const std::string& path) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    const std::string req = "GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    REQUIRE(::send(fd_, req.data(), req.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(req.size()));
  }
  ~PendingRequest() {
    if (fd_ >= 0) ::close(fd_);
  }
  PendingRequest(const PendingRequest&) = delete;
  PendingRequest& operator=(const PendingRequest&) = delete;

  // The status code of the answer, or -1 if none came within `limit`.
  int status(Ms limit) {
    const auto deadline = SteadyClock::now() + limit;
    std::string got;
    char buf[1024];
    while (got.find("\r\n") == std::string::npos) {
      const auto left = std::chrono::duration_cast<Ms>(deadline - SteadyClock::now()).count();
      if (left <= 0) return -1;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left)) <= 0) continue;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n <= 0) break;
      got.append(buf, static_cast<std::size_t>(n));
    }
    // "HTTP/1.1 503 Service Unavailable"
    const auto sp = got.find(' ');
    if (sp == std::string::npos || got.size() < sp + 4) return -1;
    return std::atoi(got.substr(sp + 1, 3).c_str());
  }

 private:
  int fd_ = -1;
};

using lease_agent_proc::decode_status;
using lease_agent_proc::wait_pid;

inline pid_t spawn_process(const std::vector<std::string>& args,
                           const std::vector<std::pair<std::string, std::string>>& extra_env,
                           const std::string& stdout_path, const std::string& stderr_path) {
  try {
    return lease_agent_proc::spawn_process(args, extra_env, stdout_path, stderr_path);
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
  return -1;
}

// ---------------------------------------------------------------------------
// Temp dir, removed at the end (kept when LEASE_AGENT_KEEP_TMP is set).

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "la-process-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) FAIL("mkdtemp: " << std::strerror(errno));
    path_ = tmpl;
  }
  ~TempDir() {
    if (std::getenv("LEASE_AGENT_KEEP_TMP") != nullptr) return;
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string file(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// ---------------------------------------------------------------------------
// One-shot commands.

struct CommandResult {
  int exit = -1;  // -1: did not exit within the bound (then killed)
  std::string out;
  std::string err;
};

inline CommandResult run_command(const TempDir& dir, const std::vector<std::string>& args_after_binary,
                                 Ms limit = Ms(15000),
                                 const std::vector<std::pair<std::string, std::string>>& env = {}) {
  static int n = 0;
  const std::string base = dir.file("cmd" + std::to_string(++n));
  std::vector<std::string> args{agent_binary()};
  args.insert(args.end(), args_after_binary.begin(), args_after_binary.end());
  const pid_t pid = spawn_process(args, env, base + ".out", base + ".err");
  CommandResult r;
  const std::optional<int> st = wait_pid(pid, limit);
  if (!st) {
    ::kill(pid, SIGKILL);
    wait_pid(pid, Ms(5000));
  }
  r.exit = st.value_or(-1);
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  return r;
}

// ---------------------------------------------------------------------------
// Agents.

struct AgentOptions {
  std::string node;
  std::string dsn;  // empty: test_dsn()
  std::string ttl = "2s";
  std::string renew = "500ms";
  std::string address;  // -b; empty: "<node>.example:5432"
  std::vector<std::string> extra_args;
  std::vector<std::pair<std::string, std::string>> env;
};

class Cluster;

class Agent {
 public:
  const std::string& node() const { return options_.node; }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_path_; }
  const std::string& address() const { return address_; }
  std::string log() const { return read_file(log_path_); }
  bool running() const { return !exit_status_.has_value(); }
  std::optional<int> exit_status() const { return exit_status_; }

  void signal(int sig) const {
    REQUIRE(running());
    REQUIRE(::kill(pid_, sig) == 0);
  }

  // The exit status, once the process has exited within `limit`; FAILs otherwise.
  int wait_exit(Ms limit = kDefaultWait) {
    if (!exit_status_) exit_status_ = wait_pid(pid_, limit);
    if (!exit_status_)
      FAIL("agent " << node() << " (pid " << pid_ << ") did not exit within " << limit.count()
                    << "ms; its log:\n"
                    << tail(log()));
    return *exit_status_;
  }

  // Non-blocking: true if it has exited (and records the status).
  bool poll_exit() {
    if (exit_status_) return true;
    exit_status_ = wait_pid(pid_, Ms(0));
    return exit_status_.has_value();
  }

  int get(const std::string& path, std::string* body = nullptr) const {
    return http_status(port_, path, "GET", body);
  }
  int head(const std::string& path) const { return http_status(port_, path, "HEAD"); }

 private:
  friend class Cluster;
  AgentOptions options_;
  std::string address_;
  int port_ = 0;
  pid_t pid_ = -1;
  std::string log_path_;
  std::optional<int> exit_status_;
};

// The agents of one cluster, each in its own process with its own port and log.
class Cluster {
 public:
  explicit Cluster(const std::string& prefix) : name_(unique_cluster(prefix)) {
    ::signal(SIGPIPE, SIG_IGN);
    ensure_schema();
    db_ = connect_db();
  }
  ~Cluster() {
    for (auto& a : agents_) {
      if (a->exit_status_) continue;
      ::kill(a->pid_, SIGKILL);
      a->exit_status_ = wait_pid(a->pid_, Ms(5000));
    }
  }
  Cluster(const Cluster&) = delete;
  Cluster& operator=(const Cluster&) = delete;

  const std::string& name() const { return name_; }
  const TempDir& dir() const { return dir_; }

  // Starts `lease-agent run` for options.node; returns at once.
  Agent& spawn(AgentOptions o) {
    auto a = std::make_unique<Agent>();
    if (o.dsn.empty()) o.dsn = test_dsn();
    a->address_ = o.address.empty() ? o.node + ".example:5432" : o.address;
    a->options_ = std::move(o);
    start(*a);
    agents_.push_back(std::move(a));
    return *agents_.back();
  }
  Agent& spawn(const std::string& node) {
    AgentOptions o;
    o.node = node;
    return spawn(o);
  }

  // Starts an agent and waits until it answers 200 on /master or /standby; a port
  // taken by someone else between free_port() and the agent's bind is retried.
  Agent& start_ready(AgentOptions o) {
    Agent& a = spawn(std::move(o));
    wait_ready(a);
    return a;
  }
  Agent& start_ready(const std::string& node) {
    AgentOptions o;
    o.node = node;
    return start_ready(o);
  }

  // The same node again (same name and settings), as a new process: a restart.
  Agent& restart(const Agent& old) {
    REQUIRE_FALSE(old.running());
    return start_ready(old.options_);
  }

  void wait_ready(Agent& a) {
    for (int attempt = 0;; ++attempt) {
      bool port_taken = false;
      wait_until("agent " + a.node() + " to answer 200 on /master or /standby", [&] {
        if (a.poll_exit()) {
          if (contains(a.log(), "cannot listen") && attempt < 3) {
            port_taken = true;
            return true;
          }
          FAIL("agent " << a.node() << " exited with status " << *a.exit_status_ << " while starting; log:\n"
                        << tail(a.log()));
        }
        return a.get("/master") == 200 || a.get("/standby") == 200;
      });
      if (!port_taken) return;
      a.exit_status_.reset();
      start(a);
    }
  }

  // Polls `cond` every ~10 ms until it is true; FAILs after `limit` naming `what`.
  template <class F>
  void wait_until(const std::string& what, F cond, Ms limit = kDefaultWait) {
    const auto start = SteadyClock::now();
    const auto deadline = start + limit;
    for (int i = 0;; ++i) {
      if (cond()) return;
      if (SteadyClock::now() >= deadline || i > 100000) {
        FAIL("timed out after " << limit.count() << "ms waiting for " << what << "\n" << logs());
      }
      std::this_thread::sleep_for(kStep);
    }
  }

  // Polls `cond` every ~10 ms for `duration`; FAILs at the first false, naming `what`.
  template <class F>
  void hold_for(const std::string& what, Ms duration, F cond) {
    const auto deadline = SteadyClock::now() + duration;
    for (int i = 0; SteadyClock::now() < deadline && i < 100000; ++i) {
      if (!cond()) FAIL("no longer true after " << i << " samples: " << what << "\n" << logs());
      std::this_thread::sleep_for(kStep);
    }
  }

  // One sample of /master over the given agents, in the given order; FAILs if two
  // answer 200. Order the successor before the predecessor: a request answered 200 by
  // a successor proves the predecessor had stopped answering 200 before it (it stops
  // serving before it releases, and its deadline falls before anyone may acquire), so
  // a later 200 of the predecessor in the same sample would be a real overlap.
  // Returns the agent that answered 200, or nullptr.
  Agent* sample_masters(const std::vector<Agent*>& order) {
    Agent* master = nullptr;
    std::string statuses;
    for (Agent* a : order) {
      const int s = a->get("/master");
      statuses += a->node() + "=" + std::to_string(s) + " ";
      if (s == 200) {
        if (master != nullptr)
          FAIL("two agents answered 200 on /master in one sample: " << statuses << "\n" << logs());
        master = a;
      }
    }
    ++samples_;
    return master;
  }
  int samples() const { return samples_; }

  // lease_agent.master of this cluster: (node, address, epoch); node empty if none.
  struct MasterRow {
    std::string node, address;
    long long epoch = 0;
  };
  MasterRow master_row() {
    const pqxx::result r =
        exec("SELECT node, address, epoch FROM lease_agent.master WHERE cluster = " + sql_quote(name_));
    MasterRow m;
    if (!r.empty()) {
      m.node = r[0][0].is_null() ? "" : r[0][0].as<std::string>();
      m.address = r[0][1].is_null() ? "" : r[0][1].as<std::string>();
      m.epoch = r[0][2].as<long long>();
    }
    return m;
  }
  std::string query(const std::string& sql) {
    const pqxx::result r = exec(sql);
    if (r.empty() || r[0][0].is_null()) return "";
    return r[0][0].as<std::string>();
  }
  // One statement on the test's own connection; after a lost connection (a test that
  // crashes or restarts the server) it connects again, for up to 30 s, and retries.
  pqxx::result exec(const std::string& sql) {
    for (int attempt = 0;; ++attempt) {
      try {
        if (!db_ || !db_->is_open()) db_ = connect_db();
        pqxx::nontransaction tx(*db_);
        return tx.exec(sql);
      } catch (const pqxx::broken_connection& e) {
        db_.reset();
        if (attempt >= 300) FAIL("the test database is gone: " << e.what());
        std::this_thread::sleep_for(Ms(100));
      } catch (const pqxx::sql_error& e) {
        // 57P03: the database is starting up (crash recovery).
        if (e.sqlstate() != "57P03" || attempt >= 300) throw;
        db_.reset();
        std::this_thread::sleep_for(Ms(100));
      }
    }
  }
  pqxx::connection& db() { return *db_; }

  // The tail of every agent's log, for failure messages.
  std::string logs() const {
    std::string out;
    for (const auto& a : agents_)
      out += "---- log of " + a->node() + " (pid " + std::to_string(a->pid_) + ", port " +
             std::to_string(a->port_) + ") " + a->log_path_ + "\n" + tail(a->log(), 1500) + "\n";
    return out;
  }

  // `lease-agent run` arguments of an agent.
  std::vector<std::string> run_args(const Agent& a) const {
    const AgentOptions& o = a.options_;
    std::vector<std::string> args{agent_binary(), "run",
                                  "--dsn",        o.dsn,
                                  "--cluster",    name_,
                                  "--node",       o.node,
                                  "--ttl",        o.ttl,
                                  "--renew",      o.renew,
                                  "--http",       "127.0.0.1:" + std::to_string(a.port_),
                                  "-b",           a.address_};
    args.insert(args.end(), o.extra_args.begin(), o.extra_args.end());
    return args;
  }

 private:
  void start(Agent& a) {
    a.port_ = free_port();
    a.log_path_ = dir_.file(a.node() + "." + std::to_string(++starts_) + ".log");
    a.pid_ = spawn_process(run_args(a), a.options_.env, a.log_path_ + ".out", a.log_path_);
  }

  std::string name_;
  TempDir dir_;
  std::unique_ptr<pqxx::connection> db_;
  std::vector<std::unique_ptr<Agent>> agents_;
  int starts_ = 0;
  int samples_ = 0;
};

}  // namespace lease_agent_test
