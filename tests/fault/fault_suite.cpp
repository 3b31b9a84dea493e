// The fault-injection suite: N lease-agent processes on loopback against a real
// PostgreSQL, faults injected one after another from a seed, and a checker that reads
// the history and proves DESIGN.md's promises held. README.md in this directory tells
// how to run it and what each check means.
//
//   fault_suite [--seed S] [--duration 60s] [--agents 5] [--ttl 1s] [--renew 250ms]
//               [--only kind,kind] [--keep]
//   fault_suite --record FILE      (the agents' on-promote/on-demote hook; internal)
//
// The database comes from LEASE_AGENT_TEST_DSN (and --dsn); restarts of PostgreSQL need
// the directory of scripts/pg.sh in LEASE_AGENT_TEST_PGDIR (and --pgdir), else those
// faults are skipped. Exit status: 0 no violation, 1 violations, 2 bad usage or setup.
//
// What is recorded, all on CLOCK_MONOTONIC, which every process of the machine shares:
//  - samples: every agent's GET /status, polled every ~10 ms, with the time the request
//    was sent and the time its answer came back, and the role and epoch it gave;
//  - hooks: every on-promote / on-demote, appended by the hook itself to one file;
//  - faults: what was done to whom, when it started and when it was healed;
//  - snapshots: the node and lease rows, read at the quiet end of every fault.
#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "fault_proxy.h"
#include "proc_util.h"


namespace {

using lease_agent_fault::FaultProxy;
using Ms = std::chrono::milliseconds;
using i64 = std::int64_t;

#ifndef LEASE_AGENT_BINARY
#error "LEASE_AGENT_BINARY must name the lease-agent binary"
#endif
#ifndef LEASE_AGENT_SOURCE_DIR
#error "LEASE_AGENT_SOURCE_DIR must name the source tree (for scripts/pg.sh)"
#endif

constexpr const char* kFaketimeLib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

i64 mono_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<i64>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
i64 ms_to_ns(i64 ms) { return ms * 1000000; }
double ns_to_ms(i64 ns) { return static_cast<double>(ns) / 1e6; }

void sleep_ms(i64 ms) {
  if (ms > 0) std::this_thread::sleep_for(Ms(ms));
}

std::string fmt_ms(i64 ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0fms", ns_to_ms(ns));
  return b;
}

// ---------------------------------------------------------------------------
// The hook: `fault_suite --record FILE` appends "mono_ns node role epoch pid" with one
// write(2) on an O_APPEND file, so that lines of concurrent hooks never interleave.

int record_hook(const char* path) {
  const i64 now = mono_ns();
  const char* node = std::getenv("LEASE_AGENT_NODE");
  const char* role = std::getenv("LEASE_AGENT_ROLE");
  const char* epoch = std::getenv("LEASE_AGENT_EPOCH");
  if (!node || !role || !epoch) {
    std::fprintf(stderr, "fault_suite --record: LEASE_AGENT_NODE/ROLE/EPOCH not set\n");
    return 2;
  }
  char line[256];
  const int n = std::snprintf(line, sizeof line, "%lld %s %s %s %d\n", static_cast<long long>(now), node, role,
                              epoch, static_cast<int>(::getppid()));
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 || n <= 0 || ::write(fd, line, static_cast<size_t>(n)) != n) {
    std::fprintf(stderr, "fault_suite --record: cannot append to %s: %s\n", path, std::strerror(errno));
    return 1;
  }
  ::close(fd);
  // A slow on-promote (some agents get one): the promotion is recorded at its start,
  // and the hook goes on working for a while, as a server's warm-up would.
  const char* slow = std::getenv("FAULT_SUITE_PROMOTE_HOOK_MS");
  if (slow && std::strcmp(role, "master") == 0) {
    const long long ms = std::atoll(slow);
    if (ms > 0 && ms < 60000) std::this_thread::sleep_for(Ms(ms));
  }
  return 0;
}

// ---------------------------------------------------------------------------
// Small process and database helpers.

// Children get PR_SET_PDEATHSIG (tests/proc_util.h): nothing outlives the suite.
pid_t spawn(const std::vector<std::string>& args, const std::vector<std::pair<std::string, std::string>>& extra_env,
            const std::string& log_path) {
  return lease_agent_proc::spawn_process(args, extra_env, log_path, log_path);
}

std::optional<int> wait_exit(pid_t pid, i64 limit_ms) { return lease_agent_proc::wait_pid(pid, Ms(limit_ms)); }

// A command run to its end, bounded; its output goes to log_path. The exit status,
// or -1 if it had to be killed.
int run_bounded(const std::vector<std::string>& args, const std::string& log_path, i64 limit_ms) {
  const pid_t pid = spawn(args, {}, log_path);
  const std::optional<int> st = wait_exit(pid, limit_ms);
  if (st) return *st;
  ::kill(pid, SIGKILL);
  wait_exit(pid, 5000);
  return -1;
}

using lease_agent_proc::free_port;

// A libpq connection string, parsed into keywords, with some replaced.
std::map<std::string, std::string> parse_dsn(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (!opts) {
    const std::string why = err ? err : "out of memory";
    if (err) PQfreemem(err);
    throw std::runtime_error("cannot parse the dsn: " + why);
  }
  std::map<std::string, std::string> kv;
  for (PQconninfoOption* o = opts; o->keyword; ++o)
    if (o->val && *o->val) kv[o->keyword] = o->val;
  PQconninfoFree(opts);
  return kv;
}

std::string build_dsn(const std::map<std::string, std::string>& kv) {
  std::string out;
  for (const auto& [k, v] : kv) {
    std::string q;
    for (char c : v) {
      if (c == '\'' || c == '\\') q += '\\';
      q += c;
    }
    if (!out.empty()) out += ' ';
    out += k + "='" + q + "'";
  }
  return out;
}

std::string sql_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

using Rows = std::vector<std::vector<std::string>>;

// One libpq connection of the suite's own (never through a proxy).
class Db {
 public:
  explicit Db(const std::string& dsn) {
    auto kv = parse_dsn(dsn);
    kv["connect_timeout"] = "3";
    kv["application_name"] = "fault_suite";
    conn_ = PQconnectdb(build_dsn(kv).c_str());
    if (PQstatus(conn_) != CONNECTION_OK) {
      const std::string why = PQerrorMessage(conn_);
      PQfinish(conn_);
      conn_ = nullptr;
      throw std::runtime_error("cannot connect to the database: " + one_line(why));
    }
    exec("SET statement_timeout = 10000");
  }
  ~Db() {
    if (conn_) PQfinish(conn_);
  }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;

  Rows exec(const std::string& sql) {
    PGresult* r = PQexec(conn_, sql.c_str());
    const ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
      const std::string why = PQresultErrorMessage(r);
      PQclear(r);
      throw std::runtime_error("query failed: " + one_line(why));
    }
    Rows rows;
    for (int i = 0; i < PQntuples(r); ++i) {
      std::vector<std::string> row;
      for (int j = 0; j < PQnfields(r); ++j) row.push_back(PQgetisnull(r, i, j) ? "" : PQgetvalue(r, i, j));
      rows.push_back(std::move(row));
    }
    PQclear(r);
    return rows;
  }

  static std::string one_line(std::string s) {
    std::replace(s.begin(), s.end(), '\n', ' ');
    while (!s.empty() && s.back() == ' ') s.pop_back();
    return s;
  }

 private:
  PGconn* conn_ = nullptr;
};

// ---------------------------------------------------------------------------
// The record of a run.

struct Sample {
  i64 sent, recv;
  int slot, gen;
  bool master;
  i64 epoch;
  i64 round_trip_ms;  // how long its last database round trip took (as it says), 0 unknown
};

enum class Kind {
  kill9, sigterm, sigstop, drop, reset, latency, drop_to_server, drop_to_client,
  pg_restart_fast, pg_restart_immediate, pg_freeze, terminate_backends, lease_row_lock, node_table_lock, clock_jump,
};
constexpr Kind kAllKinds[] = {
    Kind::kill9, Kind::sigterm, Kind::sigstop, Kind::drop, Kind::reset, Kind::latency, Kind::drop_to_server,
    Kind::drop_to_client, Kind::pg_restart_fast, Kind::pg_restart_immediate, Kind::pg_freeze, Kind::terminate_backends,
    Kind::lease_row_lock, Kind::node_table_lock, Kind::clock_jump,
};
const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kill9: return "kill-9";
    case Kind::sigterm: return "sigterm";
    case Kind::sigstop: return "sigstop";
    case Kind::drop: return "net-drop";
    case Kind::reset: return "net-reset";
    case Kind::latency: return "net-latency";
    case Kind::drop_to_server: return "net-drop-to-server";
    case Kind::drop_to_client: return "net-drop-to-client";
    case Kind::pg_restart_fast: return "pg-restart-fast";
    case Kind::pg_restart_immediate: return "pg-restart-immediate";
    case Kind::pg_freeze: return "pg-freeze";
    case Kind::terminate_backends: return "pg-terminate-backend";
    case Kind::lease_row_lock: return "lease-row-lock";
    case Kind::node_table_lock: return "node-table-lock";
    case Kind::clock_jump: return "clock-jump";
  }
  return "?";
}
// Faults that touch every agent at once (the database's).
bool is_global(Kind k) {
  return k == Kind::pg_restart_fast || k == Kind::pg_restart_immediate || k == Kind::pg_freeze || k == Kind::terminate_backends ||
         k == Kind::lease_row_lock || k == Kind::node_table_lock;
}

