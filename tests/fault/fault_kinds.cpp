// Inject and heal of every fault kind (fault_kinds.h).
#include "fault_kinds.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace fault_suite {

std::array<std::atomic<pid_t>, kMaxFrozen>& frozen_pids() {
  static std::array<std::atomic<pid_t>, kMaxFrozen> pids{};
  return pids;
}

namespace {

std::mutex& frozen_mu() {
  static std::mutex mu;
  return mu;
}

std::vector<pid_t> children_of(pid_t parent) {
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

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ' || s.back() == '\r')) s.pop_back();
  return s;
}

}  // namespace

i64 Faults::rand_ms(double lo_ttl, double hi_ttl) {
  std::uniform_real_distribution<double> d(lo_ttl, hi_ttl);
  return static_cast<i64>(d(e_.rng) * static_cast<double>(e_.o.ttl_ms));
}

// scripts/pg.sh start-pair writes the name of the current primary's directory into a
// file of DIR (README of scripts/pg.sh); a single server's data is DIR/data.
std::string Faults::primary_data_dir() const {
  const std::string& dir = e_.o.pgdir;
  if (!e_.o.pair) return dir + "/data";
  for (const char* name : {"primary"}) {
    std::ifstream in(dir + "/" + name);
    std::string v;
    if (!std::getline(in, v)) continue;
    v = trim(v);
    const std::string base = v.rfind('/', 0) == 0 ? v : dir + "/" + v;
    if (std::filesystem::exists(base + "/postmaster.pid") || std::filesystem::exists(base + "/PG_VERSION")) return base;
    return base + "/data";
  }
  throw std::runtime_error("cannot tell the current primary from " + dir + "/primary");
}

pid_t Faults::postmaster_pid() const {
  const std::string path = primary_data_dir() + "/postmaster.pid";
  std::ifstream in(path);
  long long pm = 0;
  if (!(in >> pm) || pm <= 1) throw std::runtime_error("cannot read " + path);
  return static_cast<pid_t>(pm);
}

void Faults::freeze(pid_t pid) {
  if (::kill(pid, SIGSTOP) != 0) {
    thaw_all();
    throw std::runtime_error("pg-freeze: cannot stop PostgreSQL process " + std::to_string(pid) + ": " +
                             std::strerror(errno));
  }
  std::lock_guard<std::mutex> l(frozen_mu());
  frozen_.push_back(pid);
  if (frozen_.size() <= kMaxFrozen) frozen_pids()[frozen_.size() - 1] = pid;
}

void Faults::thaw_all() {
  std::lock_guard<std::mutex> l(frozen_mu());
  for (pid_t pid : frozen_) ::kill(pid, SIGCONT);
  frozen_.clear();
  for (auto& p : frozen_pids()) p = 0;
}

int Faults::pg_script(const std::vector<std::string>& args, const std::string& log, i64 limit_ms) {
  std::vector<std::string> argv{"/bin/bash", e_.o.source_dir + "/scripts/pg.sh"};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = spawn(argv, {}, log);
  const std::optional<int> st = wait_healing(pid, limit_ms);
  if (st) return *st;
  ::kill(pid, SIGKILL);
  wait_exit(pid, 5000);
  return -1;
}

std::optional<int> Faults::wait_healing(pid_t pid, i64 limit_ms) {
  const i64 end = mono_ns() + ms_to_ns(limit_ms);
  if (heal_first_) {
    const std::optional<int> st = wait_exit(pid, std::clamp<i64>((heal_first_at_ - mono_ns()) / 1000000, 0, limit_ms));
    if (st) return st;
    const std::function<void()> heal = std::move(heal_first_);
    heal_first_ = nullptr;
    heal();
  }
  return wait_exit(pid, std::max<i64>(0, (end - mono_ns()) / 1000000));
}

// log-stall: the relay stops reading the agent's stdout/stderr pipe, and the pipe is
// filled to the brim through a second, non-blocking open of its write end (the agent's
// own end stays blocking, so its next log line blocks). The filler is NUL bytes, which
// the relay drops when it reads again; the agent never writes a NUL.
void Faults::stall_log(Slot& s, Fault& f) {
  {
    std::unique_lock<std::mutex> l(s.log_mu);
    s.stall = true;
    // The relay parks within one poll interval (20 ms); bounded anyway.
    if (!s.log_cv.wait_for(l, Ms(2000), [&] { return s.relay_parked; }))
      throw std::runtime_error("log-stall: the relay of " + s.node + " did not stop");
  }
  const std::string path = "/proc/self/fd/" + std::to_string(s.out_write);
  s.filler = ::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
  if (s.filler < 0) throw std::runtime_error("log-stall: cannot open " + path + ": " + std::strerror(errno));
  static const char zeros[4096] = {};
  long long filled = 0;
  // A pipe holds at most /proc/sys/fs/pipe-max-size (1 MiB by default): bounded.
  for (int i = 0; i < 4096; ++i) {
    const ssize_t n = ::write(s.filler, zeros, sizeof zeros);
    if (n <= 0) break;
    filled += n;
  }
  for (int i = 0; i < 8192; ++i) {  // what is left is less than a page
    if (::write(s.filler, zeros, 1) != 1) break;
    ++filled;
  }
  std::ostringstream d;
  d << "stderr pipe filled (" << filled << " bytes), unread for " << f.hold_ms << "ms";
  f.detail = d.str();
}

