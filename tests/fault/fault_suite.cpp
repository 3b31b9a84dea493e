// The fault-injection suite's runner: N lease-agent processes on loopback against a
// real PostgreSQL (one server, or a primary and a streaming replica), faults injected
// one after another from a seed, a fenced writer beside every agent, and at the end the
// history handed to the checker (checker.h), which alone decides what is a violation.
// README.md in this directory tells how to run it and what each check means.
//
//   fault_suite [--seed S] [--duration 60s] [--agents 5] [--ttl 1s] [--renew 250ms]
//               [--only kind,kind] [--keep] [--pair | --start-pair] [--no-writers]
//   fault_suite --record FILE      (the agents' on-promote/on-demote hook; internal)
//
// The database comes from LEASE_AGENT_TEST_DSN (and --dsn); restarts of PostgreSQL need
// the directory of scripts/pg.sh in LEASE_AGENT_TEST_PGDIR (and --pgdir), else those
// faults are skipped. Exit status: 0 no violation, 1 violations, 2 bad usage or setup.
//
// The parts: this file (options, setup, agents, polling, writers, the cycle, the
// report), fault_kinds.cpp (inject and heal of each kind), checker.cpp (the checks,
// pure functions of history.h's History).
#include <fcntl.h>
#include <httplib.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "checker.h"
#include "fault_kinds.h"

namespace {

using namespace fault_suite;
using fault_checker::fmt_ms;

#ifndef LEASE_AGENT_BINARY
#error "LEASE_AGENT_BINARY must name the lease-agent binary"
#endif
#ifndef LEASE_AGENT_SOURCE_DIR
#error "LEASE_AGENT_SOURCE_DIR must name the source tree (for scripts/pg.sh)"
#endif

constexpr const char* kFaketimeLib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

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

// Reads KEY="value" lines of a scripts/pg.sh env file.
std::map<std::string, std::string> read_env_file(const std::string& path) {
  std::map<std::string, std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("export ", 0) == 0) line = line.substr(7);
    const auto eq = line.find('=');
    if (eq == std::string::npos) continue;
    std::string v = line.substr(eq + 1);
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    out[line.substr(0, eq)] = v;
  }
  return out;
}

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

class Suite {
 public:
  explicit Suite(Options o) : o_(std::move(o)), rng_(o_.seed) {}
  // Whatever happened: the agents are killed (PR_SET_PDEATHSIG would do it too when the
  // suite exits), the threads joined, a pair the suite started stopped.
  ~Suite() {
    if (faults_) faults_->thaw_all();
    for (auto& s : slots_)
      if (s->pid > 0) {
        ::kill(s->pid, SIGKILL);
        wait_exit(s->pid, 5000);
      }
    stop_threads();
    if (started_pair_) run_bounded({"/bin/bash", o_.source_dir + "/scripts/pg.sh", "stop", o_.pgdir}, "/dev/null", 60000);
  }
  Suite(const Suite&) = delete;
  Suite& operator=(const Suite&) = delete;

  int run();

 private:
  void start_pair();
  void setup();
  void ensure_commit_timestamps();
  void start_agent(Slot& s);
  void end_life(Slot& s, const std::string& how, int status);
  void poll_loop(Slot& s);
  void relay_loop(Slot& s);
  void writer_loop(Slot& s);
  bool wait_connected(Slot& s, i64 since, i64 limit_ms);
  int current_master();
  void reap_unexpected_exits();
  void stop_threads();
  std::string agent_dsn(const Slot& s) const;

  Kind pick_kind();
  void choose_target(Fault& f, int busy);
  i64 rand_ms(double lo_ttl, double hi_ttl);
  void cycle(int& next_id, int round);
  void snapshot(const Fault& f, bool lost_commits);
  void read_fenced_writes();
  History history() const;
  void report(const History& h, const fault_checker::Report& r);
  std::string repro() const;

