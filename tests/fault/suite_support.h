// What the runner (fault_suite.cpp) and the faults (fault_kinds.cpp) share: options,
// one agent's slot, a bounded libpq connection, process helpers. The checker does not
// use any of it (it sees only history.h).
#pragma once

#include <libpq-fe.h>
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "fault_proxy.h"
#include "history.h"
#include "proc_util.h"

namespace fault_suite {

using namespace fault_history;
using lease_agent_fault::FaultProxy;
using Ms = std::chrono::milliseconds;

inline i64 mono_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<i64>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// Pacing only (the time between two polls or two writes), never to wait for an event.
inline void sleep_ms(i64 ms) {
  if (ms > 0) std::this_thread::sleep_for(Ms(ms));
}

struct Options {
  std::string dsn, pgdir, binary, self, source_dir;
  int agents = 5;
  i64 duration_ms = 60000, ttl_ms = 1000, renew_ms = 250;
  std::uint64_t seed = 0;
  std::set<Kind> kinds;
  bool keep = false;
  double overlap = 0.3;  // chance of a second fault during the first
  bool pair = false;        // the database is a primary and a streaming replica (scripts/pg.sh start-pair)
  bool start_pair = false;  // start such a pair for the run (and stop it at the end)
  bool writers = true;      // a fenced writer beside every agent
};

// A libpq connection string, parsed into keywords, and built again.
std::map<std::string, std::string> parse_dsn(const std::string& dsn);
std::string build_dsn(const std::map<std::string, std::string>& kv);
std::string sql_quote(const std::string& s);
std::vector<std::string> split(const std::string& s, char sep);
std::string one_line(std::string s);

// Children get PR_SET_PDEATHSIG (tests/proc_util.h): nothing outlives the suite.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::pair<std::string, std::string>>& extra_env,
            const std::string& log_path);
std::optional<int> wait_exit(pid_t pid, i64 limit_ms);
// A command run to its end, bounded; its output goes to log_path. The exit status, or -1
// if it had to be killed.
int run_bounded(const std::vector<std::string>& args, const std::string& log_path, i64 limit_ms);

using Rows = std::vector<std::vector<std::string>>;

// The outcome of one statement on a Db.
struct Result {
  bool ok = false;
  Rows rows;
  std::string sqlstate, error;  // when !ok; sqlstate "" when the connection failed or timed out
};

// One libpq connection whose every call is bounded on the client's side: a silent
// partition (the proxy's drop) would otherwise hang libpq for as long as TCP lives.
class Db {
 public:
  // Throws std::runtime_error if it cannot connect (connect_timeout bounds that).
  Db(const std::string& dsn, const std::string& application_name, i64 call_limit_ms = 15000);
  ~Db();
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  Result try_exec(const std::string& sql);
  Rows exec(const std::string& sql);  // throws on any failure
  bool broken() const { return conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK; }

 private:
  PGconn* conn_ = nullptr;
  i64 limit_ms_;
};

// One agent: a node name, an HTTP port and proxies (one per server) that stay for the
// whole run, and the processes started for it one after another (generations).
struct Slot {
  int index = 0;
  std::string node;
  int port = 0;
  std::vector<std::unique_ptr<FaultProxy>> proxies;  // the agent's (and its writer's) way to each server
  bool faketime = false;
  std::string faketime_file;
  bool slow_promote_hook = false;  // its on-promote works on for 3 ttl after it is recorded

  pid_t pid = -1;
  int gen = 0;                    // the generation now running (1, 2, ...)
  std::atomic<int> live_gen{-1};  // what the poller may attribute samples to; -1 none
  bool paused = false;
  std::vector<Life> lives;

  std::mutex mu;  // guards samples, last_*
  std::vector<Sample> samples;
  i64 last_master_recv = 0;
  i64 last_round_trip = 0;  // when its last database round trip succeeded (as it says)

  // The agent's stdout and stderr: a pipe that a relay thread copies to the log file of
  // the current generation (log-stall stops the relay and fills the pipe).
  int out_read = -1, out_write = -1;
  std::mutex log_mu;  // guards log_path and the relay's state below
  std::condition_variable log_cv;
  std::string log_path;
  bool stall = false;        // the relay must not read
  bool relay_parked = false;  // the relay saw `stall` and reads nothing
  bool relay_done = false;
  int filler = -1;  // a non-blocking write end of the pipe while stalled
  std::thread relay;

  // The fenced writer's counts.
  std::atomic<long> w_committed{0}, w_refused{0}, w_failed{0};

  void set_mode(FaultProxy::Mode m) {
    for (auto& p : proxies) p->set_mode(m);
  }
  void set_latency(Ms d) {
    for (auto& p : proxies) p->set_latency(d);
  }
};

}  // namespace fault_suite