void Faults::unstall_log(Slot& s) {
  std::lock_guard<std::mutex> l(s.log_mu);
  if (s.filler >= 0) ::close(s.filler);
  s.filler = -1;
  s.stall = false;
  s.log_cv.notify_all();
}

void Faults::begin(Fault& f, i64 heal_first_at, const std::function<void()>& heal_first) {
  heal_first_at_ = heal_first_at;
  heal_first_ = heal_first;
  struct Clear {
    Faults& self;
    ~Clear() { self.heal_first_ = nullptr; }
  } clear{*this};
  Slot* s = f.target >= 0 ? e_.slots[static_cast<std::size_t>(f.target)].get() : nullptr;
  f.hold_ms = rand_ms(0.2, 2.5);
  std::ostringstream detail;
  switch (f.kind) {
    case Kind::kill9:
    case Kind::sigterm: {
      if (s->pid <= 0) throw std::logic_error("no process to signal for " + s->node);
      f.start = mono_ns();
      ::kill(s->pid, f.kind == Kind::kill9 ? SIGKILL : SIGTERM);
      const std::optional<int> st = wait_healing(s->pid, 20000);
      if (!st) {
        ::kill(s->pid, SIGKILL);
        wait_exit(s->pid, 5000);
      }
      e_.end_life(*s, kind_name(f.kind), st ? *st : -1);
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
      s->set_mode(m);
      detail << "for " << f.hold_ms << "ms";
      break;
    }
    case Kind::latency: {
      const i64 lat = rand_ms(0.05, 1.0);
      f.latency_ms = lat;
      f.start = mono_ns();
      s->set_latency(Ms(lat));
      detail << lat << "ms each way for " << f.hold_ms << "ms";
      break;
    }
    case Kind::pg_restart_fast:
    case Kind::pg_restart_immediate: {
      const std::string mode = f.kind == Kind::pg_restart_fast ? "fast" : "immediate";
      f.start = mono_ns();
      const int rc = pg_script({"restart", e_.o.pgdir, mode}, e_.dir + "/pg-restart.log", 60000);
      if (rc != 0) keep_pg_evidence("");
      if (rc != 0)
        throw std::runtime_error("scripts/pg.sh restart failed (status " + std::to_string(rc) + "), see " + e_.dir +
                                 "/pg-restart.log");
      f.hold_ms = 0;
      detail << "down " << (mono_ns() - f.start) / 1000000 << "ms";
      break;
    }
    case Kind::pg_failover:
    case Kind::pg_switchover: {
      // An immediate stop of the primary and the promotion of the replica: with
      // synchronous_commit off (async pair) commits acknowledged by the old primary are
      // lost. The fast one (a switchover) first sends every WAL record to the replica.
      const std::string how = f.kind == Kind::pg_failover ? "immediate" : "fast";
      f.start = mono_ns();
      const int rc = pg_script({"failover", e_.o.pgdir, how}, e_.dir + "/pg-failover.log", 120000);
      if (rc != 0) keep_pg_evidence("");
      if (rc != 0)
        throw std::runtime_error("scripts/pg.sh failover failed (status " + std::to_string(rc) + "), see " + e_.dir +
                                 "/pg-failover.log");
      f.hold_ms = 0;
      // scripts/pg.sh records when the stop and `pg_ctl promote -w` returned, on CLOCK_MONOTONIC.
      auto read_ns = [&](const std::string& name) {
        std::ifstream in(e_.o.pgdir + "/" + name);
        long long ns = 0;
        return in >> ns && ns > f.start ? ns : 0LL;
      };
      const long long end = mono_ns(), stopped = read_ns("stopped_at"), promoted = read_ns("promoted_at");
      if (promoted > 0) f.promoted_at = promoted;
      detail << how << ", " << (end - f.start) / 1000000 << "ms";
      if (stopped > 0 && promoted >= stopped) {
        detail << " (stop " << (stopped - f.start) / 1000000 << ", promote " << (promoted - stopped) / 1000000
               << ", rebuild " << (end - promoted) / 1000000 << ")";
      }
      detail << ", primary now " << primary_data_dir();
      // A step of 10 s is the rig's trouble, not the agents': once it cost a minute without a
      // primary (a pg_ctl wait of ~60 s, cause unknown). Keep what shows why.
      if (end - f.start > 10'000'000'000LL) {
        keep_pg_evidence("-slow-" + std::to_string(f.start / 1000000));
        if (e_.slow_rig) e_.slow_rig(std::string(f.kind == Kind::pg_failover ? "pg-failover" : "pg-switchover") +
                                     " took " + std::to_string((end - f.start) / 1000000) + "ms");
      }
      if (e_.changed_primary) e_.changed_primary(primary_data_dir());
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
      Db db(e_.o.dsn, "fault_suite");
      std::string names;
      for (auto& sl : e_.slots) names += (names.empty() ? "" : ",") + sql_quote("lease-agent " + sl->node);
      f.start = mono_ns();
      const Rows r = db.exec("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name IN (" +
                             names + ")");
      f.hold_ms = 0;
      detail << (r.empty() ? "0" : r[0][0]) << " sessions";
      break;
    }
    case Kind::pg_backend_crash: {
      // kill -9 of one agent's backend: the postmaster then ends every session and runs
      // crash recovery, which loses asynchronous commits, without a restart.
      Db db(e_.o.dsn, "fault_suite");
      const auto& victim = e_.slots[std::uniform_int_distribution<std::size_t>(0, e_.slots.size() - 1)(e_.rng)];
      const Rows r = db.exec("SELECT pid FROM pg_stat_activity WHERE application_name = " +
                             sql_quote("lease-agent " + victim->node) + " ORDER BY backend_start DESC LIMIT 1");
      f.start = mono_ns();
      f.hold_ms = 0;
      if (r.empty() || r[0][0].empty()) {
        // No session now (it is reconnecting): any backend of the agents' will do.
        detail << "no session of " << victim->node << "; ";
        const Rows any = db.exec("SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'lease-agent %' LIMIT 1");
        if (any.empty()) {
          detail << "no agent's session at all: nothing killed";
          break;
        }
        ::kill(static_cast<pid_t>(std::stoll(any[0][0])), SIGKILL);
        detail << "killed backend " << any[0][0];
        break;
      }
      const pid_t pid = static_cast<pid_t>(std::stoll(r[0][0]));
      if (::kill(pid, SIGKILL) != 0)
        throw std::runtime_error("pg-backend-crash: cannot kill backend " + r[0][0] + ": " + std::strerror(errno));
      detail << "killed backend " << pid << " of " << victim->node;
      break;
    }
    case Kind::lease_row_lock:
    case Kind::node_table_lock: {
      lock_db_ = std::make_unique<Db>(e_.o.dsn, "fault_suite lock");
      f.hold_ms = rand_ms(0.1, 2.0);
      lock_db_->exec("BEGIN");
      f.start = mono_ns();
      if (f.kind == Kind::lease_row_lock)
        lock_db_->exec("SELECT 1 FROM lease_agent.lease WHERE cluster = " + sql_quote(e_.cluster) + " FOR UPDATE");
      else
        lock_db_->exec("LOCK TABLE lease_agent.node IN SHARE ROW EXCLUSIVE MODE");
      detail << "held " << f.hold_ms << "ms";
      break;
    }
    case Kind::clock_jump: {
      static const char* jumps[] = {"+2h", "-1h", "+3d", "-10d", "+90s", "-30s"};
      const char* j = jumps[std::uniform_int_distribution<int>(0, 5)(e_.rng)];
      f.start = mono_ns();
      std::ofstream(s->faketime_file) << j << "\n";
      detail << "wall clock " << j << " for " << f.hold_ms << "ms, then back";
      break;
    }
    case Kind::log_stall:
      f.start = mono_ns();
      stall_log(*s, f);
      return;
  }
  f.detail = detail.str();
}