  void observed(i64 at, VKind k, const std::string& what) {
    std::lock_guard<std::mutex> l(omu_);
    observed_.push_back({at, k, what});
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
  std::mutex slow_mutex_;
  std::vector<std::string> slow_rig_;  // rig steps that took far too long (FaultEnv::slow_rig)
  std::map<std::string, std::string> dsn_kv_;
  std::vector<std::pair<std::string, int>> servers_;  // (host, port) of every server
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<std::thread> threads_;  // pollers and writers
  std::atomic<bool> done_{false};
  std::unique_ptr<Faults> faults_;
  std::vector<Fault> faults_done_;
  std::vector<Snapshot> snapshots_;
  std::vector<FencedWrite> writes_;
  std::size_t writes_without_ts_ = 0;
  std::mutex omu_;
  std::vector<Violation> observed_;
  i64 t0_ = 0;
  std::vector<Kind> enabled_;
  std::set<int> touched_;  // slots a fault touched since the previous snapshot
  bool started_pair_ = false;
};

void Suite::start_pair() {
  char tmpl[] = "/tmp/fault-pair-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  o_.pgdir = tmpl;
  std::cout << "  starting a PostgreSQL pair (async) in " << o_.pgdir << std::endl;
  const int rc = run_bounded({"/bin/bash", o_.source_dir + "/scripts/pg.sh", "start-pair", o_.pgdir, "async"},
                             "/tmp/fault-pair-start.log", 180000);
  started_pair_ = true;
  if (rc != 0) throw std::runtime_error("scripts/pg.sh start-pair failed (status " + std::to_string(rc) + ")");
  const auto env = read_env_file(o_.pgdir + "/env");
  if (!env.count("LEASE_AGENT_TEST_DSN")) throw std::runtime_error("no LEASE_AGENT_TEST_DSN in " + o_.pgdir + "/env");
  o_.dsn = env.at("LEASE_AGENT_TEST_DSN");
  o_.pair = true;
}

// Fenced writes are ordered by their commit timestamps, which PostgreSQL keeps only
// with track_commit_timestamp = on; that takes a restart.
void Suite::ensure_commit_timestamps() {
  {
    Db db(o_.dsn, "fault_suite");
    if (db.exec("SHOW track_commit_timestamp").at(0).at(0) == "on") return;
    if (o_.pgdir.empty())
      throw std::runtime_error("track_commit_timestamp is off and there is no PostgreSQL directory (--pgdir) to "
                               "restart the server with; turn it on (it needs a restart), or give --pgdir, or run "
                               "with --no-writers");
    db.exec("ALTER SYSTEM SET track_commit_timestamp = on");
  }
  std::cout << "  track_commit_timestamp was off: turned on, restarting PostgreSQL" << std::endl;
  if (run_bounded({"/bin/bash", o_.source_dir + "/scripts/pg.sh", "restart", o_.pgdir, "fast"}, dir_ + "/pg-restart.log",
                  60000) != 0)
    throw std::runtime_error("scripts/pg.sh restart failed, see " + dir_ + "/pg-restart.log");
  // A pair's replica copies postgresql.auto.conf when it is rebuilt from the primary.
  if (o_.pair &&
      run_bounded({"/bin/bash", o_.source_dir + "/scripts/pg.sh", "rebuild", o_.pgdir}, dir_ + "/pg-rebuild.log", 120000) != 0)
    throw std::runtime_error("scripts/pg.sh rebuild failed, see " + dir_ + "/pg-rebuild.log");
  Db db(o_.dsn, "fault_suite");
  if (db.exec("SHOW track_commit_timestamp").at(0).at(0) != "on")
    throw std::runtime_error("track_commit_timestamp is still off after the restart");
}

void Suite::setup() {
  char tmpl[] = "/tmp/fault-suite-XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error(std::string("mkdtemp: ") + std::strerror(errno));
  dir_ = tmpl;
  ::chmod(dir_.c_str(), 0755);
  hooks_file_ = dir_ + "/hooks.log";
  cluster_ = "fault-" + std::to_string(o_.seed) + "-" + std::to_string(::getpid());
  if (!o_.pgdir.empty() && std::filesystem::exists(o_.pgdir + "/pair")) o_.pair = true;
  dsn_kv_ = parse_dsn(o_.dsn);
  if (o_.pair) dsn_kv_["target_session_attrs"] = "read-write";
  o_.dsn = build_dsn(dsn_kv_);
  // Every server of the dsn (one, or the pair's two), each reached through a proxy per agent.
  const std::string hosts = dsn_kv_.count("host") ? dsn_kv_["host"] : dsn_kv_.count("hostaddr") ? dsn_kv_["hostaddr"] : "";
  const std::vector<std::string> hs = split(hosts, ',');
  const std::vector<std::string> ps = split(dsn_kv_.count("port") ? dsn_kv_["port"] : "5432", ',');
  for (std::size_t i = 0; i < hs.size(); ++i) {
    if (hs[i] != "127.0.0.1" && hs[i] != "localhost")
      throw std::runtime_error("the dsn must name host=127.0.0.1 (the proxies listen on loopback), not '" + hs[i] + "'");
    servers_.push_back({"127.0.0.1", std::stoi(ps.size() == hs.size() ? ps[i] : ps.at(0))});
  }
  if (servers_.empty()) throw std::runtime_error("the dsn names no host");
  if (o_.pair && servers_.size() < 2) throw std::runtime_error("a pair needs a dsn with both servers");

  const int rc = run_bounded({o_.binary, "schema", "apply", "--dsn", o_.dsn}, dir_ + "/schema.log", 30000);
  if (rc != 0) throw std::runtime_error("lease-agent schema apply failed (status " + std::to_string(rc) + "), see " + dir_ + "/schema.log");
  if (o_.writers) {
    ensure_commit_timestamps();
    Db db(o_.dsn, "fault_suite");
    db.exec("CREATE TABLE IF NOT EXISTS public.fenced_write (cluster text NOT NULL, node text NOT NULL, "
            "gen integer NOT NULL, epoch bigint NOT NULL, seq bigint NOT NULL, PRIMARY KEY (cluster, node, gen, seq))");
  }

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
    const bool needs_dir = k == Kind::pg_restart_fast || k == Kind::pg_restart_immediate || k == Kind::pg_freeze;
    if (needs_dir && o_.pgdir.empty()) continue;
    if (needs_pair(k) && !o_.pair) continue;
    if (k == Kind::clock_jump && !faketime_ok) continue;
    enabled_.push_back(k);
  }
  if (o_.pgdir.empty()) std::cout << "  no PostgreSQL directory (LEASE_AGENT_TEST_PGDIR): restarts skipped" << std::endl;
  if (!o_.pair) std::cout << "  a single server: pg-failover and pg-switchover skipped" << std::endl;
  if (enabled_.empty()) throw std::runtime_error("no fault kind is enabled");