struct Fault {
  int id = 0;
  Kind kind{};
  int target = -1;  // slot, or -1 for the database
  bool target_was_master = false;
  i64 hold_ms = 0;
  i64 latency_ms = 0;  // net-latency: what was added each way
  i64 start = 0, heal = 0;
  i64 all_healed = 0;          // when every fault of its round was healed
  int overlaps = 0;            // the fault of the round this one was added to, if any
  i64 master_after_heal = -1;  // ns from all_healed to the first master answer; -1 none
  i64 takeover = -1;           // ns from the fault to another node's master answer, where checked
  std::string detail;
};

struct Violation {
  i64 at;
  std::string what;
};

// One agent: a node name, an HTTP port and a proxy that stay for the whole run, and
// the processes started for it one after another (generations).
struct Slot {
  int index = 0;
  std::string node;
  int port = 0;
  std::unique_ptr<FaultProxy> proxy;
  bool faketime = false;
  std::string faketime_file;
  bool slow_promote_hook = false;  // its on-promote works on for 3 ttl after it is recorded

  pid_t pid = -1;
  int gen = 0;                    // the generation now running (1, 2, ...)
  std::atomic<int> live_gen{-1};  // what the poller may attribute samples to; -1 none
  bool paused = false;
  std::string log_path;

  struct Life {
    int gen;
    i64 start, end = 0;
    std::string ended;                        // how: kill-9, sigterm, exit N, run end
    std::vector<std::pair<i64, i64>> pauses;  // SIGSTOP..SIGCONT
  };
  std::vector<Life> lives;

  std::mutex mu;                  // guards samples and last_*
  std::vector<Sample> samples;
  i64 last_master_recv = 0;
  i64 last_round_trip = 0;  // when its last database round trip succeeded (as it says)
};

struct Options {
  std::string dsn, pgdir, binary = LEASE_AGENT_BINARY, self;
  int agents = 5;
  i64 duration_ms = 60000, ttl_ms = 1000, renew_ms = 250;
  std::uint64_t seed = 0;
  std::set<Kind> kinds;
  bool keep = false;
  double overlap = 0.3;  // chance of a second fault during the first
};

i64 parse_duration_ms(const std::string& flag, const std::string& v) {
  std::size_t pos = 0;
  long long n = -1;
  try {
    n = std::stoll(v, &pos);
  } catch (const std::exception&) {
  }
  const std::string unit = v.substr(pos);
  long long mult = unit == "ms" ? 1 : unit == "s" ? 1000 : unit == "m" ? 60000 : unit == "h" ? 3600000 : -1;
  if (n < 0 || mult < 0) throw std::invalid_argument(flag + ": '" + v + "' is not a duration (e.g. 500ms, 2s, 30m)");
  return n * mult;
}

// Each agent life's master periods, from its samples: a run of consecutive "master"
// answers at one epoch. The agent was certainly master from the answer to the first
// request to the sending of the last one (the inner hull): [first.recv, last.sent].
struct Period {
  int slot, gen;
  i64 epoch;
  i64 first_sent, first_recv, last_sent, last_recv;
};

// ---------------------------------------------------------------------------
// The run.

// PostgreSQL's processes while a pg-freeze holds, also where the signal thread can
// resume them: a suite stopped by Ctrl-C or a test timeout must not leave the
// database frozen behind it.
constexpr std::size_t kMaxFrozen = 256;
std::array<std::atomic<pid_t>, kMaxFrozen>& frozen_pids() {
  static std::array<std::atomic<pid_t>, kMaxFrozen> pids{};
  return pids;
}
std::mutex& frozen_mu() {
  static std::mutex mu;
  return mu;
}

class Suite {
 public:
  explicit Suite(Options o) : o_(std::move(o)), rng_(o_.seed) {}
  // Whatever happened: the agents are killed (PR_SET_PDEATHSIG would do it too when
  // the suite exits) and the pollers joined.
  ~Suite() {
    thaw_all();
    for (auto& s : slots_)
      if (s->pid > 0) {
        ::kill(s->pid, SIGKILL);
        wait_exit(s->pid, 5000);
      }
    done_ = true;
    for (auto& t : pollers_)
      if (t.joinable()) t.join();
  }
  Suite(const Suite&) = delete;
  Suite& operator=(const Suite&) = delete;

  int run();

 private:
  // setup and agents
  void setup();
  void start_agent(Slot& s);
  void end_life(Slot& s, const std::string& how);
  void poll_loop(Slot& s);
  bool wait_connected(Slot& s, i64 since, i64 limit_ms);
  int current_master();
  void reap_unexpected_exits();

  // faults
  Kind pick_kind();
  void choose_target(Fault& f, int busy);
  void begin(Fault& f);
  void end(Fault& f);
  i64 rand_ms(double lo_ttl, double hi_ttl);
  void cycle(int& next_id);
  void snapshot_checks(const Fault& f, bool crashed);

  // checks after the run
  void check_samples();
  void check_hooks();
  void check_liveness();
  void report();
  std::string timeline(i64 from, i64 to);
  std::string repro() const;

  void violation(i64 at, const std::string& what) {
    std::lock_guard<std::mutex> l(vmu_);
    violations_.push_back({at, what});
    std::cout << "  VIOLATION at " << fmt_rel(at) << ": " << what << std::endl;
  }
  std::string fmt_rel(i64 t) const {
    char b[32];
    std::snprintf(b, sizeof b, "t=%.3fs", static_cast<double>(t - t0_) / 1e9);
    return b;
  }

  Options o_;
  std::mt19937_64 rng_;
  std::string dir_, cluster_, hooks_file_;
  std::map<std::string, std::string> dsn_kv_;
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::thread> pollers_;
  std::atomic<bool> done_{false};
  std::vector<Fault> faults_;
  std::mutex vmu_;
  std::vector<Violation> violations_;
  i64 t0_ = 0;
  std::vector<Kind> enabled_;
  std::unique_ptr<Db> lock_db_;  // the transaction of a lock fault
  std::vector<pid_t> frozen_;     // PostgreSQL's processes while a pg-freeze holds

  pid_t postmaster_pid() {
    std::ifstream in(o_.pgdir + "/data/postmaster.pid");
    long long pm = 0;
    if (!(in >> pm) || pm <= 1) throw std::runtime_error("cannot read " + o_.pgdir + "/data/postmaster.pid");
    return static_cast<pid_t>(pm);
  }
  static std::vector<pid_t> children_of(pid_t parent) {
    std::vector<pid_t> out;
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
      const std::string name = e.path().filename().string();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream st(e.path() / "stat");
      std::string line;
      std::getline(st, line);
      const auto close = line.rfind(')');
      if (close == std::string::npos || close + 2 >= line.size()) continue;
      std::istringstream rest(line.substr(close + 2));
      char state = 0;
      long long ppid = 0;
      if (rest >> state >> ppid && ppid == parent) out.push_back(static_cast<pid_t>(std::stoll(name)));
    }
    return out;
  }
  void freeze(pid_t pid) {
    if (::kill(pid, SIGSTOP) != 0) {
      thaw_all();
      throw std::runtime_error("pg-freeze: cannot stop PostgreSQL process " + std::to_string(pid) + ": " +
                               std::strerror(errno));
    }
    std::lock_guard<std::mutex> l(frozen_mu());
    frozen_.push_back(pid);
    if (frozen_.size() <= kMaxFrozen) frozen_pids()[frozen_.size() - 1] = pid;
  }
  void thaw_all() {
    std::lock_guard<std::mutex> l(frozen_mu());
    for (pid_t pid : frozen_) ::kill(pid, SIGCONT);
    frozen_.clear();
    for (auto& p : frozen_pids()) p = 0;
  }

  // what the previous snapshot saw: node -> (incarnation, registered_at)
  std::map<std::string, std::pair<std::string, std::string>> prev_reg_;
  std::string prev_holder_, prev_holder_inc_;
  i64 prev_epoch_ = 0;
  std::set<int> touched_;  // slots a fault touched since the previous snapshot

  // results of the checks, for the report
  std::size_t samples_total_ = 0, master_samples_ = 0, hook_records_ = 0, hook_periods_ = 0;
  std::vector<Period> periods_;
  i64 longest_gap_ = 0, longest_gap_at_ = 0;
  int rewinds_ = 0;  // lease rows that went back in an immediate restart of PostgreSQL
  int reissued_ = 0;  // epochs given again after such a restart (answers and hooks)

  // Whether an immediate restart of PostgreSQL (which may lose acknowledged commits)
  // began between t1 and t2.
  bool crash_between(i64 t1, i64 t2) const {
    for (const Fault& f : faults_)
      if (f.kind == Kind::pg_restart_immediate && f.start >= t1 && f.start <= t2) return true;
    return false;
  }
  std::string longest_gap_cause_;
};

