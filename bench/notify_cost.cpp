// notify_cost: what LISTEN/NOTIFY costs PostgreSQL itself when agents listen, measured, so
// that the project can show (not argue) why schema 5 stopped notifying every renewal
// (sql/PROTOCOL.md, "Watching without notifications").
//
// Why: in PostgreSQL 15 a NOTIFY's commit calls SignalBackends (src/backend/commands/async.c),
// which signals EVERY listening backend of the database that has not read the queue's head,
// whatever channel it listens on; each one wakes up, starts and commits a transaction to read
// the queue (asyncQueueReadAllNotifications) and only then finds out whether any of it is for
// its client. So a channel per cluster keeps the agents' sockets quiet, but the database still
// pays one wake-up per listening backend per notification.
//
// Model: C clusters x A agents per cluster. Every agent is one connection that LISTENs on its
// cluster's channel, "lease_agent.<i>" (i = 1..C), or with --shared-channel on the one channel
// "lease_agent" shared by every cluster, as the agents of schema 4 did. One notifier connection
// sends SELECT pg_notify(<channel of cluster k>, 'x') for each cluster at --rate notifications
// per cluster per second (default 2: one renewal every 500 ms), the C clusters' notifications
// spread evenly in time (C x rate a second in all; when the server falls behind, the notifier
// sends back to back until it is on schedule again). This process drains every listener
// itself (ppoll + PQconsumeInput + PQnotifies) and counts what each one receives.
//
// For each size (--sizes CxA,...; default 1x3,1x10,1x100,1x300,100x3), with all connections up:
//   idle:   2 s settle, then --window (default 10 s) with the same connections and no
//           notification (the baseline);
//   notify: 2 s settle at --rate, then --window at --rate.
// Over each window: PostgreSQL's CPU time (utime+stime from /proc/PID/stat of the postmaster
// and of all its live children, plus the postmaster's cutime+cstime: the children it reaped),
// as % of one core; the notifications sent (completed) vs the target; the notifications
// received by the clients (vs sent x the listeners of the channel); pg_stat_database's
// xact_commit delta for the database. Wake-ups per second = notifications/s x (listening
// backends in the database - 0): the notifier does not listen, so SignalBackends signals all L.
// Then every connection is closed (and their backends are waited for) before the next size.
//
// xact_commit: a listening backend counts its notification transactions in local pending
// statistics that it only flushes (at most once a second) after a client command, so an idle
// listener would never report them. Each listener therefore runs a one-row catalog query
// (kFlushSql: it must touch a relation, or PostgreSQL 15 finds "nothing to flush") just before
// and just after each window (outside the CPU window), and the commits of those statements and
// of the benchmark's own monitor queries are subtracted; the notifier's own counters can be off
// by up to 1 s of its commits.
//
// CPU: the kernel truncates each process's utime and stime to clock ticks (10 ms) in
// /proc/PID/stat, so a freshly started backend that has run 3 ms reads 0, and one that has
// run 13 ms over both fields may read 10: with hundreds of backends that each run a few ms per
// window, the delta is biased LOW by up to 2 ticks per backend (measured on this project's
// machine at 100x3: 47% of a core from /proc/PID/stat, 72% from schedstat). Every figure is
// therefore also given from /proc/PID/schedstat (ns; bench::tree_cpu, the same process tree):
// the *_schedstat fields, and [schedstat ...] on each line. Anything else that runs on the
// server (other databases, other benchmarks on this machine) is counted as well: the idle
// baseline is what takes it out, as far as it is steady.
//
// Run (a server of scripts/pg.sh with enough connections: each size needs listeners + 3):
//   mkdir -p /tmp/pg-notify
//   LEASE_AGENT_PG_CONF="max_connections = 400" scripts/pg.sh start /tmp/pg-notify
//   . /tmp/pg-notify/env
//   build/notify_cost [--dsn DSN] [--pgdata DIR] [--sizes 1x3,1x10,1x100,1x300,100x3]
//                     [--rate 2] [--window 10s] [--shared-channel] [--json FILE]
//   scripts/pg.sh stop /tmp/pg-notify
// --dsn defaults to LEASE_AGENT_TEST_DSN; the postmaster's pid is the first line of
// DIR/postmaster.pid (or DIR/data/postmaster.pid) for --pgdata DIR, default
// $LEASE_AGENT_TEST_PGDIR/data/postmaster.pid; the server must run on this machine (checked:
// the benchmark's backend must be a child of that postmaster). --window takes seconds ("5",
// "2.5") or a duration ("5s", "1500ms", "1m"). Output: one line per size on stdout (progress
// on stderr); --json FILE: {"sizes": [{...}, ...]} (rewritten after each size). Exit 0; 1 when
// a run broke (a connection lost, a statement failed, a wait that timed out); 2 on bad input,
// no usable database or a size that needs more connections than the server allows.
#include <poll.h>
#include <signal.h>
#include <time.h>