  FaultEnv env{o_, slots_, dir_, cluster_, rng_,
               [this](Slot& s) { start_agent(s); },
               [this](Slot& s, const std::string& how, int st) { end_life(s, how, st); },
               [this](i64 at, VKind k, const std::string& what) { observed(at, k, what); },
               nullptr,
               [this](const std::string& what) {
                 std::lock_guard<std::mutex> lock(slow_mutex_);
                 slow_rig_.push_back(what);
               }};
  faults_ = std::make_unique<Faults>(std::move(env));

  for (int i = 0; i < o_.agents; ++i) {
    auto s = std::make_unique<Slot>();
    s->index = i;
    s->node = "n" + std::to_string(i + 1);
    s->port = lease_agent_proc::free_port();
    for (const auto& [host, port] : servers_) s->proxies.push_back(std::make_unique<FaultProxy>(host, port));
    s->faketime = faketime_ok && i % 2 == 1;
    s->faketime_file = dir_ + "/" + s->node + ".faketime";
    s->slow_promote_hook = i % 3 == 2;
    if (s->faketime) std::ofstream(s->faketime_file) << "+0\n";
    int fds[2];
    if (::pipe2(fds, O_CLOEXEC) != 0) throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
    s->out_read = fds[0];
    s->out_write = fds[1];
    slots_.push_back(std::move(s));
  }
  t0_ = mono_ns();
  for (auto& s : slots_) {
    s->relay = std::thread([this, sp = s.get()] { relay_loop(*sp); });
    threads_.emplace_back([this, sp = s.get()] { poll_loop(*sp); });
    if (o_.writers) threads_.emplace_back([this, sp = s.get()] { writer_loop(*sp); });
  }
  // Started in order, each once the previous answers: n1 is first in line.
  for (auto& s : slots_) {
    start_agent(*s);
    if (!wait_connected(*s, s->lives.back().start, 15000))
      throw std::runtime_error("agent " + s->node + " did not come up; see " + s->log_path);
  }
}

// The agent's dsn: every server through this slot's own proxies (a multi-host dsn for a
// pair, which finds the primary with target_session_attrs=read-write).
std::string Suite::agent_dsn(const Slot& s) const {
  auto kv = dsn_kv_;
  std::string hosts, ports;
  for (const auto& p : s.proxies) {
    hosts += (hosts.empty() ? "" : ",") + std::string("127.0.0.1");
    ports += (ports.empty() ? "" : ",") + std::to_string(p->port());
  }
  kv["host"] = hosts;
  kv.erase("hostaddr");
  kv["port"] = ports;
  return build_dsn(kv);
}

void Suite::start_agent(Slot& s) {
  ++s.gen;
  {
    std::lock_guard<std::mutex> l(s.log_mu);
    s.log_path = dir_ + "/" + s.node + "." + std::to_string(s.gen) + ".log";
  }
  const std::string hook = "'" + o_.self + "' --record '" + hooks_file_ + "'";
  std::vector<std::string> args{o_.binary, "run", "--dsn", agent_dsn(s), "--cluster", cluster_, "--node", s.node,
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
  s.pid = lease_agent_proc::spawn_process_fds(args, env, s.out_write, s.out_write);
  s.paused = false;
  s.lives.push_back({s.gen, start, 0, "", 0, {}});
  s.live_gen = s.gen;
}

void Suite::end_life(Slot& s, const std::string& how, int status) {
  s.live_gen = -1;
  s.pid = -1;
  s.paused = false;
  s.lives.back().end = mono_ns();
  s.lives.back().ended = how;
  s.lives.back().exit_status = status;
}

// Copies the agent's stdout/stderr pipe to the current generation's log (what an old
// generation wrote last may land in the next one's log: one pipe per slot). Parks while
// a log-stall holds; drops the stall's NUL filler.
void Suite::relay_loop(Slot& s) {
  char buf[8192];
  for (;;) {
    {
      std::unique_lock<std::mutex> l(s.log_mu);
      if (s.stall) {
        s.relay_parked = true;
        s.log_cv.notify_all();
        s.log_cv.wait(l, [&] { return !s.stall || s.relay_done; });
        s.relay_parked = false;
      }
      if (s.relay_done) return;
    }
    pollfd p{s.out_read, POLLIN, 0};
    if (::poll(&p, 1, 20) <= 0) continue;
    const ssize_t n = ::read(s.out_read, buf, sizeof buf);
    if (n <= 0) continue;
    std::string text;
    for (ssize_t i = 0; i < n; ++i)
      if (buf[i] != '\0') text += buf[i];
    if (text.empty()) continue;
    std::string path;
    {
      std::lock_guard<std::mutex> l(s.log_mu);
      path = s.log_path;
    }
    std::ofstream(path, std::ios::app) << text;
  }
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
        Sample x;
        x.sent = sent;
        x.recv = recv;
        x.slot = s.index;
        x.gen = g;
        x.role = role_from_string(role);
        x.epoch = j.at("epoch").get<i64>();
        x.round_trip_ms = took.is_number() ? took.get<i64>() : 0;
        x.may_acquire = j.value("may_acquire", false);
        std::lock_guard<std::mutex> l(s.mu);
        s.samples.push_back(x);
        if (x.master()) s.last_master_recv = recv;
        // When the agent's last round trip with the database succeeded.
        const auto& ago = j.at("last_round_trip_ago_ms");
        if ((role == "master" || role == "standby") && ago.is_number())
          s.last_round_trip = recv - ms_to_ns(ago.get<i64>());
      } catch (const std::exception& e) {
        observed(recv, VKind::bad_status, s.node + " answered /status with something that is not its JSON: " + e.what());
      }
    } else if (!r) {
      client.reset();  // a fresh connection next time
    }
    sleep_ms(10);
  }
}