void Suite::setup() {
  char tmpl[] = "/tmp/fault-suite-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);
  hooks_file_ = dir_ + "/hooks.log";
  cluster_ = "fault-" + std::to_string(o_.seed) + "-" + std::to_string(::getpid());
  dsn_kv_ = parse_dsn(o_.dsn);
  const std::string host = dsn_kv_.count("host") ? dsn_kv_["host"] : dsn_kv_.count("hostaddr") ? dsn_kv_["hostaddr"] : "";
  if (host != "127.0.0.1" && host != "localhost")
    throw std::runtime_error("the dsn must name host=127.0.0.1 (the proxies listen on loopback), not '" + host + "'");
  const int pg_port = dsn_kv_.count("port") ? std::stoi(dsn_kv_["port"]) : 5432;

  // The schema, with the binary's own command.
  const int rc = run_bounded({o_.binary, "schema", "apply", "--dsn", o_.dsn}, dir_ + "/schema.log", 30000);
  if (rc != 0) throw std::runtime_error("lease-agent schema apply failed (status " + std::to_string(rc) + "), see " + dir_ + "/schema.log");

  // Is libfaketime there and does it move this machine's wall clock?
  bool faketime_ok = false;
  if (::access(kFaketimeLib, R_OK) == 0) {
    const std::string f = dir_ + "/faketime-probe";
    std::ofstream(f) << "+10d\n";
    const std::string out = dir_ + "/faketime-probe.out";
    const pid_t pid = spawn({"/bin/date", "+%s"},
                            {{"LD_PRELOAD", kFaketimeLib}, {"FAKETIME_TIMESTAMP_FILE", f}, {"FAKETIME_NO_CACHE", "1"},
                             {"DONT_FAKE_MONOTONIC", "1"}},
                            out);
    wait_exit(pid, 10000);
    std::ifstream in(out);
    long long shown = 0;
    in >> shown;
    const long long now = static_cast<long long>(::time(nullptr));
    faketime_ok = shown > now + 9 * 86400 && shown < now + 11 * 86400;
  }
  if (!faketime_ok) std::cout << "  libfaketime not usable here: clock faults skipped" << std::endl;

  for (Kind k : kAllKinds) {
    if (!o_.kinds.empty() && !o_.kinds.count(k)) continue;
    if ((k == Kind::pg_restart_fast || k == Kind::pg_restart_immediate || k == Kind::pg_freeze) && o_.pgdir.empty())
      continue;
    if (k == Kind::clock_jump && !faketime_ok) continue;
    enabled_.push_back(k);
  }
  if (o_.pgdir.empty()) std::cout << "  no PostgreSQL directory (LEASE_AGENT_TEST_PGDIR): restarts skipped" << std::endl;
  if (enabled_.empty()) throw std::runtime_error("no fault kind is enabled");

  for (int i = 0; i < o_.agents; ++i) {
    auto s = std::make_unique<Slot>();
    s->index = i;
    s->node = "n" + std::to_string(i + 1);
    s->port = free_port();
    s->proxy = std::make_unique<FaultProxy>(host, pg_port);
    s->faketime = faketime_ok && i % 2 == 1;
    s->faketime_file = dir_ + "/" + s->node + ".faketime";
    s->slow_promote_hook = i % 3 == 2;
    if (s->faketime) std::ofstream(s->faketime_file) << "+0\n";
    slots_.push_back(std::move(s));
  }
  t0_ = mono_ns();
  for (auto& s : slots_) pollers_.emplace_back([this, sp = s.get()] { poll_loop(*sp); });
  // Started in order, each once the previous answers: n1 is first in line.
  for (auto& s : slots_) {
    start_agent(*s);
    if (!wait_connected(*s, s->lives.back().start, 15000))
      throw std::runtime_error("agent " + s->node + " did not come up; see " + s->log_path);
  }
}

void Suite::start_agent(Slot& s) {
  ++s.gen;
  s.log_path = dir_ + "/" + s.node + "." + std::to_string(s.gen) + ".log";
  auto kv = dsn_kv_;
  kv["host"] = "127.0.0.1";
  kv.erase("hostaddr");
  kv["port"] = std::to_string(s.proxy->port());
  const std::string hook = "'" + o_.self + "' --record '" + hooks_file_ + "'";
  std::vector<std::string> args{o_.binary, "run", "--dsn", build_dsn(kv), "--cluster", cluster_, "--node", s.node,
                                "--ttl", std::to_string(o_.ttl_ms) + "ms", "--renew", std::to_string(o_.renew_ms) + "ms",
                                "--http", "127.0.0.1:" + std::to_string(s.port), "-b", s.node + ".example:8080",
                                "--on-promote", hook, "--on-demote", hook, "--hook-timeout", "5s"};
  std::vector<std::pair<std::string, std::string>> env;
  if (s.faketime)
    env = {{"LD_PRELOAD", kFaketimeLib}, {"FAKETIME_TIMESTAMP_FILE", s.faketime_file},
           {"FAKETIME_NO_CACHE", "1"}, {"DONT_FAKE_MONOTONIC", "1"}};
  if (s.slow_promote_hook)
    env.push_back({"FAULT_SUITE_PROMOTE_HOOK_MS", std::to_string(3 * o_.ttl_ms)});
  const i64 start = mono_ns();
  s.pid = spawn(args, env, s.log_path);
  s.paused = false;
  s.lives.push_back({s.gen, start, 0, "", {}});
  s.live_gen = s.gen;
}

void Suite::end_life(Slot& s, const std::string& how) {
  s.live_gen = -1;
  s.pid = -1;
  s.paused = false;
  s.lives.back().end = mono_ns();
  s.lives.back().ended = how;
}

// Polls GET /status of one slot every ~10 ms for the whole run.
void Suite::poll_loop(Slot& s) {
  std::unique_ptr<httplib::Client> client;
  int client_gen = -1;
  const i64 end = t0_ + ms_to_ns(o_.duration_ms) + ms_to_ns(600000);  // a bound, far beyond the run
  while (!done_ && mono_ns() < end) {
    const int g = s.live_gen;
    if (g < 0) {
      sleep_ms(5);
      continue;
    }
    if (!client || client_gen != g) {
      client = std::make_unique<httplib::Client>("127.0.0.1", s.port);
      client->set_connection_timeout(0, 200000);
      client->set_read_timeout(0, 300000);
      client->set_write_timeout(0, 300000);
      client->set_keep_alive(true);
      client->set_tcp_nodelay(true);
      client_gen = g;
    }
    const i64 sent = mono_ns();
    httplib::Result r = client->Get("/status");
    const i64 recv = mono_ns();
    if (r && r->status == 200 && s.live_gen == g) {
      try {
        const auto j = nlohmann::json::parse(r->body);
        const std::string role = j.at("role").get<std::string>();
        const auto& took = j.at("last_round_trip_latency_ms");
        Sample x{sent, recv, s.index, g, role == "master", j.at("epoch").get<i64>(),
                 took.is_number() ? took.get<i64>() : 0};
        std::lock_guard<std::mutex> l(s.mu);
        s.samples.push_back(x);
        if (x.master) s.last_master_recv = recv;
        // When the agent's last round trip with the database succeeded.
        const auto& ago = j.at("last_round_trip_ago_ms");
        if ((role == "master" || role == "standby") && ago.is_number())
          s.last_round_trip = recv - ms_to_ns(ago.get<i64>());
      } catch (const std::exception& e) {
        violation(recv, s.node + " answered /status with something that is not its JSON: " + e.what());
      }
    } else if (!r) {
      client.reset();  // a fresh connection next time
    }
    sleep_ms(10);
  }
}