void Faults::end(Fault& f) {
  Slot* s = f.target >= 0 ? e_.slots[static_cast<std::size_t>(f.target)].get() : nullptr;
  f.heal = mono_ns();
  switch (f.kind) {
    case Kind::kill9:
    case Kind::sigterm:
      e_.start_agent(*s);
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
      s->set_mode(FaultProxy::Mode::pass);
      break;
    case Kind::latency:
      s->set_latency(Ms(0));
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
    case Kind::log_stall:
      unstall_log(*s);
      break;
    case Kind::pg_restart_fast:
    case Kind::pg_restart_immediate:
    case Kind::terminate_backends:
    case Kind::pg_backend_crash:
    case Kind::pg_failover:
    case Kind::pg_switchover:
      break;  // over when begin() returned
  }
}

// For the post-mortem: PostgreSQL's processes, logs and pg.sh's failover log, into the work dir
// (with `tag` in the names).
void Faults::keep_pg_evidence(const std::string& tag) {
  const std::string d = "'" + e_.dir + "'", pg = "'" + e_.o.pgdir + "'";
  const std::string keep = "ps -eo pid,ppid,stat,wchan:20,cmd | grep -i postgres > " + d + "/pg-processes" + tag +
                           ".txt 2>&1; for f in " + pg + "/postgres.log " + pg + "/*/postgres.log " + pg +
                           "/failovers.log; do [ -f \"$f\" ] && cp \"$f\" " + d +
                           "/\"$(basename \"$(dirname \"$f\")\")-$(basename \"$f\" .log)" + tag + ".log\"; done";
  [[maybe_unused]] const int ignored = std::system(keep.c_str());
}

}  // namespace fault_suite