#include <libpq-fe.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <stdexcept>

#include "bench_util.h"
#include "settings.h"

namespace {

using bench::Clock;
using bench::one_line;
using json = nlohmann::ordered_json;
using Seconds = std::chrono::duration<double>;

constexpr double kSettleS = 2.0;        // after the connections are up / before each window
constexpr double kDrainS = 1.2;         // after each window: in-flight notifications arrive
constexpr double kRoundLimitS = 20.0;   // the bound of one round of kFlushSql on every listener
constexpr int kConnectTimeoutS = 10;    // libpq's connect_timeout, per connection
constexpr int kMaxListeners = 10000;
// What every listener runs around each window so that its pending statistics are flushed. It
// reads a relation: pgstat_report_stat() returns at once when no relation, SLRU or WAL
// statistics are pending, leaving a bare SELECT 1's commit (and an idle window's) unreported.
constexpr const char* kFlushSql = "SELECT count(*) FROM pg_catalog.pg_namespace";
constexpr double kMaxTotalRate = 20000;  // notifications per second, all clusters

// A failure: one line; code 1 (a run broke) or 2 (bad input, no usable database).
struct Fail : std::runtime_error {
  int code;
  explicit Fail(const std::string& why, int c = 1) : std::runtime_error(why), code(c) {}
};

struct PgFree {
  void operator()(PGconn* c) const { PQfinish(c); }
};
using Conn = std::unique_ptr<PGconn, PgFree>;

struct Options {
  std::string dsn, pgdata, sizes = "1x3,1x10,1x100,1x300,100x3", window_text = "10s", json_file;
  double rate = 2.0;
  bool shared = false;
  double window_s = 10;
};

struct Size {
  int clusters = 0, agents = 0;
  int listeners() const { return clusters * agents; }
  std::string name() const { return std::to_string(clusters) + "x" + std::to_string(agents); }
};

std::string app_name() { return "notify_cost-" + std::to_string(::getpid()); }

Conn connect(const std::string& dsn, const std::string& what) {
  // connect_timeout before dbname: the DSN's own value, if any, wins; application_name after
  // it: ours always (the wait for our backends to end looks for it).
  const std::string timeout = std::to_string(kConnectTimeoutS), app = app_name();
  const char* keys[] = {"connect_timeout", "dbname", "application_name", nullptr};
  const char* vals[] = {timeout.c_str(), dsn.c_str(), app.c_str(), nullptr};
  Conn c(PQconnectdbParams(keys, vals, 1));
  if (!c) throw Fail("cannot connect (" + what + "): out of memory");
  if (PQstatus(c.get()) != CONNECTION_OK)
    throw Fail("cannot connect (" + what + "): " + one_line(PQerrorMessage(c.get())));
  return c;
}

// A blocking statement that must succeed; the rows of its result.
std::vector<std::vector<std::string>> query(PGconn* c, const std::string& sql, const std::string& what) {
  std::unique_ptr<PGresult, decltype(&PQclear)> r(PQexec(c, sql.c_str()), &PQclear);
  const ExecStatusType st = r ? PQresultStatus(r.get()) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
    throw Fail(what + ": " + one_line(r ? PQresultErrorMessage(r.get()) : PQerrorMessage(c)));
  std::vector<std::vector<std::string>> rows;
  for (int i = 0; i < PQntuples(r.get()); ++i) {
    std::vector<std::string> row;
    for (int j = 0; j < PQnfields(r.get()); ++j) row.emplace_back(PQgetvalue(r.get(), i, j));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string quote_ident(PGconn* c, const std::string& name) {
  char* q = PQescapeIdentifier(c, name.c_str(), name.size());
  if (!q) throw Fail("cannot quote " + name + ": " + one_line(PQerrorMessage(c)));
  std::string out(q);
  PQfreemem(q);
  return out;
}

// PostgreSQL's CPU time in clock ticks: utime+stime of the postmaster and of every live child
// (/proc/PID/stat), plus the postmaster's cutime+cstime (the children it has reaped).
struct PgCpu {
  bool ok = false;
  long long ticks = 0;
  int processes = 0;
};

PgCpu pg_cpu(pid_t postmaster) {
  PgCpu t;
  const bench::ProcStat r = bench::proc_stat(postmaster);
  if (!r.ok) return t;
  t.ok = true;
  t.ticks = r.utime + r.stime + r.cutime + r.cstime;
  t.processes = 1;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const bench::ProcStat c = bench::proc_stat(static_cast<pid_t>(std::atoi(name.c_str())));
    if (!c.ok || c.ppid != postmaster) continue;
    t.ticks += c.utime + c.stime;
    ++t.processes;
  }
  return t;
}

// The postmaster's pid from the first line of postmaster.pid: DIR/postmaster.pid, else
// DIR/data/postmaster.pid. 0 and *why when there is none.
pid_t postmaster_pid(const std::string& dir, std::string* file, std::string* why) {
  for (const std::string& f : {dir + "/postmaster.pid", dir + "/data/postmaster.pid"}) {
    std::ifstream in(f);
    if (!in) continue;
    std::string line;
    std::getline(in, line);
    char* end = nullptr;
    const long pid = std::strtol(line.c_str(), &end, 10);
    if (line.empty() || *end != '\0' || pid <= 1 || pid > std::numeric_limits<pid_t>::max()) {
      *why = f + ": first line '" + line + "' is not a pid";
      return 0;
    }
    *file = f;
    return static_cast<pid_t>(pid);
  }
  *why = "no postmaster.pid in " + dir + " nor in " + dir + "/data";
  return 0;
}

double to_seconds(const std::string& text) {  // "5", "2.5" (seconds) or "5s", "1500ms", "1m"
  if (!text.empty() && text.find_first_not_of("0123456789.") == std::string::npos) {
    char* end = nullptr;
    const double v = std::strtod(text.c_str(), &end);
    if (*end != '\0' || !std::isfinite(v)) throw std::invalid_argument("bad duration '" + text + "'");
    return v;
  }
  return static_cast<double>(lease_agent::parse_duration(text).count()) / 1000.0;
}

std::vector<Size> parse_sizes(const std::string& text) {
  std::vector<Size> out;
  std::istringstream in(text);
  std::string one;
  while (std::getline(in, one, ',')) {
    const size_t x = one.find_first_of("xX");
    auto whole = [&](const std::string& s) {
      if (s.empty() || s.size() > 6 || s.find_first_not_of("0123456789") != std::string::npos) return -1;
      return std::atoi(s.c_str());
    };
    const int c = x == std::string::npos ? -1 : whole(one.substr(0, x));
    const int a = x == std::string::npos ? -1 : whole(one.substr(x + 1));
    if (c < 1 || a < 1)
      throw std::invalid_argument("--sizes: bad size '" + one + "': CxA, clusters x agents per cluster, e.g. 100x3");
    if (static_cast<long long>(c) * a > kMaxListeners)
      throw std::invalid_argument("--sizes: " + one + " is more than " + std::to_string(kMaxListeners) + " listeners");
    out.push_back({c, a});
  }
  if (out.empty()) throw std::invalid_argument("--sizes: no size given");
  return out;
}

double round_to(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::round(v * f) / f;
}
json num(double v, int digits) { return std::isfinite(v) ? json(round_to(v, digits)) : json(nullptr); }

std::string fixed(double v, int digits) {
  if (!std::isfinite(v)) return "n/a";
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", digits, v);
  return b;
}

// What one window measured.
struct Window {
  double wall_s = 0;            // of the counts (sent, received, commits)
  double cpu_wall_s = 0, schedstat_wall_s = 0;  // between the /proc readings
  double rate_total = 0;       // the target, notifications per second in all
  long long sent = 0;          // notifications completed in the window
  long long received = 0;      // by all listeners in the window
  long long received_late = 0; // in the drain after the window
  long long per_listener_min = 0, per_listener_max = 0;
  double pg_cpu_s = 0;
  double pg_cpu_schedstat_s = std::nan("");  // the cross-check: bench::tree_cpu (schedstat, ns)
  int pg_processes = 0;
  long long xact_commits = 0;  // minus the benchmark's own statements
};

// One size's connections: a monitor (statistics), a notifier and the listeners.
class Session {
 public:
  Session(const Options& o, const Size& s, pid_t postmaster) : o_(o), size_(s), postmaster_(postmaster) {}

  void open() {
    const auto t0 = Clock::now();
    const double limit_s = 60.0 + 0.2 * size_.listeners();  // the bound of the whole setup
    monitor_ = connect(o_.dsn, "monitor");
    query(monitor_.get(), "SET statement_timeout = '10s'", "monitor");
    notifier_ = connect(o_.dsn, "notifier");
    {
      std::unique_ptr<PGresult, decltype(&PQclear)> r(
          PQprepare(notifier_.get(), "notify", "SELECT pg_notify($1, 'x')", 1, nullptr), &PQclear);
      if (!r || PQresultStatus(r.get()) != PGRES_COMMAND_OK)
        throw Fail("notifier: PREPARE: " + one_line(PQerrorMessage(notifier_.get())));
    }
    for (int k = 0; k < size_.clusters; ++k)
      channels_.push_back(o_.shared ? std::string("lease_agent") : "lease_agent." + std::to_string(k + 1));
    listeners_.reserve(static_cast<size_t>(size_.listeners()));
    for (int i = 0; i < size_.listeners(); ++i) {
      if (Seconds(Clock::now() - t0).count() > limit_s)
        throw Fail(size_.name() + ": the listeners' connections took more than " + fixed(limit_s, 0) + " s (" +
                   std::to_string(i) + " of " + std::to_string(size_.listeners()) + " up)");
      Conn c = connect(o_.dsn, "listener " + std::to_string(i + 1) + " of " + std::to_string(size_.listeners()));
      const std::string& ch = channels_[static_cast<size_t>(i / size_.agents)];
      query(c.get(), "LISTEN " + quote_ident(c.get(), ch), "listener " + std::to_string(i + 1) + ": LISTEN");
      listeners_.push_back(std::move(c));
    }
    received_.assign(listeners_.size(), 0);
    pending_.assign(listeners_.size(), false);
    for (const auto& c : listeners_) fds_.push_back({PQsocket(c.get()), POLLIN, 0});
    fds_.push_back({PQsocket(notifier_.get()), POLLIN, 0});
    for (const auto& f : fds_)
      if (f.fd < 0) throw Fail(size_.name() + ": a connection has no socket");
    std::fprintf(stderr, "notify_cost: %s: %d listeners + notifier + monitor up in %.1f s\n", size_.name().c_str(),
                 size_.listeners(), Seconds(Clock::now() - t0).count());
  }

  // Closes every connection and waits (at most 15 s) until the server has no backend of ours.
  void close() {
    listeners_.clear();
    notifier_.reset();
    monitor_.reset();
    fds_.clear();
    Conn c = connect(o_.dsn, "check");
    const auto end = Clock::now() + std::chrono::seconds(15);
    const std::string sql = "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app_name() +
                            "' AND pid <> pg_backend_pid()";
    for (;;) {
      const auto rows = query(c.get(), sql, "waiting for the backends to end");
      if (rows.at(0).at(0) == "0") return;
      if (Clock::now() >= end) {
        std::fprintf(stderr, "notify_cost: %s: %s backends still there 15 s after closing; going on\n",
                     size_.name().c_str(), rows[0][0].c_str());
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }

  // Settle, then one window at `rate` per cluster (0: idle), then the drain.
  Window measure(double rate) {
    Window w;
    w.rate_total = rate * size_.clusters;
    const bool notify = w.rate_total > 0;
    if (notify) {
      interval_ = 1.0 / w.rate_total;
      schedule_start_ = Clock::now();
      scheduled_ = 0;
    }
    pump(Clock::now() + to_dur(kSettleS), notify);
    flush_round(notify);
    const long long x0 = xact_commit();
    // Each /proc reading is a scan of every process of the machine (tens of ms when it is
    // busy): it is timed at its middle.
    auto mid = [](Clock::time_point a, Clock::time_point b) { return a + (b - a) / 2; };
    const auto ta = Clock::now();
    const PgCpu c0 = pg_cpu(postmaster_);
    const auto tb = Clock::now();
    const bench::TreeCpu e0 = bench::tree_cpu(postmaster_);
    const auto t0 = Clock::now();
    const long long s0 = sent_, r0 = received_total_;
    const std::vector<long long> per0 = received_;

    pump(t0 + to_dur(o_.window_s), notify);

    const long long s1 = sent_, r1 = received_total_;
    const auto td = Clock::now();
    const PgCpu c1 = pg_cpu(postmaster_);
    const auto te = Clock::now();
    const bench::TreeCpu e1 = bench::tree_cpu(postmaster_);
    const auto t1 = Clock::now();
    if (!c0.ok || !c1.ok) throw Fail("cannot read /proc/" + std::to_string(postmaster_) + "/stat: the server is gone");
    w.wall_s = Seconds(td - t0).count();
    w.cpu_wall_s = Seconds(mid(te, td) - mid(ta, tb)).count();
    w.schedstat_wall_s = Seconds(mid(t1, te) - mid(tb, t0)).count();
    w.sent = s1 - s0;
    w.received = r1 - r0;
    w.per_listener_min = std::numeric_limits<long long>::max();
    w.per_listener_max = 0;
    for (size_t i = 0; i < received_.size(); ++i) {
      const long long n = received_[i] - per0[i];
      w.per_listener_min = std::min(w.per_listener_min, n);
      w.per_listener_max = std::max(w.per_listener_max, n);
    }
    if (received_.empty()) w.per_listener_min = 0;
    w.pg_cpu_s = static_cast<double>(c1.ticks - c0.ticks) / static_cast<double>(::sysconf(_SC_CLK_TCK));
    if (e0.ok && e1.ok) w.pg_cpu_schedstat_s = e1.seconds - e0.seconds;
    w.pg_processes = c1.processes;

    // No new notification; what is in flight completes and arrives.
    pump(t1 + to_dur(kDrainS), false);
    if (busy_ && !pump(t1 + to_dur(kDrainS + kRoundLimitS), false, [&] { return !busy_; }))
      throw Fail(size_.name() + ": the notifier's last pg_notify did not complete within " + fixed(kRoundLimitS, 0) +
                 " s");
    w.received_late = received_total_ - r1;
    flush_round(false);
    const long long x1 = xact_commit();
    // Minus the flush query of every listener after the window and the monitor's first reading.
    w.xact_commits = x1 - x0 - static_cast<long long>(listeners_.size()) - 1;
    return w;
  }

 private:
  static Clock::duration to_dur(double s) {
    return std::chrono::duration_cast<Clock::duration>(Seconds(s));
  }

  Clock::time_point due() const {
    return schedule_start_ + to_dur(interval_ * static_cast<double>(scheduled_));
  }

  void send_notify() {
    const std::string& ch = channels_[static_cast<size_t>(scheduled_ % size_.clusters)];
    const char* params[] = {ch.c_str()};
    if (!PQsendQueryPrepared(notifier_.get(), "notify", 1, params, nullptr, nullptr, 0))
      throw Fail("notifier: " + one_line(PQerrorMessage(notifier_.get())));
    ++scheduled_;
    busy_ = true;
    result_ok_ = false;
  }

  void on_notifier() {
    PGconn* c = notifier_.get();
    if (!PQconsumeInput(c)) throw Fail("notifier: connection lost: " + one_line(PQerrorMessage(c)));
    while (busy_ && !PQisBusy(c)) {
      PGresult* r = PQgetResult(c);
      if (!r) {
        busy_ = false;
        if (!result_ok_) throw Fail("notifier: pg_notify returned no result");
        ++sent_;
        break;
      }
      const ExecStatusType st = PQresultStatus(r);
      std::string why = st == PGRES_TUPLES_OK ? "" : one_line(PQresultErrorMessage(r));
      PQclear(r);
      if (st != PGRES_TUPLES_OK) throw Fail("notifier: pg_notify: " + why);
      result_ok_ = true;
    }
    while (PGnotify* n = PQnotifies(c)) PQfreemem(n);
  }

  void on_listener(size_t i) {
    PGconn* c = listeners_[i].get();
    if (!PQconsumeInput(c))
      throw Fail("listener " + std::to_string(i + 1) + ": connection lost: " + one_line(PQerrorMessage(c)));
    while (pending_[i] && !PQisBusy(c)) {
      PGresult* r = PQgetResult(c);
      if (!r) {
        pending_[i] = false;
        break;
      }
      const ExecStatusType st = PQresultStatus(r);
      std::string why = st == PGRES_TUPLES_OK ? "" : one_line(PQresultErrorMessage(r));
      PQclear(r);
      if (st != PGRES_TUPLES_OK) throw Fail("listener " + std::to_string(i + 1) + ": flush query: " + why);
    }
    while (PGnotify* n = PQnotifies(c)) {
      ++received_[i];
      ++received_total_;
      PQfreemem(n);
    }
  }

  // Serves every connection until `until` (or until done() is true: then returns true),
  // sending the notifications that are due when `notify`. Bounded by `until`.
  bool pump(Clock::time_point until, bool notify, const std::function<bool()>& done = nullptr) {
    for (;;) {
      if (done && done()) return true;
      auto now = Clock::now();
      if (notify && !busy_ && now >= due()) {
        send_notify();
        now = Clock::now();
      }
      if (now >= until) return done ? done() : true;
      auto wake = until;
      if (notify && !busy_) wake = std::min(wake, due());
      const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(wake - now).count();
      timespec ts{static_cast<time_t>(std::max<long long>(ns, 0) / 1000000000LL),
                  static_cast<long>(std::max<long long>(ns, 0) % 1000000000LL)};
      for (auto& f : fds_) f.revents = 0;
      const int n = ::ppoll(fds_.data(), fds_.size(), &ts, nullptr);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw Fail(std::string("ppoll: ") + std::strerror(errno));
      }
      if (n == 0) continue;
      for (size_t i = 0; i < listeners_.size(); ++i)
        if (fds_[i].revents) on_listener(i);
      if (fds_.back().revents) on_notifier();
    }
  }

  // kFlushSql on every listener, so that each flushes its pending statistics (its
  // notification transactions' commits) to pg_stat_database; the notifications go on.
  void flush_round(bool notify) {
    for (size_t i = 0; i < listeners_.size(); ++i) {
      if (!PQsendQuery(listeners_[i].get(), kFlushSql))
        throw Fail("listener " + std::to_string(i + 1) + ": " + one_line(PQerrorMessage(listeners_[i].get())));
      pending_[i] = true;
    }
    const bool ok = pump(Clock::now() + to_dur(kRoundLimitS), notify, [&] {
      return std::none_of(pending_.begin(), pending_.end(), [](bool p) { return p; });
    });
    if (!ok) throw Fail(size_.name() + ": the listeners' flush query did not all complete within " +
                        fixed(kRoundLimitS, 0) + " s");
  }

  long long xact_commit() {
    const auto rows = query(monitor_.get(),
                            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
                            "monitor: pg_stat_database");
    if (rows.size() != 1) throw Fail("monitor: no row of pg_stat_database for the database");
    return std::atoll(rows[0][0].c_str());
  }

  const Options& o_;
  Size size_;
  pid_t postmaster_;
  Conn monitor_, notifier_;
  std::vector<Conn> listeners_;
  std::vector<std::string> channels_;  // by cluster
  std::vector<pollfd> fds_;            // the listeners', then the notifier's
  std::vector<long long> received_;    // by listener
  std::vector<bool> pending_;          // by listener: a flush query in flight
  long long received_total_ = 0, sent_ = 0;
  // The notifier: notification number n (from 0) is due at schedule_start_ + n x interval_,
  // for cluster n mod C.
  Clock::time_point schedule_start_{};
  double interval_ = 0;
  long long scheduled_ = 0;
  bool busy_ = false, result_ok_ = false;
};

struct ServerInfo {
  int max_connections = 0, reserved = 0;
  bool superuser = false;
  std::string version, database;
  int other_backends = 0;
};

json size_json(const Size& s, const Options& o, const Window& idle, const Window& w) {
  const int L = s.listeners();
  const double target = o.rate * s.clusters;
  const double pct = w.pg_cpu_s / w.cpu_wall_s * 100.0, idle_pct = idle.pg_cpu_s / idle.cpu_wall_s * 100.0;
  const long long expected = w.sent * (o.shared ? L : s.agents);
  json j;
  j["clusters"] = s.clusters;
  j["agents_per_cluster"] = s.agents;
  j["listeners"] = L;
  j["rate_per_cluster"] = o.rate;
  j["notifies_per_s_target"] = num(target, 3);
  j["notifies_sent"] = w.sent;
  j["notifies_received"] = w.received;
  j["pg_cpu_pct"] = num(pct, 2);
  j["pg_cpu_idle_pct"] = num(idle_pct, 2);
  j["pg_cpu_notify_pct"] = num(pct - idle_pct, 2);
  j["xact_commits_per_s"] = num(static_cast<double>(w.xact_commits) / w.wall_s, 1);
  // More of the same window.
  j["window_s"] = num(w.wall_s, 3);
  j["idle_window_s"] = num(idle.wall_s, 3);
  j["notifies_sent_target"] = num(target * w.wall_s, 1);
  j["notifies_per_s_sent"] = num(static_cast<double>(w.sent) / w.wall_s, 2);
  j["notifies_received_expected"] = expected;
  j["notifies_received_per_listener_min"] = w.per_listener_min;
  j["notifies_received_per_listener_max"] = w.per_listener_max;
  j["notifies_received_after_window"] = w.received_late;
  j["wakeups_per_s"] = num(static_cast<double>(w.sent) / w.wall_s * L, 1);
  j["xact_commits_idle_per_s"] = num(static_cast<double>(idle.xact_commits) / idle.wall_s, 1);
  const double spct = w.pg_cpu_schedstat_s / w.schedstat_wall_s * 100.0,
               sidle = idle.pg_cpu_schedstat_s / idle.schedstat_wall_s * 100.0;
  j["pg_cpu_pct_schedstat"] = num(spct, 2);
  j["pg_cpu_idle_pct_schedstat"] = num(sidle, 2);
  j["pg_cpu_notify_pct_schedstat"] = num(spct - sidle, 2);
  j["pg_processes"] = w.pg_processes;
  return j;
}

std::string size_line(const Size& s, const Options& o, const json& j) {
  auto f = [&](const char* k, int d) { return j[k].is_null() ? std::string("n/a") : fixed(j[k].get<double>(), d); };
  std::ostringstream out;
  out << s.name() << ": " << s.listeners() << " listeners" << (o.shared ? " on one channel" : "")
      << ", notifies/s target " << f("notifies_per_s_target", 1) << " sent " << f("notifies_per_s_sent", 1) << " ("
      << j["notifies_sent"].get<long long>() << " of " << f("notifies_sent_target", 0) << " in "
      << f("window_s", 1) << " s), received " << j["notifies_received"].get<long long>() << " of "
      << j["notifies_received_expected"].get<long long>() << ", wake-ups/s " << f("wakeups_per_s", 0)
      << ", PG CPU % of a core " << f("pg_cpu_pct", 2) << " (idle " << f("pg_cpu_idle_pct", 2) << ", notify +"
      << f("pg_cpu_notify_pct", 2) << ") [schedstat " << f("pg_cpu_pct_schedstat", 2) << ", idle "
      << f("pg_cpu_idle_pct_schedstat", 2) << ", notify +" << f("pg_cpu_notify_pct_schedstat", 2)
      << "], xact commits/s " << f("xact_commits_per_s", 1) << " (idle "
      << f("xact_commits_idle_per_s", 1) << ")";
  return out.str();
}

void write_json(const std::string& file, const json& j) {
  const std::string tmp = file + ".tmp";
  {
    std::ofstream f(tmp, std::ios::trunc);
    f << j.dump(2) << "\n";
    if (!f) throw Fail("cannot write " + tmp);
  }
  if (std::rename(tmp.c_str(), file.c_str()) != 0)
    throw Fail("cannot write " + file + ": " + std::strerror(errno));
}

int run(Options& o, const std::vector<Size>& sizes) {
  // The server: its limits, and that it is the postmaster whose CPU we read.
  std::string pidfile, why;
  const pid_t pm = postmaster_pid(o.pgdata, &pidfile, &why);
  if (pm == 0) throw Fail(why + " (--pgdata, default $LEASE_AGENT_TEST_PGDIR)", 2);
  if (!bench::proc_stat(pm).ok) throw Fail("postmaster " + std::to_string(pm) + " of " + pidfile + " is not running", 2);
  ServerInfo si;
  {
    Conn c;
    try {
      c = connect(o.dsn, "server check");
    } catch (const Fail& e) {
      throw Fail(e.what(), 2);
    }
    const auto rows = query(c.get(),
                            "SELECT current_setting('max_connections'), "
                            "current_setting('superuser_reserved_connections'), "
                            "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user), "
                            "current_setting('server_version'), current_database(), pg_backend_pid(), "
                            "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid())",
                            "server check");
    const auto& r = rows.at(0);
    si.max_connections = std::atoi(r[0].c_str());
    si.reserved = std::atoi(r[1].c_str());
    si.superuser = r[2] == "t";
    si.version = r[3];
    si.database = r[4];
    const pid_t backend = static_cast<pid_t>(std::atoi(r[5].c_str()));
    si.other_backends = std::atoi(r[6].c_str());
    const bench::ProcStat b = bench::proc_stat(backend);
    if (!b.ok || b.ppid != pm)
      throw Fail("the server of the DSN is not the postmaster " + std::to_string(pm) + " of " + pidfile +
                     " (its backend " + std::to_string(backend) +
                     (b.ok ? " is a child of " + std::to_string(b.ppid) : std::string(" is not on this machine")) +
                     "): give --pgdata of that server",
                 2);
  }
  const int allowed = si.max_connections - (si.superuser ? 0 : si.reserved);
  for (const Size& s : sizes)
    if (s.listeners() + 3 > allowed)
      throw Fail("size " + s.name() + " needs " + std::to_string(s.listeners() + 3) + " connections (" +
                     std::to_string(s.listeners()) + " listeners + 3) but the server allows " +
                     std::to_string(allowed) + " (max_connections " + std::to_string(si.max_connections) +
                     (si.superuser ? "" : " - superuser_reserved_connections " + std::to_string(si.reserved)) +
                     "): raise max_connections or drop the size",
                 2);
  std::fprintf(stderr,
               "notify_cost: PostgreSQL %s, database %s, postmaster %d (%s), max_connections %d, %d other client "
               "backend(s) in the database; %s, %g notifications per cluster per second, window %g s, settle %g s; PG "
               "CPU: utime+stime from /proc/PID/stat (tick %ld ms, biased low), [schedstat] from /proc/PID/schedstat\n",
               si.version.c_str(), si.database.c_str(), static_cast<int>(pm), pidfile.c_str(), si.max_connections,
               si.other_backends, o.shared ? "one shared channel 'lease_agent'" : "a channel per cluster", o.rate,
               o.window_s, kSettleS, 1000 / ::sysconf(_SC_CLK_TCK));

  json out;
  out["server_version"] = si.version;
  out["database"] = si.database;
  out["shared_channel"] = o.shared;
  out["rate_per_cluster"] = o.rate;
  out["window_s"] = o.window_s;
  out["settle_s"] = kSettleS;
  out["cpu"] =
      "PostgreSQL: utime+stime (/proc/PID/stat, clock ticks) of the postmaster and its live children plus the "
      "postmaster's cutime+cstime, as % of one core; idle: the same connections, no notification. The kernel "
      "truncates each process's utime and stime to ticks: biased low by up to 2 ticks per backend per window; "
      "*_schedstat: the same tree from /proc/PID/schedstat (ns)";
  out["sizes"] = json::array();
  for (const Size& s : sizes) {
    Session session(o, s, pm);
    session.open();
    std::fprintf(stderr, "notify_cost: %s: idle window\n", s.name().c_str());
    const Window idle = session.measure(0);
    Window w = idle;
    if (o.rate > 0) {
      std::fprintf(stderr, "notify_cost: %s: notify window\n", s.name().c_str());
      w = session.measure(o.rate);
    }
    session.close();
    const json j = size_json(s, o, idle, w);
    out["sizes"].push_back(j);
    std::printf("%s\n", size_line(s, o, j).c_str());
    std::fflush(stdout);
    if (!o.json_file.empty()) write_json(o.json_file, out);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (const char* e = std::getenv("LEASE_AGENT_TEST_DSN")) o.dsn = e;
  if (const char* e = std::getenv("LEASE_AGENT_TEST_PGDIR")) o.pgdata = std::string(e) + "/data";
  CLI::App app{"notify_cost: what LISTEN/NOTIFY costs PostgreSQL when C clusters x A agents listen"};
  app.add_option("--dsn", o.dsn, "the database (default: LEASE_AGENT_TEST_DSN)");
  app.add_option("--pgdata", o.pgdata,
                 "the server's data directory, for the postmaster's pid in DIR/postmaster.pid (or "
                 "DIR/data/postmaster.pid); default $LEASE_AGENT_TEST_PGDIR/data");
  app.add_option("--sizes", o.sizes, "comma-separated CxA: clusters x agents per cluster (default " + o.sizes + ")");
  app.add_option("--rate", o.rate, "notifications per cluster per second (default 2; 0: idle only)");
  app.add_option("--window", o.window_text, "each measurement, seconds or a duration (default 10s)");
  app.add_flag("--shared-channel", o.shared, "every agent listens on the one channel 'lease_agent' (schema 4)");
  app.add_option("--json", o.json_file, "write the results to FILE");
  if (const auto status = bench::parse_flags(app, argc, argv, "notify_cost")) return *status;
  auto bad = [](const std::string& why) {
    std::fprintf(stderr, "notify_cost: %s\n", one_line(why).c_str());
    return 2;
  };
  std::vector<Size> sizes;
  try {
    o.window_s = to_seconds(o.window_text);
    sizes = parse_sizes(o.sizes);
  } catch (const std::exception& e) {
    return bad(std::string(e.what()).rfind("--", 0) == 0 ? e.what() : "--window: " + std::string(e.what()));
  }
  if (!(o.window_s >= 1 && o.window_s <= 3600)) return bad("--window: between 1 s and 1 h");
  if (!(o.rate >= 0 && o.rate <= 1000)) return bad("--rate: between 0 and 1000 notifications per cluster per second");
  for (const Size& s : sizes)
    if (o.rate * s.clusters > kMaxTotalRate)
      return bad("--rate " + fixed(o.rate, 3) + " x " + std::to_string(s.clusters) + " clusters is more than " +
                 fixed(kMaxTotalRate, 0) + " notifications per second");
  if (o.dsn.empty()) return bad("no database: give --dsn or set LEASE_AGENT_TEST_DSN");
  if (o.pgdata.empty()) return bad("no server directory: give --pgdata or set LEASE_AGENT_TEST_PGDIR");
  if (!o.json_file.empty()) {
    std::ofstream f(o.json_file, std::ios::app);
    if (!f) return bad("cannot write " + o.json_file + " (--json)");
  }
  ::signal(SIGPIPE, SIG_IGN);
  try {
    return run(o, sizes);
  } catch (const Fail& e) {
    std::fprintf(stderr, "notify_cost: %s\n", one_line(e.what()).c_str());
    return e.code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "notify_cost: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}