// Until the slot's agent says it is master or standby with a database round trip
// that succeeded after `since`.
bool Suite::wait_connected(Slot& s, i64 since, i64 limit_ms) {
  const i64 deadline = mono_ns() + ms_to_ns(limit_ms);
  while (mono_ns() < deadline) {
    {
      std::lock_guard<std::mutex> l(s.mu);
      if (s.last_round_trip > since) return true;
    }
    if (s.pid > 0) {
      int st = 0;
      if (::waitpid(s.pid, &st, WNOHANG) == s.pid) {
        const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        violation(mono_ns(), s.node + " (generation " + std::to_string(s.gen) + ") exited by itself with status " +
                                 std::to_string(code) + "; log " + s.log_path);
        end_life(s, "exit " + std::to_string(code));
        touched_.insert(s.index);
        start_agent(s);
      }
    }
    sleep_ms(10);
  }
  return false;
}

// The slot that answered master most recently (within the last 100 ms), or -1.
int Suite::current_master() {
  const i64 now = mono_ns();
  int best = -1;
  i64 best_t = 0;
  for (auto& s : slots_) {
    std::lock_guard<std::mutex> l(s->mu);
    if (s->last_master_recv > best_t && now - s->last_master_recv < ms_to_ns(100)) {
      best = s->index;
      best_t = s->last_master_recv;
    }
  }
  return best;
}

void Suite::reap_unexpected_exits() {
  for (auto& s : slots_) {
    if (s->pid <= 0) continue;
    int st = 0;
    if (::waitpid(s->pid, &st, WNOHANG) == s->pid) {
      const int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      violation(mono_ns(), s->node + " (generation " + std::to_string(s->gen) + ") exited by itself with status " +
                               std::to_string(code) + "; log " + s->log_path);
      end_life(*s, "exit " + std::to_string(code));
      touched_.insert(s->index);
      start_agent(*s);
    }
  }
}

i64 Suite::rand_ms(double lo_ttl, double hi_ttl) {
  std::uniform_real_distribution<double> d(lo_ttl, hi_ttl);
  return static_cast<i64>(d(rng_) * static_cast<double>(o_.ttl_ms));
}

Kind Suite::pick_kind() {
  // Process and network faults of one agent are the most varied: weigh them up.
  std::vector<double> w;
  for (Kind k : enabled_) {
    switch (k) {
      case Kind::kill9: case Kind::sigstop: case Kind::drop: w.push_back(3); break;
      case Kind::sigterm: case Kind::reset: case Kind::latency: w.push_back(2); break;
      default: w.push_back(1);
    }
  }
  std::discrete_distribution<std::size_t> d(w.begin(), w.end());
  return enabled_[d(rng_)];
}

// Chooses the target of f (an agent, or -1 for the database's faults), avoiding
// `busy`: the current master with probability 0.6, else any agent.
void Suite::choose_target(Fault& f, int busy) {
  if (is_global(f.kind)) {
    for (auto& s : slots_) touched_.insert(s->index);
    return;
  }
  const int master = current_master();
  std::vector<int> candidates;
  for (auto& s : slots_)
    if (s->index != busy && (f.kind != Kind::clock_jump || s->faketime)) candidates.push_back(s->index);
  if (candidates.empty()) {  // e.g. a clock jump with the only faketime agent busy
    f.kind = Kind::sigstop;
    for (auto& s : slots_)
      if (s->index != busy) candidates.push_back(s->index);
  }
  std::uniform_real_distribution<double> coin(0, 1);
  const bool on_master = master >= 0 && coin(rng_) < 0.6 &&
                         std::find(candidates.begin(), candidates.end(), master) != candidates.end();
  f.target = on_master ? master : candidates[std::uniform_int_distribution<std::size_t>(0, candidates.size() - 1)(rng_)];
  f.target_was_master = f.target == master;
  touched_.insert(f.target);
}

// Injects f (kind and target chosen) and draws how long it holds (f.hold_ms).
void Suite::begin(Fault& f) {
  Slot* s = f.target >= 0 ? slots_[static_cast<std::size_t>(f.target)].get() : nullptr;
  f.hold_ms = rand_ms(0.2, 2.5);
  std::ostringstream detail;
  switch (f.kind) {
    case Kind::kill9:
    case Kind::sigterm: {
      if (s->pid <= 0) throw std::logic_error("no process to signal for " + s->node);
      f.start = mono_ns();
      ::kill(s->pid, f.kind == Kind::kill9 ? SIGKILL : SIGTERM);
      const std::optional<int> st = wait_exit(s->pid, 20000);
      if (f.kind == Kind::sigterm && st != 0)
        violation(mono_ns(), s->node + " stopped on SIGTERM with status " + (st ? std::to_string(*st) : "none (killed)"));
      if (!st) {
        ::kill(s->pid, SIGKILL);
        wait_exit(s->pid, 5000);
      }
      end_life(*s, kind_name(f.kind));
      detail << "down for " << f.hold_ms << "ms, then restarted";
      break;
    }
    case Kind::sigstop:
      if (s->pid <= 0) throw std::logic_error("no process to signal for " + s->node);
      f.start = mono_ns();
      ::kill(s->pid, SIGSTOP);
      s->paused = true;
      detail << "paused " << f.hold_ms << "ms";
      break;
    case Kind::drop:
    case Kind::reset:
    case Kind::drop_to_server:
    case Kind::drop_to_client: {
      const FaultProxy::Mode m = f.kind == Kind::drop ? FaultProxy::Mode::drop
                                 : f.kind == Kind::reset ? FaultProxy::Mode::reset
                                 : f.kind == Kind::drop_to_server ? FaultProxy::Mode::drop_to_server
                                                                  : FaultProxy::Mode::drop_to_client;
      if (f.kind == Kind::reset) f.hold_ms = rand_ms(0.0, 1.0);
      f.start = mono_ns();
      s->proxy->set_mode(m);
      detail << "for " << f.hold_ms << "ms";
      break;
    }
    case Kind::latency: {
      const i64 lat = rand_ms(0.05, 1.0);
      f.latency_ms = lat;
      f.start = mono_ns();
      s->proxy->set_latency(Ms(lat));
      detail << lat << "ms each way for " << f.hold_ms << "ms";
      break;
    }
    case Kind::pg_restart_fast:
    case Kind::pg_restart_immediate: {
      const std::string mode = f.kind == Kind::pg_restart_fast ? "fast" : "immediate";
      f.start = mono_ns();
      const int rc = run_bounded({"/bin/bash", std::string(LEASE_AGENT_SOURCE_DIR) + "/scripts/pg.sh", "restart",
                                  o_.pgdir, mode},
                                 dir_ + "/pg-restart.log", 60000);
      if (rc != 0)
        throw std::runtime_error("scripts/pg.sh restart failed (status " + std::to_string(rc) + "), see " + dir_ +
                                 "/pg-restart.log");
      f.hold_ms = 0;
      detail << "down " << fmt_ms(mono_ns() - f.start);
      break;
    }
    case Kind::pg_freeze: {
      // The postmaster first, so that it forks no backend we would miss; then its children.
      const pid_t pm = postmaster_pid();
      f.start = mono_ns();
      freeze(pm);
      for (pid_t pid : children_of(pm)) freeze(pid);
      detail << frozen_.size() << " processes stopped for " << f.hold_ms << "ms";
      break;
    }
    case Kind::terminate_backends: {
      Db db(o_.dsn);
      std::string names;
      for (auto& sl : slots_) names += (names.empty() ? "" : ",") + sql_quote("lease-agent " + sl->node);
      f.start = mono_ns();
      const Rows r = db.exec("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name IN (" +
                             names + ")");
      f.hold_ms = 0;
      detail << (r.empty() ? "0" : r[0][0]) << " sessions";
      break;
    }
    case Kind::lease_row_lock:
    case Kind::node_table_lock: {
      lock_db_ = std::make_unique<Db>(o_.dsn);
      f.hold_ms = rand_ms(0.1, 2.0);
      lock_db_->exec("BEGIN");
      f.start = mono_ns();
      if (f.kind == Kind::lease_row_lock)
        lock_db_->exec("SELECT 1 FROM lease_agent.lease WHERE cluster = " + sql_quote(cluster_) + " FOR UPDATE");
      else
        lock_db_->exec("LOCK TABLE lease_agent.node IN SHARE ROW EXCLUSIVE MODE");
      detail << "held " << f.hold_ms << "ms";
      break;
    }
    case Kind::clock_jump: {
      static const char* jumps[] = {"+2h", "-1h", "+3d", "-10d", "+90s", "-30s"};
      const char* j = jumps[std::uniform_int_distribution<int>(0, 5)(rng_)];
      f.start = mono_ns();
      std::ofstream(s->faketime_file) << j << "\n";
      detail << "wall clock " << j << " for " << f.hold_ms << "ms, then back";
      break;
    }
  }
  f.detail = detail.str();
  std::cout << "  #" << f.id << " " << fmt_rel(f.start) << " " << kind_name(f.kind);
  if (f.target >= 0) std::cout << " " << s->node << (f.target_was_master ? " (master)" : "");
  std::cout << " " << f.detail << std::endl;
}