// The application beside the agent: while the agent says (in the suite's latest sample
// of its running process) master at epoch e, it writes rows fenced by assert_master, over its own
// connection through the agent's proxies (the agent's network faults hit it too).
// Sometimes it pauses after the fence, inside the transaction, so that a write is held
// up after it passed. Refusals (LA001) and lost connections are the fence working:
// counted, not judged; the rows that committed are judged at the end (check_fenced).
void Suite::writer_loop(Slot& s) {
  std::mt19937_64 rng(o_.seed * 31 + static_cast<std::uint64_t>(s.index));
  std::unique_ptr<Db> db;
  i64 seq = 0;
  const i64 statement_ms = std::max<i64>(100, o_.ttl_ms / 2);
  auto kv = parse_dsn(agent_dsn(s));
  kv["connect_timeout"] = "2";
  // No idle_in_transaction_session_timeout: a writer cut off in the middle of its
  // transaction keeps the fence of its term held, and the next acquisition must end it
  // after its bound (sql/PROTOCOL.md, "Fencing"): the suite exercises exactly that.
  kv["options"] = "-c statement_timeout=" + std::to_string(statement_ms);
  const std::string dsn = build_dsn(kv);
  const i64 end = t0_ + ms_to_ns(o_.duration_ms) + ms_to_ns(600000);
  while (!done_ && mono_ns() < end) {
    Sample last;
    bool have = false;
    {
      std::lock_guard<std::mutex> l(s.mu);
      if (!s.samples.empty()) last = s.samples.back(), have = true;
    }
    // The latest answer, however old: an application that cannot reach its agent (frozen,
    // say) may go on acting on what it last heard; the fence must refuse it.
    if (!have || !last.master() || last.gen != s.live_gen) {
      sleep_ms(5);
      continue;
    }
    if (!db || db->broken()) {
      db.reset();
      try {
        db = std::make_unique<Db>(dsn, "fault_suite writer " + s.node, statement_ms + 1000);
      } catch (const std::exception&) {
        ++s.w_failed;
        sleep_ms(o_.renew_ms);
        continue;
      }
    }
    const i64 e = last.epoch;
    std::uniform_int_distribution<i64> pause_d(0, o_.ttl_ms / 5);
    const bool pause = std::uniform_int_distribution<int>(0, 2)(rng) == 0;
    const i64 pause_ms = pause ? pause_d(rng) : 0;
    ++seq;
    const std::vector<std::string> steps{
        "BEGIN",
        "SELECT lease_agent.assert_master(" + sql_quote(cluster_) + ", " + sql_quote(s.node) + ", " + std::to_string(e) + ")",
        pause ? "SELECT pg_sleep(" + std::to_string(static_cast<double>(pause_ms) / 1000.0) + ")" : "",
        "INSERT INTO public.fenced_write (cluster, node, gen, epoch, seq) VALUES (" + sql_quote(cluster_) + ", " +
            sql_quote(s.node) + ", " + std::to_string(last.gen) + ", " + std::to_string(e) + ", " + std::to_string(seq) + ")",
        "COMMIT"};
    bool ok = true;
    for (const std::string& sql : steps) {
      if (sql.empty()) continue;
      const Result r = db->try_exec(sql);
      if (r.ok) continue;
      ok = false;
      if (r.sqlstate == "LA001")
        ++s.w_refused;
      else
        ++s.w_failed;
      if (!db->broken()) db->try_exec("ROLLBACK");
      break;
    }
    if (ok) ++s.w_committed;
    sleep_ms(std::uniform_int_distribution<i64>(5, 25)(rng));
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
        end_life(s, "exit " + std::to_string(lease_agent_proc::decode_status(st)), lease_agent_proc::decode_status(st));
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
      end_life(*s, "exit " + std::to_string(lease_agent_proc::decode_status(st)), lease_agent_proc::decode_status(st));
      touched_.insert(s->index);
      start_agent(*s);
    }
  }
}