// Heals f. Records the heal.
void Suite::end(Fault& f) {
  Slot* s = f.target >= 0 ? slots_[static_cast<std::size_t>(f.target)].get() : nullptr;
  f.heal = mono_ns();
  switch (f.kind) {
    case Kind::kill9:
    case Kind::sigterm:
      start_agent(*s);
      break;
    case Kind::sigstop:
      ::kill(s->pid, SIGCONT);
      s->paused = false;
      s->lives.back().pauses.push_back({f.start, f.heal});
      break;
    case Kind::drop:
    case Kind::reset:
    case Kind::drop_to_server:
    case Kind::drop_to_client:
      s->proxy->set_mode(FaultProxy::Mode::pass);
      break;
    case Kind::latency:
      s->proxy->set_latency(Ms(0));
      break;
    case Kind::pg_freeze:
      thaw_all();
      break;
    case Kind::lease_row_lock:
    case Kind::node_table_lock:
      lock_db_->exec("COMMIT");
      lock_db_.reset();
      break;
    case Kind::clock_jump:
      std::ofstream(s->faketime_file) << "+0\n";
      break;
    case Kind::pg_restart_fast:
    case Kind::pg_restart_immediate:
    case Kind::terminate_backends:
      break;  // over when begin() returned
  }
}

// One round: a fault, sometimes a second one on another agent while the first holds
// (a partitioned master and a frozen successor, say); heal both; wait for a master
// and for every agent to be back; check the tables.
void Suite::cycle(int& next_id) {
  std::vector<Fault> round;
  Fault a;
  a.id = next_id++;
  a.kind = pick_kind();
  choose_target(a, -1);
  begin(a);
  round.push_back(a);
  std::uniform_real_distribution<double> coin(0, 1);
  if (o_.overlap > 0 && coin(rng_) < o_.overlap && a.hold_ms > 0) {
    Fault b;
    b.kind = pick_kind();
    for (int i = 0; i < 10 && is_global(a.kind) && is_global(b.kind); ++i) b.kind = pick_kind();
    if (!(is_global(a.kind) && is_global(b.kind))) {
      sleep_ms(rand_ms(0.0, static_cast<double>(a.hold_ms) / static_cast<double>(o_.ttl_ms)));
      b.id = next_id++;
      choose_target(b, a.target);
      begin(b);
      b.overlaps = a.id;
      round.push_back(b);
    }
  }
  // Heal in the order the holds run out.
  std::vector<std::size_t> order(round.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  auto until = [&](std::size_t i) { return round[i].start + ms_to_ns(round[i].hold_ms); };
  std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return until(x) < until(y); });
  for (std::size_t i : order) {
    sleep_ms((until(i) - mono_ns()) / 1000000);
    end(round[i]);
  }
  i64 healed = 0;
  for (const Fault& f : round) healed = std::max(healed, f.heal);
  for (Fault& f : round) f.all_healed = healed;

  // Every agent back (connected) before the next fault: a bound that covers a
  // reconnection after the longest hang the agent's timeouts allow.
  const i64 back_limit = 4 * o_.ttl_ms + 10000;
  for (auto& s : slots_) {
    if (!wait_connected(*s, healed, back_limit))
      violation(mono_ns(), s->node + " was not back as master or standby within " + std::to_string(back_limit) +
                               "ms of the heal of fault #" + std::to_string(a.id) + "; log " + s->log_path);
  }
  // Then a master that answers now (not one whose deadline is about to pass), within a
  // bound far beyond the promise (the promise itself is checked on the samples after
  // the run).
  const i64 back = mono_ns();
  const i64 bound = back + ms_to_ns(std::max<i64>(10000, 5 * o_.ttl_ms));
  bool master = false;
  while (!master && mono_ns() < bound) {
    for (auto& s : slots_) {
      std::lock_guard<std::mutex> l(s->mu);
      if (s->last_master_recv > back) master = true;
    }
    if (!master) sleep_ms(5);
  }
  if (!master)
    violation(mono_ns(), "no master at all within " + fmt_ms(bound - healed) + " of the heal of fault #" + std::to_string(a.id));
  reap_unexpected_exits();
  // Quiet: a few heartbeats with nothing wrong, then the snapshot.
  sleep_ms(o_.renew_ms + rand_ms(0.0, 0.5));
  bool crashed = false;  // the database may have lost acknowledged commits
  for (const Fault& f : round) crashed = crashed || f.kind == Kind::pg_restart_immediate;
  snapshot_checks(round.back(), crashed);
  for (Fault& f : round) faults_.push_back(f);
}

// The database at the quiet end of a fault: no registration lost, restarts at the
// back of the line, succession to the first live node in line.
void Suite::snapshot_checks(const Fault& f, bool crashed) {
  Rows nodes, lease;
  try {
    Db db(o_.dsn);
    nodes = db.exec(
        "SELECT node, incarnation, to_char(registered_at, 'YYYY-MM-DD HH24:MI:SS.US'), expires_at > clock_timestamp() "
        "FROM lease_agent.node WHERE cluster = " + sql_quote(cluster_) + " ORDER BY registered_at, node");
    lease = db.exec("SELECT coalesce(holder, ''), coalesce(holder_incarnation, ''), epoch, "
                    "holder IS NOT NULL AND expires_at > clock_timestamp() FROM lease_agent.lease WHERE cluster = " +
                    sql_quote(cluster_));
  } catch (const std::exception& e) {
    violation(mono_ns(), std::string("snapshot after fault #") + std::to_string(f.id) + ": " + e.what());
    return;
  }
  const i64 now = mono_ns();
  std::map<std::string, std::pair<std::string, std::string>> reg;  // node -> (incarnation, registered_at)
  std::map<std::string, bool> live;
  for (const auto& r : nodes) {
    reg[r[0]] = {r[1], r[2]};
    live[r[0]] = r[3] == "t";
  }
  // 1. Every running agent is registered and live; an agent no fault touched kept
  //    its registration (same incarnation, same registered_at).
  for (auto& s : slots_) {
    if (!reg.count(s->node) || !live[s->node]) {
      violation(now, s->node + " is running but has no live registration after fault #" + std::to_string(f.id));
      continue;
    }
    if (!touched_.count(s->index) && prev_reg_.count(s->node) && prev_reg_[s->node] != reg[s->node])
      violation(now, s->node + " lost its registration although no fault touched it (registered_at " +
                         prev_reg_[s->node].second + " -> " + reg[s->node].second + ") during fault #" + std::to_string(f.id));
  }
  // 2. A restarted agent registered behind every agent that kept its registration.
  for (auto& s : slots_) {
    if (!reg.count(s->node) || !prev_reg_.count(s->node) || prev_reg_[s->node].first == reg[s->node].first) continue;
    for (auto& other : slots_) {
      if (other == s || !reg.count(other->node) || !prev_reg_.count(other->node)) continue;
      if (prev_reg_[other->node] == reg[other->node] && reg[other->node].second > reg[s->node].second)
        violation(now, s->node + " came back (new incarnation) ahead of " + other->node + " in the line after fault #" +
                           std::to_string(f.id));
    }
  }
  // 3. The lease: held by a running node; epochs only grow; a new holder was the
  //    first live node in line among those no fault touched.
  if (lease.size() == 1) {
    const std::string holder = lease[0][0], inc = lease[0][1];
    const i64 epoch = std::stoll(lease[0][2]);
    const bool held = lease[0][3] == "t";
    // PostgreSQL with synchronous_commit off (as scripts/pg.sh runs it) loses the last
    // acknowledged commits in an immediate restart: the lease row may go back with them.
    if (epoch < prev_epoch_ && crashed)
      ++rewinds_;
    else if (epoch < prev_epoch_)
      violation(now, "the lease epoch went back from " + std::to_string(prev_epoch_) + " to " + std::to_string(epoch));
    if (!held) violation(now, "the lease is not held at the quiet end of fault #" + std::to_string(f.id));
    if (held && (holder != prev_holder_ || inc != prev_holder_inc_) && reg.count(holder)) {
      for (auto& s : slots_) {
        if (s->node == holder || touched_.count(s->index) || !reg.count(s->node) || !prev_reg_.count(s->node)) continue;
        if (prev_reg_[s->node] == reg[s->node] && live[s->node] && reg[s->node].second < reg[holder].second)
          violation(now, "the lease went to " + holder + " (epoch " + std::to_string(epoch) + ") although " + s->node +
                             ", earlier in line, was live and untouched during fault #" + std::to_string(f.id));
      }
    }
    prev_holder_ = held ? holder : "";
    prev_holder_inc_ = held ? inc : "";
    prev_epoch_ = epoch;
  } else {
    violation(now, "no lease row for the cluster after fault #" + std::to_string(f.id));
  }
  prev_reg_ = reg;
  touched_.clear();
}

// ---------------------------------------------------------------------------
// Checks on the whole history.

std::vector<Period> master_periods(const std::vector<Sample>& samples) {
  std::vector<Period> out;
  std::optional<Period> cur;
  for (const Sample& x : samples) {
    const bool same = cur && x.master && cur->gen == x.gen && cur->epoch == x.epoch;
    if (cur && !same) {
      out.push_back(*cur);
      cur.reset();
    }
    if (!x.master) continue;
    if (!cur) cur = Period{x.slot, x.gen, x.epoch, x.sent, x.recv, x.sent, x.recv};
    cur->last_sent = x.sent;
    cur->last_recv = x.recv;
  }
  if (cur) out.push_back(*cur);
  return out;
}

void Suite::check_samples() {
  std::vector<Period> periods;
  std::vector<Sample> masters;
  std::size_t total = 0;
  for (auto& s : slots_) {
    std::lock_guard<std::mutex> l(s->mu);
    total += s->samples.size();
    auto p = master_periods(s->samples);
    periods.insert(periods.end(), p.begin(), p.end());
    for (const Sample& x : s->samples)
      if (x.master) masters.push_back(x);
  }
  samples_total_ = total;
  master_samples_ = masters.size();
  // (1) No two masters: no master answer of one agent falls wholly inside the
  //     certain master period of another (or of another life of the same node).
  std::sort(periods.begin(), periods.end(), [](const Period& a, const Period& b) { return a.first_recv < b.first_recv; });
  std::sort(masters.begin(), masters.end(), [](const Sample& a, const Sample& b) { return a.sent < b.sent; });
  for (const Period& p : periods) {
    if (p.first_recv >= p.last_sent) continue;  // a single answer: no certain interval
    auto it = std::lower_bound(masters.begin(), masters.end(), p.first_recv,
                               [](const Sample& x, i64 t) { return x.sent < t; });
    for (; it != masters.end() && it->sent < p.last_sent; ++it) {
      if (it->slot == p.slot && it->gen == p.gen) continue;
      if (it->recv <= p.last_sent) {
        violation(it->sent, "two masters: " + slots_[static_cast<std::size_t>(it->slot)]->node + " answered master (epoch " +
                                std::to_string(it->epoch) + ") between " + fmt_rel(it->sent) + " and " + fmt_rel(it->recv) +
                                ", while " + slots_[static_cast<std::size_t>(p.slot)]->node + " was master (epoch " +
                                std::to_string(p.epoch) + ") from " + fmt_rel(p.first_recv) + " to " + fmt_rel(p.last_sent));
        break;
      }
    }
  }
  // (2) Epochs only grow, and one epoch is one agent's.
  std::map<i64, std::tuple<int, int, i64>> owner;  // epoch -> (slot, gen, first seen)
  std::sort(periods.begin(), periods.end(), [](const Period& a, const Period& b) { return a.first_sent < b.first_sent; });
  const Period* top = nullptr;  // the period with the greatest epoch so far
  for (const Period& p : periods) {
    auto [it, fresh] = owner.emplace(p.epoch, std::make_tuple(p.slot, p.gen, p.first_sent));
    if (!fresh && (std::get<0>(it->second) != p.slot || std::get<1>(it->second) != p.gen)) {
      if (crash_between(std::get<2>(it->second), p.first_sent))
        ++reissued_;
      else
        violation(p.first_sent, "epoch " + std::to_string(p.epoch) + " answered as master by two agents");
    }
    // (ordered by the sending of the first request: a later period that certainly began
    // after the top one was answered)
    if (top && p.epoch < top->epoch && p.first_recv > top->first_recv) {
      if (crash_between(top->first_sent, p.first_sent))
        ++reissued_;
      else
        violation(p.first_sent, "epochs went back: " + std::to_string(top->epoch) + " then " + std::to_string(p.epoch));
    }
    if (!top || p.epoch > top->epoch) top = &p;
  }
  periods_ = periods;
}

// Hooks: no two nodes' master state (from on-promote to on-demote) overlaps, and
// epochs of on-promote never go back. A life ended by kill -9 (or a crash) ends its
// master state then; a life that stopped cleanly as master must have run on-demote
// before it exited. A SIGSTOP splits the state: a frozen process, like the frozen
// server beside it, does nothing; after SIGCONT it is master again only if it kept the
// lease, and if it did not, its on-demote must come within `margin` (ttl/10).
void Suite::check_hooks() {
  struct Rec {
    i64 t;
    std::string node, role;
    i64 epoch;
  };
  std::vector<Rec> recs;
  std::ifstream in(hooks_file_);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    Rec r;
    long long pid = 0;
    if (ls >> r.t >> r.node >> r.role >> r.epoch >> pid) recs.push_back(r);
  }
  hook_records_ = recs.size();
  std::sort(recs.begin(), recs.end(), [](const Rec& a, const Rec& b) { return a.t < b.t; });
  struct Held {
    std::string node;
    i64 epoch, from, to;
  };
  std::vector<Held> held;
  const i64 margin = ms_to_ns(o_.ttl_ms / 10);
  auto slot_of = [&](const std::string& node) -> Slot* {
    for (auto& s : slots_)
      if (s->node == node) return s.get();
    return nullptr;
  };
  // The master state that began with on-promote `p`; the node's next record (or the
  // end of the run) at `next`.
  auto add = [&](const Rec& p, i64 next) {
    Slot* s = slot_of(p.node);
    const Slot::Life* life = nullptr;
    if (s)
      for (const auto& l : s->lives)
        if (l.start <= p.t) life = &l;
    i64 end = next;
    if (life && life->end && life->end < next) {
      end = life->end;  // the life ended before the next record
      const bool crashed = life->ended == "kill-9" || life->ended.rfind("exit", 0) == 0;
      if (!crashed && p.t < life->end)
        violation(life->end, p.node + " stopped (" + life->ended + ") as master (epoch " + std::to_string(p.epoch) +
                                 ") without running on-demote");
    }
    i64 from = p.t;
    if (life)
      for (const auto& pause : life->pauses) {
        if (pause.first <= from || pause.first >= end) continue;
        held.push_back({p.node, p.epoch, from, pause.first});
        from = pause.second + margin;
      }
    if (from < end) held.push_back({p.node, p.epoch, from, end});
  };
  std::map<std::string, std::optional<Rec>> open;
  for (const Rec& r : recs) {
    auto& o = open[r.node];
    if (o) add(*o, r.t);
    o.reset();
    if (r.role == "master") o = r;
  }
  const i64 end = mono_ns();
  for (auto& [node, o] : open)
    if (o) add(*o, end);
  std::sort(held.begin(), held.end(), [](const Held& a, const Held& b) { return a.from < b.from; });
  const Held* reach = nullptr;       // the state reaching furthest so far
  const Held* top_epoch = nullptr;   // the state with the greatest epoch so far
  for (const Held& b : held) {
    if (reach && b.from < reach->to && b.node != reach->node)
      violation(b.from, "two masters by the hooks: " + b.node + " ran on-promote (epoch " + std::to_string(b.epoch) +
                            ") at " + fmt_rel(b.from) + " before " + reach->node + " ran on-demote (epoch " +
                            std::to_string(reach->epoch) + ") at " + fmt_rel(reach->to));
    // A master whose deadline passed while its renewal was on the way is master again
    // when the renewal's answer comes: the same epoch, as nobody held it in between.
    if (top_epoch && (b.epoch < top_epoch->epoch || (b.epoch == top_epoch->epoch && b.node != top_epoch->node)) &&
        crash_between(top_epoch->from, b.from))
      ++reissued_;
    else if (top_epoch && (b.epoch < top_epoch->epoch || (b.epoch == top_epoch->epoch && b.node != top_epoch->node)))
      violation(b.from, "epochs of on-promote went back: " + std::to_string(top_epoch->epoch) + " (" + top_epoch->node +
                            ") then " + std::to_string(b.epoch) + " (" + b.node + ")");
    if (!reach || b.to > reach->to) reach = &b;
    if (!top_epoch || b.epoch > top_epoch->epoch) top_epoch = &b;
  }
  hook_periods_ = held.size();
}