void Suite::stop_threads() {
  done_ = true;
  for (auto& t : threads_)
    if (t.joinable()) t.join();
  threads_.clear();
  for (auto& s : slots_) {
    {
      std::lock_guard<std::mutex> l(s->log_mu);
      s->relay_done = true;
      s->stall = false;
      s->log_cv.notify_all();
    }
    if (s->relay.joinable()) s->relay.join();
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

// One round: a fault, sometimes a second one on another agent while the first holds
// (a partitioned master and a frozen successor, say); heal both; wait for a master
// and for every agent to be back; read the tables.
void Suite::cycle(int& next_id, int round_no) {
  auto announce = [&](const Fault& f) {
    std::cout << "  #" << f.id << " " << fmt_rel(f.start) << " " << kind_name(f.kind);
    if (f.target >= 0)
      std::cout << " " << slots_[static_cast<std::size_t>(f.target)]->node << (f.target_was_master ? " (master)" : "");
    std::cout << " " << f.detail << std::endl;
  };
  std::vector<Fault> round;
  Fault a;
  a.id = next_id++;
  a.round = round_no;
  a.kind = pick_kind();
  choose_target(a, -1);
  faults_->begin(a);
  announce(a);
  round.push_back(a);
  std::uniform_real_distribution<double> coin(0, 1);
  bool first_healed = false;  // by the second fault's injection, which waited past its hold
  if (o_.overlap > 0 && coin(rng_) < o_.overlap && a.hold_ms > 0) {
    Fault b;
    b.kind = pick_kind();
    for (int i = 0; i < 10 && is_global(a.kind) && is_global(b.kind); ++i) b.kind = pick_kind();
    if (!(is_global(a.kind) && is_global(b.kind))) {
      sleep_ms(rand_ms(0.0, static_cast<double>(a.hold_ms) / static_cast<double>(o_.ttl_ms)));
      b.id = next_id++;
      b.round = round_no;
      choose_target(b, a.target);
      faults_->begin(b, round[0].start + ms_to_ns(round[0].hold_ms), [&] {
        faults_->end(round[0]);
        first_healed = true;
      });
      announce(b);
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
    if (i == 0 && first_healed) continue;
    sleep_ms((until(i) - mono_ns()) / 1000000);
    faults_->end(round[i]);
  }
  // A heal more than a second late is the rig's doing (the second fault's injection
  // waited before heal_first existed: a SIGTERM'd agent's exit held a pg-freeze 3.9 s
  // past its hold, a failover held a net-drop-to-server 5.5 s): the fault then held
  // longer than its line says. Judged for the kinds that hold a state until their
  // heal; a killed agent's restart waits for its exit (the agent's doing), and a restart
  // or failover of PostgreSQL takes what it takes (slow ones are reported by slow_rig).
  auto held = [](Kind k) {
    switch (k) {
      case Kind::sigstop: case Kind::drop: case Kind::reset: case Kind::latency: case Kind::drop_to_server:
      case Kind::drop_to_client: case Kind::pg_freeze: case Kind::lease_row_lock: case Kind::node_table_lock:
      case Kind::clock_jump: case Kind::log_stall:
        return true;
      default:
        return false;
    }
  };
  for (const Fault& f : round) {
    const i64 late_ms = (f.heal - f.start) / 1000000 - f.hold_ms;
    if (late_ms > 1000 && held(f.kind)) {
      std::lock_guard<std::mutex> lock(slow_mutex_);
      slow_rig_.push_back("fault #" + std::to_string(f.id) + " " + kind_name(f.kind) + " was healed " +
                          std::to_string(late_ms) + "ms after its hold");
    }
  }
  i64 healed = 0;
  for (const Fault& f : round) healed = std::max(healed, f.heal);
  for (Fault& f : round) f.all_healed = healed;

  // Every agent back (connected) before the next fault: a bound that covers a
  // reconnection after the longest hang the agent's timeouts allow.
  const i64 back_limit = 4 * o_.ttl_ms + 10000;
  for (auto& s : slots_) {
    if (!wait_connected(*s, healed, back_limit))
      observed(mono_ns(), VKind::not_back,
               s->node + " was not back as master or standby within " + std::to_string(back_limit) +
                   "ms of the heal of fault #" + std::to_string(a.id) + "; log " + s->log_path);
  }
  // Then a master that answers now, within a bound far beyond the promise (the promise
  // itself is checked on the samples after the run).
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
    observed(mono_ns(), VKind::no_master_at_all,
             "no master at all within " + fmt_ms(bound - healed) + " of the heal of fault #" + std::to_string(a.id));
  reap_unexpected_exits();
  // Quiet: a few heartbeats with nothing wrong, then the snapshot.
  sleep_ms(o_.renew_ms + rand_ms(0.0, 0.5));
  bool lost = false;
  for (const Fault& f : round) lost = lost || loses_commits(f.kind);
  snapshot(round.back(), lost);
  for (Fault& f : round) faults_done_.push_back(f);
}

// The node and lease rows now, for the checker (check_snapshots decides).
void Suite::snapshot(const Fault& f, bool lost_commits) {
  Snapshot snap;
  snap.fault_id = f.id;
  snap.touched = touched_;
  snap.lost_commits = lost_commits;
  touched_.clear();
  try {
    Db db(o_.dsn, "fault_suite");
    const Rows nodes = db.exec(
        "SELECT node, incarnation, to_char(registered_at, 'YYYY-MM-DD HH24:MI:SS.US'), expires_at > clock_timestamp() "
        "FROM lease_agent.node WHERE cluster = " + sql_quote(cluster_) + " ORDER BY registered_at, node");
    const Rows lease = db.exec("SELECT coalesce(holder, ''), coalesce(holder_incarnation, ''), epoch, "
                               "holder IS NOT NULL AND expires_at > clock_timestamp() FROM lease_agent.lease WHERE cluster = " +
                               sql_quote(cluster_));
    snap.at = mono_ns();
    for (const auto& r : nodes) snap.nodes.push_back({r[0], r[1], r[2], r[3] == "t"});
    if (lease.size() == 1) {
      snap.has_lease = true;
      snap.holder = lease[0][0];
      snap.holder_incarnation = lease[0][1];
      snap.epoch = std::stoll(lease[0][2]);
      snap.held = lease[0][3] == "t";
    }
  } catch (const std::exception& e) {
    snap.at = mono_ns();
    snap.read_ok = false;
    snap.error = e.what();
  }
  snapshots_.push_back(std::move(snap));
}

// Every fenced write that is in the table now, with its commit timestamp.
void Suite::read_fenced_writes() {
  if (!o_.writers) return;
  std::map<std::string, int> slot_of;
  for (auto& s : slots_) slot_of[s->node] = s->index;
  Db db(o_.dsn, "fault_suite", 60000);
  const Rows rows = db.exec(
      "SELECT node, gen, epoch, seq, floor(extract(epoch FROM pg_xact_commit_timestamp(xmin)) * 1000000)::bigint "
      "FROM public.fenced_write WHERE cluster = " + sql_quote(cluster_));
  for (const auto& r : rows) {
    if (r[4].empty()) {
      ++writes_without_ts_;
      continue;
    }
    writes_.push_back({slot_of.count(r[0]) ? slot_of[r[0]] : -1, std::stoi(r[1]), std::stoll(r[2]), std::stoll(r[3]),
                       std::stoll(r[4])});
  }
}

History Suite::history() const {
  History h;
  h.ttl_ms = o_.ttl_ms;
  h.renew_ms = o_.renew_ms;
  h.t0 = t0_;
  h.end = mono_ns();
  for (const auto& s : slots_) h.agents.push_back({s->node, s->lives, s->samples});
  std::ifstream in(hooks_file_);
  std::string line;
  HookRecord rec;
  while (std::getline(in, line))
    if (fault_checker::parse_hook_line(line, rec)) h.hooks.push_back(rec);
  h.faults = faults_done_;
  h.snapshots = snapshots_;
  h.writes = writes_;
  h.observed = observed_;
  return h;
}

std::string Suite::repro() const {
  std::string kinds;
  for (Kind k : o_.kinds) kinds += (kinds.empty() ? "" : ",") + std::string(kind_name(k));
  return o_.self + " --seed " + std::to_string(o_.seed) + " --duration " + std::to_string(o_.duration_ms) + "ms --agents " +
         std::to_string(o_.agents) + " --ttl " + std::to_string(o_.ttl_ms) + "ms --renew " + std::to_string(o_.renew_ms) +
         "ms --overlap " + std::to_string(static_cast<int>(o_.overlap * 100 + 0.5)) + (kinds.empty() ? "" : " --only " + kinds) +
         (o_.start_pair ? " --start-pair" : o_.pair ? " --pair" : "") + (o_.writers ? "" : " --no-writers");
}

void Suite::report(const History& h, const fault_checker::Report& r) {
  std::map<std::string, int> by_kind;
  std::map<std::string, i64> worst_after_heal;
  std::map<std::string, std::pair<int, i64>> takeovers;  // kind -> (count, worst)
  for (const Fault& f : h.faults) {
    const std::string k = kind_name(f.kind);
    ++by_kind[k];
    if (r.master_after_heal.count(f.id)) worst_after_heal[k] = std::max(worst_after_heal[k], r.master_after_heal.at(f.id));
    if (r.takeover.count(f.id)) {
      auto& t = takeovers[k];
      ++t.first;
      t.second = std::max(t.second, r.takeover.at(f.id));
    }
  }
  std::cout << "\nfault_suite summary (seed " << o_.seed << ", " << o_.agents << " agents, ttl " << o_.ttl_ms << "ms, renew "
            << o_.renew_ms << "ms, " << (o_.pair ? "a primary and a replica, " : "one server, ") << std::fixed;
  std::cout.precision(1);
  std::cout << static_cast<double>(h.end - t0_) / 1e9 << "s)\n";
  std::size_t overlapping = 0;
  for (const Fault& f : h.faults)
    if (f.overlaps) ++overlapping;
  std::cout << "  faults injected: " << h.faults.size() << " (" << overlapping << " of them while another fault held)\n";
  std::cout << "    kind                   count   worst time to a master after the heal   takeovers (worst)\n";
  for (const auto& [k, n] : by_kind) {
    char b[200];
    const auto t = takeovers.count(k) ? takeovers[k] : std::make_pair(0, i64{-1});
    std::snprintf(b, sizeof b, "    %-22s %5d   %-37s   %s\n", k.c_str(), n, fmt_ms(worst_after_heal[k]).c_str(),
                  t.first ? (std::to_string(t.first) + " (" + fmt_ms(t.second) + ")").c_str() : "-");
    std::cout << b;
  }
  std::map<std::string, std::pair<i64, int>> after_promotion;  // kind: the worst, and its fault's id
  for (const Fault& f : h.faults) {
    if (!r.master_after_promotion.count(f.id)) continue;
    auto& w = after_promotion.try_emplace(kind_name(f.kind), i64{-1}, 0).first->second;
    if (r.master_after_promotion.at(f.id) > w.first) w = {r.master_after_promotion.at(f.id), f.id};
  }
  for (const auto& [k, worst] : after_promotion)
    std::cout << "  " << k << ": worst time from the promotion to a master answer " << fmt_ms(worst.first)
              << " (fault #" << worst.second << "; DESIGN: <= ttl + renew = " << (o_.ttl_ms + o_.renew_ms)
              << "ms)\n";
  std::cout << "  samples of /status: " << r.samples << " (" << r.master_samples << " master), master periods: "
            << r.periods << ", hook calls: " << r.hook_records << "\n";
  long committed = 0, refused = 0, failed = 0;
  for (const auto& s : slots_) committed += s->w_committed, refused += s->w_refused, failed += s->w_failed;
  if (o_.writers)
    std::cout << "  fenced writes: " << committed << " committed, " << refused << " refused by the fence (LA001), " << failed
              << " failed (connection, timeout); " << r.writes << " rows checked in commit order"
              << (writes_without_ts_ ? " (" + std::to_string(writes_without_ts_) + " without a commit timestamp)" : "")
              << "\n";
  std::cout << "  ttl wait: " << r.ttl_waits_checked << " agent-rounds after a new server life, " << r.ttl_keeps_checked
            << " agent-rounds that kept it\n";
  std::cout << "  across lost commits (pg-restart-immediate, pg-backend-crash, pg-failover): lease row gone back "
            << r.rewinds << " times, epochs given again " << r.reissued << " times\n";
  auto gap = [&](const std::string& what, const fault_checker::Gap& g) {
    std::cout << "  longest time without a master" << what << ": " << fmt_ms(g.length) << " at " << fmt_rel(g.at)
              << (g.cause.empty() ? "" : ", during " + g.cause) << "\n";
  };
  gap("", r.longest);
  gap(" (faults that keep the server's life; target <= " + std::to_string(2 * o_.ttl_ms + o_.renew_ms) + "ms: " +
          (r.longest_keep_life.length <= ms_to_ns(2 * o_.ttl_ms + o_.renew_ms) ? "met" : "NOT met") + ")",
      r.longest_keep_life);
  gap(" (faults that change it)", r.longest_new_life);
  std::map<std::string, int> kinds;
  for (const Violation& v : r.violations) ++kinds[vkind_name(v.kind)];
  std::cout << "  violations: " << r.violations.size();
  for (const auto& [k, n] : kinds) std::cout << (k == kinds.begin()->first ? " (" : ", ") << k << " " << n;
  std::cout << (kinds.empty() ? "" : ")") << "\n";
  if (!r.violations.empty()) {
    std::cout << "\nFAILED. Reproduce with:\n  " << repro() << "\n  (logs and the hook record are kept in " << dir_ << ")\n";
    int shown = 0;
    std::set<VKind> shown_kinds;
    for (const Violation& v : r.violations) {
      // the first of each kind, up to 8
      if (!shown_kinds.insert(v.kind).second || ++shown > 8) continue;
      std::cout << "\n  " << fmt_rel(v.at) << " [" << vkind_name(v.kind) << "]: " << v.what << "\n  history around it:\n"
                << fault_checker::timeline(h, v.at - ms_to_ns(3 * o_.ttl_ms), v.at + ms_to_ns(o_.ttl_ms));
    }
    std::ofstream out(dir_ + "/history.txt");
    for (const Violation& v : r.violations) out << "VIOLATION " << fmt_rel(v.at) << " [" << vkind_name(v.kind) << "] " << v.what << "\n";
    out << fault_checker::timeline(h, 0, h.end);
  }
  std::cout << "fault_suite: seed " << o_.seed << ", " << h.faults.size() << " faults, " << r.violations.size()
            << " violations: " << (r.violations.empty() ? "PASS" : "FAIL") << std::endl;
}

int Suite::run() {
  if (o_.start_pair) start_pair();
  std::cout << "fault_suite: seed " << o_.seed << ", " << o_.agents << " agents, ttl " << o_.ttl_ms << "ms, renew "
            << o_.renew_ms << "ms, for " << o_.duration_ms << "ms" << std::endl;
  std::cout << "  reproduce: " << repro() << std::endl;
  setup();
  std::cout << "  cluster " << cluster_ << ", work dir " << dir_ << (o_.pair ? ", a pair in " + o_.pgdir : "") << std::endl;
  // Settle: n1 master, the others standbys, a snapshot to compare with.
  sleep_ms(o_.ttl_ms);
  Fault settle;
  snapshot(settle, false);
  const i64 end = t0_ + ms_to_ns(o_.duration_ms);
  // A fault the rig could not inject or heal (scripts/pg.sh failed, say) ends the
  // injection, not the run: the history so far is still checked and reported.
  std::string rig_error;
  try {
    for (int id = 1, round = 1; mono_ns() < end && id <= 100000; ++round) cycle(id, round);
  } catch (const std::exception& e) {
    rig_error = e.what();
    std::cout << "fault_suite: the run stopped early: " << rig_error << "; checking the history so far"
              << std::endl;
  }

  // The end: SIGTERM to every agent; each must stop cleanly (check_lives).
  for (auto& s : slots_) {
    if (s->pid <= 0) continue;
    ::kill(s->pid, SIGTERM);
    const std::optional<int> st = wait_exit(s->pid, 20000);
    if (!st) {
      ::kill(s->pid, SIGKILL);
      wait_exit(s->pid, 5000);
    }
    end_life(*s, "run end", st ? *st : -1);
  }
  stop_threads();
  for (auto& s : slots_) s->proxies.clear();
  try {
    read_fenced_writes();
  } catch (const std::exception& e) {
    if (rig_error.empty())
      observed(mono_ns(), VKind::snapshot_failed, std::string("cannot read the fenced writes: ") + e.what());
    else
      std::cout << "  (the fenced writes could not be read after the rig failed: " << e.what() << ")" << std::endl;
  }
  const History h = history();
  const fault_checker::Report r = fault_checker::check(h);
  report(h, r);
  if (!rig_error.empty()) {
    std::cout << "fault_suite: the rig failed (" << rig_error << "): exit 2; the work dir " << dir_ << " is kept"
              << std::endl;
    return r.violations.empty() ? 2 : 1;
  }
  {
    std::lock_guard<std::mutex> lock(slow_mutex_);
    if (!slow_rig_.empty()) {
      std::cout << "fault_suite: slow steps of the rig (not of the agents):";
      for (const auto& w : slow_rig_) std::cout << " " << w << ";";
      std::cout << " the work dir " << dir_ << " is kept, with PostgreSQL's logs of each" << std::endl;
    }
    if (r.violations.empty() && !o_.keep && slow_rig_.empty()) std::filesystem::remove_all(dir_);
  }
  return r.violations.empty() ? 0 : 1;
}

int usage(const std::string& why) {
  std::cerr << "fault_suite: " << why << "\n"
            << "usage: fault_suite [--seed N] [--duration 60s] [--agents 5] [--ttl 1s] [--renew 250ms]\n"
               "                   [--overlap PERCENT] [--dsn DSN] [--pgdir DIR] [--binary PATH]\n"
               "                   [--only KIND,...] [--keep] [--pair | --start-pair] [--no-writers]\n"
               "  --pair: the database is a primary and a replica (scripts/pg.sh start-pair; detected\n"
               "          from DIR/pair); --start-pair: start such a pair for the run, stop it after\n";
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
    for (auto& p : fault_suite::frozen_pids())
      if (p.load() > 0) ::kill(p.load(), SIGCONT);
    std::fprintf(stderr, "fault_suite: stopped by signal %d\n", sig);
    std::_Exit(128 + sig);
  }).detach();

  Options o;
  o.self = std::filesystem::absolute(argv[0]).string();
  o.binary = LEASE_AGENT_BINARY;
  o.source_dir = LEASE_AGENT_SOURCE_DIR;
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
      else if (a == "--pair") o.pair = true;
      else if (a == "--start-pair") o.start_pair = true;
      else if (a == "--no-writers") o.writers = false;
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
    if (o.dsn.empty() && !o.start_pair) throw std::invalid_argument("no database: set LEASE_AGENT_TEST_DSN or give --dsn");
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