// (3) After each heal, a master within ttl + renew (one reconnection backoff and a
// round trip); a takeover while a fault of the master holds; the longest time
// without any master answer, with its cause.
void Suite::check_liveness() {
  struct Answer {
    i64 sent, recv, round_trip;
    bool operator<(const Answer& o) const { return sent < o.sent; }
  };
  std::vector<Answer> answers;  // master answers, by time
  for (auto& s : slots_) {
    std::lock_guard<std::mutex> l(s->mu);
    for (const Sample& x : s->samples)
      if (x.master) answers.push_back({x.sent, x.recv, ms_to_ns(x.round_trip_ms)});
  }
  std::sort(answers.begin(), answers.end());
  // Faults of the database cut every agent's connection: a new connection starts no
  // term for ttl (agent/election.h), after a reconnection backoff of up to renew.
  std::set<int> cut_all;
  for (const Fault& f : faults_)
    if (f.kind == Kind::pg_restart_fast || f.kind == Kind::pg_restart_immediate || f.kind == Kind::pg_freeze ||
        f.kind == Kind::terminate_backends) {
      cut_all.insert(f.id);
      if (f.overlaps) cut_all.insert(f.overlaps);
    }
  for (const Fault& f : faults_)
    if (f.overlaps && cut_all.count(f.overlaps)) cut_all.insert(f.id);
  for (Fault& f : faults_) {
    auto it = std::lower_bound(answers.begin(), answers.end(), Answer{f.all_healed, 0, 0});
    if (it == answers.end()) {
      violation(f.all_healed, "no master after the heal of fault #" + std::to_string(f.id));
      continue;
    }
    // (added latency: what was already on its way when it healed still arrives that late,
    // a last renewal among it; and the round trip that made the master, as long as the
    // database took: a cold server right after a restart can take hundreds of ms)
    const i64 bound =
        ms_to_ns(o_.ttl_ms + o_.renew_ms * (cut_all.count(f.id) ? 2 : 1) + 2 * f.latency_ms) + it->round_trip;
    f.master_after_heal = std::max<i64>(0, it->recv - f.all_healed);
    if (f.master_after_heal > bound)
      violation(f.all_healed, "no master for " + fmt_ms(f.master_after_heal) + " after the heal of fault #" +
                                  std::to_string(f.id) + " (" + kind_name(f.kind) + "), more than " + fmt_ms(bound) +
                                  " (its round trip took " + fmt_ms(it->round_trip) + ")");
  }
  // The takeover while the fault still holds: when the master alone was killed, frozen
  // or cut off for longer than it takes, another node answers master within ttl + renew
  // of the fault (DESIGN.md: one ttl after the master's last renewal, plus a round trip;
  // with one-way loss towards the agent its renewals still land for up to one more renew).
  std::vector<std::tuple<i64, i64, int>> by_slot;  // (sent, recv, slot) of master answers
  for (auto& s : slots_) {
    std::lock_guard<std::mutex> l(s->mu);
    for (const Sample& x : s->samples)
      if (x.master) by_slot.emplace_back(x.sent, x.recv, x.slot);
  }
  std::sort(by_slot.begin(), by_slot.end());
  std::set<int> overlapped;
  for (const Fault& f : faults_)
    if (f.overlaps) overlapped.insert(f.overlaps), overlapped.insert(f.id);
  for (Fault& f : faults_) {
    const bool cuts_master = f.kind == Kind::kill9 || f.kind == Kind::sigstop || f.kind == Kind::drop ||
                             f.kind == Kind::drop_to_server || f.kind == Kind::drop_to_client;
    const i64 limit = ms_to_ns(o_.ttl_ms + o_.renew_ms * (f.kind == Kind::drop_to_client ? 2 : 1));
    if (!cuts_master || !f.target_was_master || overlapped.count(f.id) || ms_to_ns(f.hold_ms) <= limit) continue;
    auto it = std::lower_bound(by_slot.begin(), by_slot.end(), std::make_tuple(f.start, i64{0}, 0));
    while (it != by_slot.end() && std::get<2>(*it) == f.target) ++it;
    if (it == by_slot.end() || std::get<1>(*it) - f.start > limit) {
      violation(f.start, "no other master within " + fmt_ms(limit) + " of fault #" + std::to_string(f.id) + " (" +
                             kind_name(f.kind) + " of the master " + slots_[static_cast<std::size_t>(f.target)]->node +
                             " for " + std::to_string(f.hold_ms) + "ms)");
      continue;
    }
    f.takeover = std::get<1>(*it) - f.start;
  }
  // Longest gap between master answers, from the first master on.
  for (std::size_t i = 1; i < answers.size(); ++i) {
    const i64 gap = answers[i].recv - answers[i - 1].sent;
    if (gap > longest_gap_) {
      longest_gap_ = gap;
      longest_gap_at_ = answers[i - 1].sent;
    }
  }
  for (const Fault& f : faults_)
    if (f.start <= longest_gap_at_ + ms_to_ns(o_.renew_ms) &&
        longest_gap_at_ <= f.all_healed + ms_to_ns(o_.ttl_ms + o_.renew_ms))
      longest_gap_cause_ += std::string(longest_gap_cause_.empty() ? "" : " and ") + "fault #" + std::to_string(f.id) +
                            " " + kind_name(f.kind) +
                            (f.target >= 0 ? " of " + slots_[static_cast<std::size_t>(f.target)]->node +
                                                 (f.target_was_master ? " (master)" : "")
                                           : "") +
                            ", " + f.detail;
}

std::string Suite::timeline(i64 from, i64 to) {
  std::vector<std::pair<i64, std::string>> ev;
  for (const Fault& f : faults_) {
    if (f.start >= from && f.start <= to)
      ev.push_back({f.start, "fault #" + std::to_string(f.id) + " " + kind_name(f.kind) +
                                 (f.target >= 0 ? " " + slots_[static_cast<std::size_t>(f.target)]->node : "") + " " + f.detail});
    if (f.heal >= from && f.heal <= to) ev.push_back({f.heal, "heal of fault #" + std::to_string(f.id)});
  }
  for (auto& s : slots_) {
    std::lock_guard<std::mutex> l(s->mu);
    const Sample* prev = nullptr;
    for (const Sample& x : s->samples) {
      if (x.sent >= from && x.sent <= to && (!prev || prev->master != x.master || prev->epoch != x.epoch || prev->gen != x.gen))
        ev.push_back({x.sent, s->node + "." + std::to_string(x.gen) + " answers " + (x.master ? "master" : "not master") +
                                  " epoch " + std::to_string(x.epoch) + " (request sent; answer at " + fmt_rel(x.recv) + ")"});
      prev = &x;
    }
  }
  std::ifstream in(hooks_file_);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    long long t = 0, epoch = 0, pid = 0;
    std::string node, role;
    if (ls >> t >> node >> role >> epoch >> pid && t >= from && t <= to)
      ev.push_back({t, "hook of " + node + ": " + (role == "master" ? "on-promote" : "on-demote") + " epoch " + std::to_string(epoch)});
  }
  std::sort(ev.begin(), ev.end());
  std::ostringstream out;
  for (const auto& [t, what] : ev) out << "    " << fmt_rel(t) << "  " << what << "\n";
  return out.str();
}

std::string Suite::repro() const {
  std::string kinds;
  for (Kind k : o_.kinds) kinds += (kinds.empty() ? "" : ",") + std::string(kind_name(k));
  return o_.self + " --seed " + std::to_string(o_.seed) + " --duration " + std::to_string(o_.duration_ms) + "ms --agents " +
         std::to_string(o_.agents) + " --ttl " + std::to_string(o_.ttl_ms) + "ms --renew " + std::to_string(o_.renew_ms) +
         "ms --overlap " + std::to_string(static_cast<int>(o_.overlap * 100 + 0.5)) + (kinds.empty() ? "" : " --only " + kinds);
}

void Suite::report() {
  std::map<std::string, int> by_kind;
  std::map<std::string, i64> worst_after_heal;
  std::map<std::string, std::pair<int, i64>> takeovers;  // kind -> (count, worst)
  for (const Fault& f : faults_) {
    ++by_kind[kind_name(f.kind)];
    worst_after_heal[kind_name(f.kind)] = std::max(worst_after_heal[kind_name(f.kind)], f.master_after_heal);
    if (f.takeover >= 0) {
      auto& t = takeovers[kind_name(f.kind)];
      ++t.first;
      t.second = std::max(t.second, f.takeover);
    }
  }
  std::cout << "\nfault_suite summary (seed " << o_.seed << ", " << o_.agents << " agents, ttl " << o_.ttl_ms << "ms, renew "
            << o_.renew_ms << "ms, " << std::fixed;
  std::cout.precision(1);
  std::cout << static_cast<double>(mono_ns() - t0_) / 1e9 << "s)\n";
  std::size_t overlapping = 0;
  for (const Fault& f : faults_)
    if (f.overlaps) ++overlapping;
  std::cout << "  faults injected: " << faults_.size() << " (" << overlapping
            << " of them while another fault held)\n";
  std::cout << "    kind                   count   worst time to a master after the heal   takeovers (worst)\n";
  for (const auto& [k, n] : by_kind) {
    char b[160];
    const auto t = takeovers.count(k) ? takeovers[k] : std::make_pair(0, i64{-1});
    std::snprintf(b, sizeof b, "    %-22s %5d   %-37s   %s\n", k.c_str(), n, fmt_ms(worst_after_heal[k]).c_str(),
                  t.first ? (std::to_string(t.first) + " (" + fmt_ms(t.second) + ")").c_str() : "-");
    std::cout << b;
  }
  std::cout << "  samples of /status: " << samples_total_ << " (" << master_samples_ << " master), master periods: "
            << periods_.size() << ", hook calls: " << hook_records_ << "\n";
  std::cout << "  after pg-restart-immediate (lost commits): lease row gone back " << rewinds_
            << " times, epochs given again " << reissued_ << " times\n";
  std::cout << "  longest time without a master: " << fmt_ms(longest_gap_) << " at " << fmt_rel(longest_gap_at_)
            << (longest_gap_cause_.empty() ? "" : ", during " + longest_gap_cause_) << "\n";
  std::cout << "  violations: " << violations_.size() << "\n";
  if (!violations_.empty()) {
    std::cout << "\nFAILED. Reproduce with:\n  " << repro() << "\n  (logs and the hook record are kept in " << dir_ << ")\n";
    std::sort(violations_.begin(), violations_.end(), [](const Violation& a, const Violation& b) { return a.at < b.at; });
    int shown = 0;
    for (const Violation& v : violations_) {
      if (++shown > 5) break;
      std::cout << "\n  " << fmt_rel(v.at) << ": " << v.what << "\n  history around it:\n"
                << timeline(v.at - ms_to_ns(3 * o_.ttl_ms), v.at + ms_to_ns(o_.ttl_ms));
    }
    std::ofstream(dir_ + "/history.txt") << timeline(0, mono_ns());
  }
  std::cout << "fault_suite: seed " << o_.seed << ", " << faults_.size() << " faults, " << violations_.size()
            << " violations: " << (violations_.empty() ? "PASS" : "FAIL") << std::endl;
}

int Suite::run() {
  std::cout << "fault_suite: seed " << o_.seed << ", " << o_.agents << " agents, ttl " << o_.ttl_ms << "ms, renew "
            << o_.renew_ms << "ms, for " << o_.duration_ms << "ms" << std::endl;
  std::cout << "  reproduce: " << repro() << std::endl;
  setup();
  std::cout << "  cluster " << cluster_ << ", work dir " << dir_ << std::endl;
  // Settle: n1 master, the others standbys, a snapshot to compare with.
  Fault settle;
  settle.kind = Kind::clock_jump;
  settle.heal = mono_ns();
  sleep_ms(o_.ttl_ms);
  snapshot_checks(settle, false);
  const i64 end = t0_ + ms_to_ns(o_.duration_ms);
  for (int id = 1; mono_ns() < end && id <= 100000;) cycle(id);

  // The end: SIGTERM to every agent; each must stop cleanly.
  for (auto& s : slots_) {
    if (s->pid <= 0) continue;
    ::kill(s->pid, SIGTERM);
    const std::optional<int> st = wait_exit(s->pid, 20000);
    if (st != 0) {
      violation(mono_ns(), s->node + " did not stop cleanly on SIGTERM at the end (status " +
                               (st ? std::to_string(*st) : std::string("none, killed")) + "); log " + s->log_path);
      if (!st) {
        ::kill(s->pid, SIGKILL);
        wait_exit(s->pid, 5000);
      }
    }
    end_life(*s, "run end");
  }
  done_ = true;
  for (auto& t : pollers_) t.join();
  for (auto& s : slots_) s->proxy.reset();
  check_samples();
  check_hooks();
  check_liveness();
  report();
  if (violations_.empty() && !o_.keep) std::filesystem::remove_all(dir_);
  return violations_.empty() ? 0 : 1;
}

int usage(const std::string& why) {
  std::cerr << "fault_suite: " << why << "\n"
            << "usage: fault_suite [--seed N] [--duration 60s] [--agents 5] [--ttl 1s] [--renew 250ms]\n"
               "                   [--overlap PERCENT] [--dsn DSN] [--pgdir DIR] [--binary PATH]\n"
               "                   [--only KIND,...] [--keep]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "--record") return record_hook(args[1].c_str());
  ::signal(SIGPIPE, SIG_IGN);
  // SIGINT/SIGTERM/SIGHUP go to one thread: it resumes a frozen PostgreSQL and exits
  // (the agents die with the suite: PR_SET_PDEATHSIG).
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGHUP);
  ::pthread_sigmask(SIG_BLOCK, &stop, nullptr);
  std::thread([stop] {
    int sig = 0;
    while (::sigwait(&stop, &sig) != 0) {
    }
    for (auto& p : frozen_pids())
      if (p.load() > 0) ::kill(p.load(), SIGCONT);
    std::fprintf(stderr, "fault_suite: stopped by signal %d\n", sig);
    std::_Exit(128 + sig);
  }).detach();

  Options o;
  o.self = std::filesystem::absolute(argv[0]).string();
  if (const char* d = std::getenv("LEASE_AGENT_TEST_DSN")) o.dsn = d;
  if (const char* d = std::getenv("LEASE_AGENT_TEST_PGDIR")) o.pgdir = d;
  o.seed = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) % 1000000000;
  try {
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= args.size()) throw std::invalid_argument(a + ": needs a value");
        return args[++i];
      };
      auto number = [&](const std::string& v) -> long long {
        std::size_t pos = 0;
        long long n = -1;
        try {
          n = std::stoll(v, &pos);
        } catch (const std::exception&) {
        }
        if (pos != v.size() || n < 0) throw std::invalid_argument(a + ": '" + v + "' is not a number");
        return n;
      };
      if (a == "--seed") o.seed = static_cast<std::uint64_t>(number(value()));
      else if (a == "--duration") o.duration_ms = parse_duration_ms(a, value());
      else if (a == "--agents") o.agents = static_cast<int>(number(value()));
      else if (a == "--ttl") o.ttl_ms = parse_duration_ms(a, value());
      else if (a == "--renew") o.renew_ms = parse_duration_ms(a, value());
      else if (a == "--dsn") o.dsn = value();
      else if (a == "--pgdir") o.pgdir = value();
      else if (a == "--binary") o.binary = value();
      else if (a == "--keep") o.keep = true;
      else if (a == "--overlap") {
        const long long pct = number(value());
        if (pct > 100) throw std::invalid_argument("--overlap: a percentage, 0 to 100");
        o.overlap = static_cast<double>(pct) / 100.0;
      }
      else if (a == "--only") {
        std::istringstream in(value());
        std::string k;
        while (std::getline(in, k, ',')) {
          bool found = false;
          for (Kind kind : kAllKinds)
            if (k == kind_name(kind)) {
              o.kinds.insert(kind);
              found = true;
            }
          if (!found) throw std::invalid_argument("--only: unknown fault kind '" + k + "'");
        }
      } else if (a == "--help" || a == "-h") {
        usage("runs lease-agent processes through randomized faults and checks the history");
        std::cout << "fault kinds:";
        for (Kind k : kAllKinds) std::cout << " " << kind_name(k);
        std::cout << "\n";
        return 0;
      } else
        throw std::invalid_argument("unknown argument '" + a + "'");
    }
    if (o.dsn.empty()) throw std::invalid_argument("no database: set LEASE_AGENT_TEST_DSN or give --dsn");
    if (o.agents < 2 || o.agents > 50) throw std::invalid_argument("--agents: between 2 and 50");
    if (o.ttl_ms < 200 || o.renew_ms * 2 > o.ttl_ms) throw std::invalid_argument("--ttl/--renew: ttl >= 200ms and renew <= ttl/2");
  } catch (const std::invalid_argument& e) {
    return usage(e.what());
  }
  try {
    Suite suite(o);
    return suite.run();
  } catch (const std::exception& e) {
    std::cerr << "fault_suite: " << e.what() << std::endl;
    return 2;
  }
}
