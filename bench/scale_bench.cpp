// scale_bench: what M clusters x N agents cost one PostgreSQL in the steady state, and how
// fast a master is replaced among them, with every agent kept running across the runs.
//
//   build/scale_bench [--dsn DSN] [--binary build/lease-agent] [--clusters 1] [--agents 3]
//                     [--ttl 2s] [--renew 500ms] [--window 10s] [--runs 20]
//                     [--scenario kill,term,stop,switchover | none] [--json FILE] [--label TEXT]
//                     [--pgdir DIR]
//
// Start: every agent once (`lease-agent run --cluster bench-<pid>-<i> --node n<j> ...`), n1 of
// every cluster, then n2 of every cluster once all n1 are registered, and so on: the line of
// succession of each cluster is n1, n2, ... Then until every cluster has a master in
// lease_agent.master and every agent's /status says "may_acquire":true.
//
// Steady state, over --window, with nothing touching the database but two snapshots (one
// statement each, after pg_stat_statements_reset()): the agents' statements (every entry of
// pg_stat_statements of this database but the benchmark's own, which carry the comment
// /* scale_bench */), commits (pg_stat_database.xact_commit), WAL (pg_current_wal_lsn() and
// pg_stat_wal), the renewals (the growth of the clusters' lease.version: +1 per write of a
// lease row), the CPU time of PostgreSQL (the postmaster of --pgdir's postmaster.pid, default
// $LEASE_AGENT_TEST_PGDIR, and its children, from /proc) and of every agent, and at the end
// every agent's VmRSS and Pss. Caveats, printed too: pg_stat_database and pg_stat_wal lag by
// up to ~1 s per backend (PostgreSQL 15 flushes a backend's counters at most once a second),
// which mostly cancels between the two snapshots, and they count the transaction in which a
// listening backend reads its notifications (each lease write notifies every agent of the
// cluster); agents' CPU times are in clock ticks (10 ms); PostgreSQL's counts the postmaster's
// live children (schedstat, ns) and what it reaped (cutime), so a backend that ended in the
// window but was not yet reaped is missed.
//
// Takeovers, the agents kept running: run r faults the master of cluster r mod M: kill
// (SIGKILL), term (SIGTERM), stop (SIGSTOP until a new master is in lease_agent.master and
// answers 200 on /master, then SIGCONT: the old one must answer 503 at once, and never 200
// after), switchover (lease_agent.switchover(cluster, <next in line>); also the request's
// commit to the new term on the database's clock). The time is from just before the fault to
// the first poll (one connection, every ~0.2 ms, at most 3 ttl) that shows another node in
// lease_agent.master, and to that node's first 200 on /master (after a hand-off, watched on the
// expected successor from the fault on, every ~0.2 ms). Meanwhile a thread samples
// /master of the next in line (and of the actual successor, if another), then of the old
// master; a sample with two 200s counts. A killed or cleanly stopped agent is started again
// under its name (the back of the line); the next run waits until it is registered, may
// acquire, the cluster has a master, and one renew more.
//
// Output: one line per figure; --json FILE: every figure and raw count. The agents' logs are
// kept (their directory named) after a broken run, or always with SCALE_BENCH_KEEP_LOGS set. Exit 0; 1 when a run
// broke (an agent not up, no takeover, two 200s, a 200 after resume, an agent that exited by
// itself); 2 bad arguments or no usable database.
#include <sys/resource.h>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <pqxx/pqxx>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <numeric>
#include <memory>
#include <optional>

#include "bench_util.h"
#include "settings.h"

namespace {

using namespace bench;
using json = nlohmann::ordered_json;
using std::chrono::milliseconds;
using std::chrono::microseconds;

constexpr int kMaxAgents = 3000;
std::atomic<pid_t> g_pids[kMaxAgents];  // by agent slot; 0: none

// SIGINT/SIGTERM: every agent killed (a stopped one too) and reaped, then out.
extern "C" void on_signal(int sig) {
  for (auto& p : g_pids) {
    const pid_t pid = p.load();
    if (pid > 0) {
      ::kill(pid, SIGKILL);
      ::kill(pid, SIGCONT);
    }
  }
  for (auto& p : g_pids) {
    const pid_t pid = p.load();
    if (pid > 0) ::waitpid(pid, nullptr, 0);
  }
  static const char msg[] = "scale_bench: interrupted: every agent killed\n";
  (void)!::write(2, msg, sizeof msg - 1);
  ::_exit(128 + sig);
}

struct Agent {
  int cluster = 0;
  int slot = 0;
  std::string node;
  int port = 0;
  pid_t pid = -1;
  std::string log;
};

struct Options {
  std::string dsn, binary, ttl_s = "2s", renew_s = "500ms", window_s = "10s", scenarios = "kill,term,stop,switchover",
                           json_file, label, pgdir;
  int clusters = 1, agents = 3, runs = 20;
  milliseconds ttl{}, renew{}, window{};
};

struct Fail : std::runtime_error {
  using std::runtime_error::runtime_error;
};

double nan() { return std::nan(""); }
json num(double v) { return std::isfinite(v) ? json(v) : json(nullptr); }
double round_to(double v, int digits) {
  const double f = std::pow(10.0, digits);
  return std::isfinite(v) ? std::round(v * f) / f : v;
}

long long lsn_bytes(const std::string& lsn) {  // "X/Y" in hex
  const size_t slash = lsn.find('/');
  if (slash == std::string::npos) return 0;
  return static_cast<long long>((std::stoull(lsn.substr(0, slash), nullptr, 16) << 32) |
                                std::stoull(lsn.substr(slash + 1), nullptr, 16));
}

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {}

  int run();

 private:
  Options o_;
  std::string prefix_;  // bench-<pid>-
  std::vector<std::string> clusters_;
  std::vector<Agent> agents_;
  std::unique_ptr<pqxx::connection> db_;
  std::string tmp_;
  int broken_ = 0;          // runs or steps that broke
  int self_exits_ = 0;      // agents that exited by themselves
  double startup_s_ = nan();
  json out_;

  // ---- processes
  std::vector<std::string> agent_args(const Agent& a) const {
    return {o_.binary, "run", "--dsn", o_.dsn, "--cluster", clusters_[a.cluster], "--node", a.node, "--ttl", o_.ttl_s,
            "--renew", o_.renew_s, "--http", "127.0.0.1:" + std::to_string(a.port)};
  }
  void start(Agent& a) {
    a.port = free_port();
    if (a.port == 0) throw Fail("no free TCP port on 127.0.0.1");
    a.pid = spawn(agent_args(a), a.log);
    if (a.pid <= 0) throw Fail("cannot start " + o_.binary + ": " + std::strerror(errno));
    g_pids[a.slot] = a.pid;
  }
  // The exit status (as waitpid gives it) when the agent has ended; reaps it.
  std::optional<int> ended(Agent& a) {
    if (a.pid <= 0) return 0;
    int st = 0;
    if (::waitpid(a.pid, &st, WNOHANG) != a.pid) return std::nullopt;
    a.pid = -1;
    g_pids[a.slot] = 0;
    return st;
  }
  void reap(Agent& a, milliseconds limit) {  // after a signal: wait, then SIGKILL
    if (a.pid <= 0) return;
    if (!await([&] { return ended(a).has_value(); }, limit)) {
      ::kill(a.pid, SIGKILL);
      ::kill(a.pid, SIGCONT);
      ::waitpid(a.pid, nullptr, 0);
      a.pid = -1;
      g_pids[a.slot] = 0;
    }
  }
  static std::string describe_status(int st) {
    if (WIFEXITED(st)) return "exit status " + std::to_string(WEXITSTATUS(st));
    if (WIFSIGNALED(st)) return std::string("signal ") + ::strsignal(WTERMSIG(st));
    return "status " + std::to_string(st);
  }
  std::string who(const Agent& a) const { return clusters_[a.cluster] + "/" + a.node; }
  void kill_all() {
    for (Agent& a : agents_)
      if (a.pid > 0) {
        ::kill(a.pid, SIGKILL);
        ::kill(a.pid, SIGCONT);
      }
    for (Agent& a : agents_)
      if (a.pid > 0) {
        ::waitpid(a.pid, nullptr, 0);
        a.pid = -1;
        g_pids[a.slot] = 0;
      }
  }
  Agent* find(int cluster, const std::string& node) {
    for (int j = 0; j < o_.agents; ++j) {
      Agent& a = agents_[static_cast<size_t>(cluster * o_.agents + j)];
      if (a.node == node) return &a;
    }
    return nullptr;
  }

  // ---- agents' HTTP
  static bool may_acquire(const Agent& a) {
    const Reply r = http_get(a.port, "/status");
    if (r.status != 200) return false;
    const auto j = nlohmann::json::parse(r.body, nullptr, false);
    return !j.is_discarded() && j.is_object() && j.value("may_acquire", false) == true;
  }

  // ---- the database (the main thread only)
  pqxx::result q(const std::string& sql) {
    pqxx::nontransaction tx(*db_);
    return tx.exec(sql);
  }
  std::string quote(const std::string& s) { return db_->quote(s); }
  std::string master_of(int cluster) {
    pqxx::nontransaction tx(*db_);
    const auto r = tx.exec_prepared("master", clusters_[static_cast<size_t>(cluster)]);
    return r.empty() || r[0][0].is_null() ? "" : r[0][0].as<std::string>();
  }
  std::string channel_of(int cluster) {
    pqxx::nontransaction tx(*db_);
    return tx.exec("SELECT lease_agent.channel(" + tx.quote(clusters_[static_cast<size_t>(cluster)]) + ")")[0][0]
        .as<std::string>();
  }
  // LISTENs on a cluster's channel while it lives; the count of what arrived is
  // connection_base::await_notification's.
  struct Wake : pqxx::notification_receiver {
    Wake(pqxx::connection_base& c, const std::string& channel) : pqxx::notification_receiver(c, channel) {}
    void operator()(const std::string&, int) override {}
  };
  long long registered(const std::string& node) {
    pqxx::nontransaction tx(*db_);
    return tx.exec_prepared("registered", prefix_ + "%", node)[0][0].as<long long>();
  }
  long long count_like(const std::string& what) {
    pqxx::nontransaction tx(*db_);
    return tx.exec_prepared(what, prefix_ + "%")[0][0].as<long long>();
  }

  void connect();
  void start_all();
  json steady();
  json snapshot_db(bool stmts);
  json takeovers();
  void restore(Agent& a, bool restarted, const std::string& since_db);
  void check_alive();
  void print_steady(const json& s);
};

void Bench::connect() {
  try {
    db_ = std::make_unique<pqxx::connection>(o_.dsn);
    const auto r = q("SELECT to_regclass('lease_agent.master') IS NOT NULL, "
                     "to_regprocedure('lease_agent.switchover(text,text,text)') IS NOT NULL");
    if (!r[0][0].as<bool>() || !r[0][1].as<bool>())
      throw Fail("the database has no lease_agent schema with switchover; apply it first: lease-agent schema apply --dsn DSN");
  } catch (const Fail&) {
    throw;
  } catch (const std::exception& e) {
    throw Fail("cannot use the database (--dsn or LEASE_AGENT_TEST_DSN): " + one_line(e.what()));
  }
  db_->prepare("master", "SELECT node FROM lease_agent.master WHERE cluster = $1");
  db_->prepare("next",
               "SELECT node FROM lease_agent.node WHERE cluster = $1 AND expires_at > clock_timestamp() "
               "AND node <> $2 ORDER BY registered_at, node LIMIT 1");
  db_->prepare("registered",
               "SELECT count(*) FROM lease_agent.node WHERE cluster LIKE $1 AND node = $2 "
               "AND expires_at > clock_timestamp()");
  db_->prepare("masters", "SELECT count(*) FROM lease_agent.master WHERE cluster LIKE $1");
  db_->prepare("since",
               "SELECT count(*) FROM lease_agent.node WHERE cluster = $1 AND node = $2 "
               "AND registered_at > $3::timestamptz AND expires_at > clock_timestamp()");
  db_->prepare("live",
               "SELECT count(*) FROM lease_agent.node WHERE cluster = $1 AND node = $2 "
               "AND expires_at > clock_timestamp()");
}

void Bench::start_all() {
  const int total = o_.clusters * o_.agents;
  agents_.resize(static_cast<size_t>(total));
  for (int c = 0; c < o_.clusters; ++c) {
    clusters_.push_back(prefix_ + std::to_string(c));
    for (int j = 0; j < o_.agents; ++j) {
      Agent& a = agents_[static_cast<size_t>(c * o_.agents + j)];
      a.cluster = c;
      a.slot = c * o_.agents + j;
      a.node = "n" + std::to_string(j + 1);
      a.log = tmp_ + "/" + std::to_string(c) + "-" + a.node + ".log";
    }
  }
  const auto t0 = Clock::now();
  // Round j: n<j> of every cluster, all registered before the next round starts.
  for (int j = 0; j < o_.agents; ++j) {
    std::map<int, int> tries;
    for (int c = 0; c < o_.clusters; ++c) start(agents_[static_cast<size_t>(c * o_.agents + j)]);
    const std::string node = "n" + std::to_string(j + 1);
    const auto limit = milliseconds(10000 + 50 * o_.clusters);
    const bool ok = await(
        [&] {
          for (int c = 0; c < o_.clusters; ++c) {
            Agent& a = agents_[static_cast<size_t>(c * o_.agents + j)];
            if (auto st = ended(a)) {
              // Exit 2: its --http address could not be bound (a port taken meanwhile).
              if (WIFEXITED(*st) && WEXITSTATUS(*st) == 2 && ++tries[c] < 4) {
                start(a);
                continue;
              }
              throw Fail(who(a) + " exited during start-up (" + describe_status(*st) + "): " + tail_of(a.log));
            }
          }
          return registered(node) == o_.clusters ||
                 (std::this_thread::sleep_for(milliseconds(2)), false);
        },
        limit);
    if (!ok)
      throw Fail("agents " + node + " not all registered within " + std::to_string(limit.count()) + " ms (" +
                 std::to_string(registered(node)) + " of " + std::to_string(o_.clusters) + ")");
  }
  // Every cluster with a master, every agent ttl into its connection.
  std::vector<char> ready(static_cast<size_t>(total), 0);
  int ready_count = 0;
  const auto limit = milliseconds(3 * o_.ttl.count() + 10000 + 100LL * total);
  const bool ok = await(
      [&] {
        for (Agent& a : agents_)
          if (auto st = ended(a))
            throw Fail(who(a) + " exited during start-up (" + describe_status(*st) + "): " + tail_of(a.log));
        for (size_t i = 0; i < agents_.size(); ++i)
          if (!ready[i] && may_acquire(agents_[i])) {
            ready[i] = 1;
            ++ready_count;
          }
        if (ready_count == total && count_like("masters") == o_.clusters) return true;
        std::this_thread::sleep_for(milliseconds(20));
        return false;
      },
      limit);
  if (!ok)
    throw Fail("not up within " + std::to_string(limit.count()) + " ms: " + std::to_string(ready_count) + " of " +
               std::to_string(total) + " agents may acquire, " + std::to_string(count_like("masters")) + " of " +
               std::to_string(o_.clusters) + " clusters have a master");
  startup_s_ = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("start-up: %d agents (%d x %d) registered in order, every cluster with a master and every agent "
              "may_acquire after %.1f s\n",
              total, o_.clusters, o_.agents, startup_s_);
  std::fflush(stdout);
}

// One statement: the counters of the database, WAL, the clusters' lease versions, and (when
// `stmts`) pg_stat_statements of this database without the benchmark's own entries.
json Bench::snapshot_db(bool stmts) {
  std::string sql =
      "SELECT /* scale_bench */ json_build_object("
      "'now', extract(epoch FROM clock_timestamp()), "
      "'commits', (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), "
      "'rollbacks', (SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()), "
      "'wal_records', (SELECT wal_records FROM pg_stat_wal), "
      "'wal_bytes', (SELECT wal_bytes FROM pg_stat_wal), "
      "'lsn', pg_current_wal_lsn()::text, "
      "'versions', (SELECT coalesce(sum(version), 0) FROM lease_agent.lease WHERE cluster LIKE " +
      quote(prefix_ + "%") + "), 'leases', (SELECT count(*) FROM lease_agent.lease WHERE cluster LIKE " +
      quote(prefix_ + "%") + ")";
  if (stmts)
    sql +=
        ", 'stmts', (SELECT coalesce(json_agg(json_build_object('id', s.queryid::text, 'user', s.userid, "
        "'query', s.query, 'calls', s.calls, 'rows', s.rows, 'ms', s.total_exec_time)), '[]') "
        "FROM pg_stat_statements s WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) "
        "AND s.query NOT LIKE '%scale_bench%')";
  sql += ")::text";
  return json::parse(q(sql)[0][0].as<std::string>());
}

json Bench::steady() {
  json s;
  bool have_stmts = false;
  try {
    have_stmts = !q("SELECT /* scale_bench */ to_regclass('pg_stat_statements')")[0][0].is_null();
    if (have_stmts) q("SELECT /* scale_bench */ pg_stat_statements_reset()");
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scale_bench: pg_stat_statements: %s\n", one_line(e.what()).c_str());
    have_stmts = false;
  }
  if (!have_stmts)
    std::fprintf(stderr,
                 "scale_bench: no pg_stat_statements in this database (shared_preload_libraries and CREATE "
                 "EXTENSION pg_stat_statements): statements per agent per renew not measured\n");

  // The postmaster.
  pid_t pg_pid = 0;
  if (!o_.pgdir.empty()) {
    std::istringstream in(slurp(o_.pgdir + "/data/postmaster.pid"));
    long long v = 0;
    if (in >> v) pg_pid = static_cast<pid_t>(v);
  }
  if (pg_pid <= 0 || !proc_stat(pg_pid).ok) {
    std::fprintf(stderr, "scale_bench: no postmaster found in %s/data/postmaster.pid (--pgdir or "
                 "LEASE_AGENT_TEST_PGDIR): PostgreSQL's CPU not measured\n", o_.pgdir.c_str());
    pg_pid = 0;
  }
  auto agents_cpu = [&] {
    std::vector<long long> t;
    for (const Agent& a : agents_) {
      const ProcStat p = proc_stat(a.pid);
      t.push_back(p.ok ? p.utime + p.stime : -1);
    }
    return t;
  };

  std::this_thread::sleep_for(o_.renew);  // the start-up's probes are over
  const TreeCpu pg0 = pg_pid ? tree_cpu(pg_pid) : TreeCpu{};
  const auto a0 = agents_cpu();
  const auto t0 = Clock::now();
  const json d0 = snapshot_db(have_stmts);
  std::this_thread::sleep_for(o_.window);
  const json d1 = snapshot_db(have_stmts);
  const auto t1 = Clock::now();
  const TreeCpu pg1 = pg_pid ? tree_cpu(pg_pid) : TreeCpu{};
  const auto a1 = agents_cpu();

  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  const double wall_s = std::chrono::duration<double>(t1 - t0).count();
  const double db_s = d1["now"].get<double>() - d0["now"].get<double>();
  const int n = static_cast<int>(agents_.size());
  const double renews = db_s * 1000.0 / static_cast<double>(o_.renew.count());  // per agent
  const double agent_renews = renews * n;

  // Statements.
  double stmt_total = nan();
  json top = json::array();
  if (have_stmts) {
    std::map<std::string, json> before;
    for (const auto& e : d0["stmts"]) before[e["id"].get<std::string>() + "/" + e["user"].dump()] = e;
    std::vector<std::pair<long long, json>> rows;
    long long total = 0;
    for (const auto& e : d1["stmts"]) {
      const auto it = before.find(e["id"].get<std::string>() + "/" + e["user"].dump());
      const long long calls = e["calls"].get<long long>() - (it == before.end() ? 0 : it->second["calls"].get<long long>());
      const double ms = e["ms"].get<double>() - (it == before.end() ? 0.0 : it->second["ms"].get<double>());
      if (calls <= 0) continue;
      total += calls;
      json r;
      r["query"] = e["query"];
      r["calls"] = calls;
      r["per_agent_per_renew"] = round_to(static_cast<double>(calls) / agent_renews, 4);
      r["mean_exec_ms"] = round_to(ms / static_cast<double>(calls), 4);
      rows.emplace_back(calls, r);
    }
    std::sort(rows.begin(), rows.end(), [](const auto& x, const auto& y) { return x.first > y.first; });
    for (size_t i = 0; i < rows.size() && i < 5; ++i) top.push_back(rows[i].second);
    stmt_total = static_cast<double>(total);
  }
  const double commits = d1["commits"].get<double>() - d0["commits"].get<double>();
  const double wal_lsn = static_cast<double>(lsn_bytes(d1["lsn"].get<std::string>()) -
                                             lsn_bytes(d0["lsn"].get<std::string>()));
  const double wal_records = d1["wal_records"].get<double>() - d0["wal_records"].get<double>();
  const double wal_bytes_stat = d1["wal_bytes"].get<double>() - d0["wal_bytes"].get<double>();
  const double renewals = d1["versions"].get<double>() - d0["versions"].get<double>();

  double pg_cpu_s = nan();
  if (pg0.ok && pg1.ok) pg_cpu_s = pg1.seconds - pg0.seconds;
  const double pg_pct = pg_cpu_s / wall_s * 100.0;

  std::vector<double> cpu_pct, rss_mb, pss_mb;
  for (size_t i = 0; i < agents_.size(); ++i) {
    if (a0[i] >= 0 && a1[i] >= 0) cpu_pct.push_back(static_cast<double>(a1[i] - a0[i]) / tick / wall_s * 100.0);
    const long long rss = proc_kb(agents_[i].pid, "status", "VmRSS");
    const long long pss = proc_kb(agents_[i].pid, "smaps_rollup", "Pss");
    if (rss >= 0) rss_mb.push_back(static_cast<double>(rss) / 1024.0);
    if (pss >= 0) pss_mb.push_back(static_cast<double>(pss) / 1024.0);
  }

  s["window_s"] = round_to(wall_s, 3);
  s["window_db_s"] = round_to(db_s, 3);
  s["renews_per_agent"] = round_to(renews, 2);
  s["pg_stat_statements"] = have_stmts;
  s["statements"] = num(stmt_total);
  s["statements_per_agent_per_renew"] = num(round_to(stmt_total / agent_renews, 4));
  // Each agent's calls in the window are floor or ceil of window/renew, by its phase; the
  // agents' phases are not independent (they started in rounds), so that need not average out.
  s["statements_per_agent_per_renew_resolution"] = round_to(1.0 / renews, 4);
  s["top_statements"] = top;
  s["commits"] = commits;
  s["commits_per_agent_per_renew"] = num(round_to(commits / agent_renews, 4));
  s["rollbacks"] = d1["rollbacks"].get<double>() - d0["rollbacks"].get<double>();
  s["renewals"] = renewals;
  s["renewals_expected"] = round_to(renews * o_.clusters, 1);
  s["wal_bytes"] = wal_lsn;
  s["wal_bytes_pg_stat_wal"] = wal_bytes_stat;
  s["wal_records"] = wal_records;
  s["wal_bytes_per_renewal"] = num(renewals > 0 ? round_to(wal_lsn / renewals, 1) : nan());
  s["wal_records_per_renewal"] = num(renewals > 0 ? round_to(wal_records / renewals, 2) : nan());
  s["wal_bytes_per_agent_per_renew"] = num(round_to(wal_lsn / agent_renews, 1));
  s["pg_cpu_s"] = num(round_to(pg_cpu_s, 3));
  s["pg_cpu_pct_of_core"] = num(round_to(pg_pct, 2));
  s["pg_cpu_pct_per_100_agents"] = num(round_to(pg_pct * 100.0 / n, 2));
  s["agents_per_pg_core"] = num(pg_pct > 0 ? std::round(n * 100.0 / pg_pct) : nan());
  s["pg_processes"] = {pg0.processes, pg1.processes};
  s["agent_cpu_pct_median"] = num(round_to(percentile(cpu_pct, 0.5), 3));
  s["agent_cpu_pct_max"] = num(round_to(percentile(cpu_pct, 1.0), 3));
  s["agent_cpu_pct_total"] = num(round_to(std::accumulate(cpu_pct.begin(), cpu_pct.end(), 0.0), 2));
  s["agent_rss_mb_median"] = num(round_to(percentile(rss_mb, 0.5), 2));
  s["agent_rss_mb_max"] = num(round_to(percentile(rss_mb, 1.0), 2));
  s["agent_pss_mb_median"] = num(round_to(percentile(pss_mb, 0.5), 2));
  s["agent_pss_mb_max"] = num(round_to(percentile(pss_mb, 1.0), 2));
  s["cpu_tick_ms"] = 1000.0 / tick;
  s["notes"] =
      "statements: pg_stat_statements (track=top) of this database minus the benchmark's own two snapshots; "
      "commits and pg_stat_wal lag by up to ~1 s per backend (PostgreSQL 15 flushes backend counters at most "
      "once a second), mostly cancelling between the snapshots; wal_bytes from pg_current_wal_lsn(); renewals "
      "from lease.version; agents' CPU from /proc/PID/stat in clock ticks; PostgreSQL CPU: the postmaster and "
      "its live children (schedstat, ns) and what it reaped (cutime, ticks; a backend ended but not yet reaped is "
      "missed); commits include the transaction in which a listening backend reads its notifications "
      "(every lease write notifies every agent of the cluster)";
  return s;
}

void Bench::print_steady(const json& s) {
  auto f = [&](const char* key) {
    const json& v = s[key];
    return v.is_null() ? std::string("n/a") : v.dump();
  };
  const int n = static_cast<int>(agents_.size());
  std::printf("steady: window %s s, %d agents, renew %lld ms: %s renews per agent, %s renewals (expected %s)\n",
              f("window_s").c_str(), n, static_cast<long long>(o_.renew.count()), f("renews_per_agent").c_str(),
              f("renewals").c_str(), f("renewals_expected").c_str());
  std::printf("steady: statements per agent per renew %s (agents' statements %s)\n",
              f("statements_per_agent_per_renew").c_str(), f("statements").c_str());
  for (const auto& t : s["top_statements"])
    std::printf("steady:   %8lld calls (%.3f per agent per renew, mean %.3f ms)  %s\n", t["calls"].get<long long>(),
                t["per_agent_per_renew"].get<double>(), t["mean_exec_ms"].get<double>(),
                one_line(t["query"].get<std::string>()).substr(0, 110).c_str());
  std::printf("steady: commits per agent per renew %s (xact_commit %s)\n", f("commits_per_agent_per_renew").c_str(),
              f("commits").c_str());
  std::printf("steady: WAL bytes per renewal %s (WAL %s bytes, %s records)\n", f("wal_bytes_per_renewal").c_str(),
              f("wal_bytes").c_str(), f("wal_records").c_str());
  std::printf("steady: PostgreSQL CPU %s %% of a core, %s %% per 100 agents, one core carries %s agents\n",
              f("pg_cpu_pct_of_core").c_str(), f("pg_cpu_pct_per_100_agents").c_str(), f("agents_per_pg_core").c_str());
  std::printf("steady: agent CPU %% of a core median %s max %s (tick %s ms)\n", f("agent_cpu_pct_median").c_str(),
              f("agent_cpu_pct_max").c_str(), f("cpu_tick_ms").c_str());
  std::printf("steady: agent RSS MB median %s max %s; Pss MB median %s max %s\n", f("agent_rss_mb_median").c_str(),
              f("agent_rss_mb_max").c_str(), f("agent_pss_mb_median").c_str(), f("agent_pss_mb_max").c_str());
  std::fflush(stdout);
}

// Agents that exited by themselves: counted (the run is broken) and started again.
void Bench::check_alive() {
  for (Agent& a : agents_) {
    if (a.pid <= 0) continue;
    if (auto st = ended(a)) {
      ++self_exits_;
      ++broken_;
      std::fprintf(stderr, "scale_bench: %s exited by itself (%s): %s; starting it again\n", who(a).c_str(),
                   describe_status(*st).c_str(), tail_of(a.log).c_str());
      const std::string since = q("SELECT clock_timestamp()::text")[0][0].as<std::string>();
      start(a);
      restore(a, true, since);
    }
  }
}

// After a run: `a` (the old master) registered again (when `restarted`: a new incarnation,
// registered after `since_db`), live, ttl into its connection; the cluster has a master.
void Bench::restore(Agent& a, bool restarted, const std::string& since_db) {
  const auto limit = milliseconds(3 * o_.ttl.count() + 10000);
  const std::string cluster = clusters_[static_cast<size_t>(a.cluster)];
  int tries = 0;
  auto alive = [&] {
    if (auto st = ended(a)) {
      // Exit 2: its --http port was taken meanwhile; another one.
      if (restarted && WIFEXITED(*st) && WEXITSTATUS(*st) == 2 && ++tries < 4) return start(a);
      throw Fail(who(a) + " exited (" + describe_status(*st) + "): " + tail_of(a.log));
    }
  };
  const bool registered = await(
      [&] {
        alive();
        pqxx::nontransaction tx(*db_);
        const auto r = restarted ? tx.exec_prepared("since", cluster, a.node, since_db)
                                 : tx.exec_prepared("live", cluster, a.node);
        return r[0][0].as<long long>() == 1 || (std::this_thread::sleep_for(milliseconds(2)), false);
      },
      limit);
  if (!registered) throw Fail(who(a) + " not registered again within " + std::to_string(limit.count()) + " ms");
  if (!await([&] { return alive(), may_acquire(a) || (std::this_thread::sleep_for(milliseconds(5)), false); }, limit))
    throw Fail(who(a) + ": /status not may_acquire within " + std::to_string(limit.count()) + " ms");
  if (!await([&] { return !master_of(a.cluster).empty(); }, limit))
    throw Fail(cluster + " has no master within " + std::to_string(limit.count()) + " ms");
}

struct Figures {
  std::vector<double> ms, http_ms, request_to_term_ms;
  int doubles = 0, unexpected = 0, failed = 0, resumed_200 = 0, resume_not_503 = 0;
  json runs = json::array();
};

json Bench::takeovers() {
  std::vector<std::string> wanted;
  {
    std::istringstream in(o_.scenarios);
    std::string one;
    while (std::getline(in, one, ','))
      if (!one.empty() && one != "none") wanted.push_back(one);
  }
  json all = json::object();
  const double ttl_ms = static_cast<double>(o_.ttl.count());
  long long counter = 0;
  for (const std::string scenario : {"kill", "term", "stop", "switchover"}) {
    if (std::find(wanted.begin(), wanted.end(), scenario) == wanted.end()) continue;
    Figures f;
    for (int run = 0; run < o_.runs; ++run) {
      const int c = static_cast<int>(counter++ % o_.clusters);
      const std::string cluster = clusters_[static_cast<size_t>(c)];
      auto fail = [&](const std::string& why) {
        ++f.failed;
        ++broken_;
        std::fprintf(stderr, "scale_bench: %s run %d (%s): %s\n", scenario.c_str(), run + 1, cluster.c_str(),
                     why.c_str());
      };
      try {
        check_alive();
        const std::string old_node = master_of(c);
        if (old_node.empty()) {
          fail("no master before the fault");
          continue;
        }
        std::string next_node;
        {
          pqxx::nontransaction tx(*db_);
          const auto r = tx.exec_prepared("next", cluster, old_node);
          if (!r.empty()) next_node = r[0][0].as<std::string>();
        }
        Agent* old = find(c, old_node);
        Agent* next = next_node.empty() ? nullptr : find(c, next_node);
        if (old == nullptr || next == nullptr || old->pid <= 0) {
          fail("master '" + old_node + "' or next in line '" + next_node + "' is not one of ours");
          continue;
        }
        const int old_port = old->port, next_port = next->port;

        std::atomic<bool> sampling{true};
        std::atomic<int> doubles{0}, resumed_200{0}, other_port{0};
        std::atomic<long long> resumed_at{0};  // steady clock ns, 0: not resumed
        std::thread sampler([&] {
          // As a load balancer checks: keep-alive connections, one round every ~1 ms, so
          // that the sampling itself does not load the agents it measures (a new connection
          // per request in a tight loop cost the clean stop milliseconds on two cores).
          KeepAliveProbe next_probe(next_port), old_probe(old_port);
          std::unique_ptr<KeepAliveProbe> other_probe;
          while (sampling) {
            const long long sent = Clock::now().time_since_epoch().count();
            int masters = next_probe.status() == 200 ? 1 : 0;
            const int other = other_port.load();
            if (other != 0 && !other_probe) other_probe = std::make_unique<KeepAliveProbe>(other);
            if (other_probe && other_probe->status() == 200) ++masters;
            const bool old_200 = old_probe.status() == 200;
            if (old_200) ++masters;
            if (masters > 1) ++doubles;
            const long long r = resumed_at.load();
            if (old_200 && r != 0 && sent >= r) ++resumed_200;
            std::this_thread::sleep_for(milliseconds(1));
          }
        });
        struct Join {
          std::atomic<bool>& flag;
          std::thread& t;
          ~Join() {
            flag = false;
            if (t.joinable()) t.join();
          }
        } join{sampling, sampler};

        // The expected successor's first 200, for a hand-off (term, switchover): watched from
        // before the fault on, over a keep-alive connection every ~0.2 ms, as a load
        // balancer's check would see it; the time is the 200's arrival. (Asking only after
        // this program had seen the row, as before 2026-12-06, counted its own wake-up, a
        // query and a new connection on top, all after the row.)
        const bool announced = scenario == "term" || scenario == "switchover";
        std::atomic<long long> next_200_at{0};  // steady clock ns, 0: not yet
        std::thread watcher;
        if (announced) {
          watcher = std::thread([&, next_port] {
            KeepAliveProbe probe(next_port);
            const auto until = Clock::now() + 3 * o_.ttl;
            while (sampling && Clock::now() < until) {
              if (probe.status() == 200) {
                next_200_at = Clock::now().time_since_epoch().count();
                return;
              }
              std::this_thread::sleep_for(microseconds(200));
            }
          });
        }
        struct JoinWatcher {
          std::atomic<bool>& flag;
          std::thread& t;
          ~JoinWatcher() {
            flag = false;
            if (t.joinable()) t.join();
          }
        } join_watcher{sampling, watcher};

        Wake wake(*db_, channel_of(c));
        db_->get_notifs();  // what came before the fault
        std::string requested_at;
        const auto fault = Clock::now();
        if (scenario == "switchover") {
          pqxx::nontransaction tx(*db_);
          requested_at = tx.exec("SELECT requested_at::text FROM lease_agent.switchover(" + tx.quote(cluster) + ", " +
                                 tx.quote(next_node) + ")")[0][0].as<std::string>();
        } else {
          ::kill(old->pid, scenario == "kill" ? SIGKILL : scenario == "term" ? SIGTERM : SIGSTOP);
        }
        std::string new_node;
        Clock::time_point row_at{}, http_at{};
        bool row = false;
        {
          // A hand-off (term, switchover) is announced on the cluster's channel after its
          // commit: woken by that notification rather than by polling (a query every 200 us
          // loaded the two cores the agents and PostgreSQL share, and alt_bench times etcd's
          // and ZooKeeper's waiters by their events too), with a 5 ms poll as a backstop. An
          // acquisition after a lease ran out is announced to nobody: kill and stop poll
          // every 1 ms. The time is the notification's arrival (the commit was before it)
          // or, on a poll, the answer's.
          const long poll_us = announced ? 5000 : 1000;
          const auto until = fault + 3 * o_.ttl;
          int woke = 0;
          for (;;) {
            const auto woke_at = Clock::now();
            const std::string m = master_of(c);
            if (!m.empty() && m != old_node) {
              new_node = m;
              row_at = woke > 0 ? woke_at : Clock::now();
              row = true;
              break;
            }
            if (woke_at >= until) break;
            woke = db_->await_notification(0, poll_us);
          }
        }
        Agent* now_master = row ? find(c, new_node) : nullptr;
        if (now_master != nullptr && now_master != next) other_port = now_master->port;
        bool http = false;
        if (announced && now_master == next) {
          if (watcher.joinable()) watcher.join();  // it ends at the 200, or at 3 ttl
          if (const long long at = next_200_at.load(); at != 0) {
            http_at = Clock::time_point(Clock::duration(at));
            http = true;
          }
        } else if (now_master != nullptr) {
          http = await([&] { return http_status(now_master->port) == 200; }, o_.ttl, &http_at);
        }
        double to_term = nan();
        if (row && !requested_at.empty()) {
          pqxx::nontransaction tx(*db_);
          const auto r = tx.exec("SELECT extract(epoch FROM acquired_at - " + tx.quote(requested_at) +
                                 "::timestamptz) * 1000 FROM lease_agent.master WHERE cluster = " + tx.quote(cluster));
          if (!r.empty()) to_term = r[0][0].as<double>();
        }
        int resume_status = 0;
        if (scenario == "stop") {
          resumed_at = Clock::now().time_since_epoch().count();
          ::kill(old->pid, SIGCONT);
          resume_status = http_status(old_port);
          if (resume_status != 503) ++f.resume_not_503;
          std::this_thread::sleep_for(milliseconds(200));  // 200s after the resume, if any
        }
        sampling = false;
        sampler.join();
        f.doubles += doubles;
        f.resumed_200 += resumed_200;
        if (doubles > 0 || resumed_200 > 0 || (scenario == "stop" && resume_status != 503)) ++broken_;

        json r;
        r["cluster"] = cluster;
        r["old"] = old_node;
        r["expected"] = next_node;
        r["new"] = row ? json(new_node) : json(nullptr);
        r["expected_successor"] = row && new_node == next_node;
        r["ms"] = row ? json(round_to(Ms(row_at - fault).count(), 3)) : json(nullptr);
        r["http_ms"] = http ? json(round_to(Ms(http_at - fault).count(), 3)) : json(nullptr);
        r["double_200_samples"] = doubles.load();
        if (scenario == "stop") {
          r["resume_status"] = resume_status;
          r["resumed_200_samples"] = resumed_200.load();
        }
        if (scenario == "switchover") r["request_to_term_ms"] = num(round_to(to_term, 3));
        f.runs.push_back(r);
        if (row && new_node != next_node) ++f.unexpected;
        if (row && http) {
          f.ms.push_back(Ms(row_at - fault).count());
          f.http_ms.push_back(Ms(http_at - fault).count());
          if (std::isfinite(to_term)) f.request_to_term_ms.push_back(to_term);
        } else {
          fail(row ? "the new master " + new_node + " answered no 200 on /master within ttl of its row"
                   : "no other master in lease_agent.master within 3 ttl");
        }

        // Back to a full cluster.
        if (scenario == "kill" || scenario == "term") {
          reap(*old, scenario == "kill" ? milliseconds(5000) : milliseconds(10000));
          const std::string since = q("SELECT clock_timestamp()::text")[0][0].as<std::string>();
          start(*old);
          restore(*old, true, since);
        } else {
          restore(*old, false, "");
        }
        std::this_thread::sleep_for(o_.renew);
      } catch (const Fail& e) {
        fail(e.what());
      } catch (const std::exception& e) {
        fail(one_line(e.what()));
        try {  // the connection may have gone
          q("SELECT 1");
        } catch (const std::exception&) {
          connect();
        }
      }
    }
    json s;
    auto stats = [&](json& into, const char* prefix, const std::vector<double>& v) {
      const std::string p = prefix;
      into[p + "min"] = num(round_to(percentile(v, 0.0), 3));
      into[p + "median"] = num(round_to(percentile(v, 0.5), 3));
      into[p + "p95"] = num(round_to(percentile(v, 0.95), 3));
      into[p + "max"] = num(round_to(percentile(v, 1.0), 3));
    };
    auto rounded = [](std::vector<double> v) {
      for (double& x : v) x = round_to(x, 3);
      return v;
    };
    s["runs"] = o_.runs;
    s["samples_ms"] = rounded(f.ms);
    stats(s, "", f.ms);
    s["max_over_ttl"] = num(round_to(percentile(f.ms, 1.0) / ttl_ms, 4));
    s["http_samples_ms"] = rounded(f.http_ms);
    stats(s, "http_", f.http_ms);
    s["double_200_samples"] = f.doubles;
    s["unexpected_successor"] = f.unexpected;
    s["failed"] = f.failed;
    if (scenario == "stop") {
      s["resumed_200_samples"] = f.resumed_200;
      s["resume_not_503"] = f.resume_not_503;
    }
    if (scenario == "switchover") {
      s["request_to_term_ms"] = rounded(f.request_to_term_ms);
      stats(s, "request_to_term_", f.request_to_term_ms);
    }
    s["detail"] = f.runs;
    all[scenario] = s;
    std::printf("%-10s runs=%d failed=%d  to lease_agent.master: min %.1f median %.1f p95 %.1f max %.1f ms "
                "(max/ttl %.3f)  to /master 200: median %.1f max %.1f ms  double-200 samples=%d  unexpected successor=%d",
                scenario.c_str(), o_.runs, f.failed, percentile(f.ms, 0.0), percentile(f.ms, 0.5),
                percentile(f.ms, 0.95), percentile(f.ms, 1.0), percentile(f.ms, 1.0) / ttl_ms,
                percentile(f.http_ms, 0.5), percentile(f.http_ms, 1.0), f.doubles, f.unexpected);
    if (scenario == "stop") std::printf("  200-after-resume=%d resume-not-503=%d", f.resumed_200, f.resume_not_503);
    if (scenario == "switchover")
      std::printf("\n%-10s request commit to the new term (database clock): median %.2f p95 %.2f max %.2f ms", "",
                  percentile(f.request_to_term_ms, 0.5), percentile(f.request_to_term_ms, 0.95),
                  percentile(f.request_to_term_ms, 1.0));
    std::printf("\n");
    std::fflush(stdout);
  }
  return all;
}

int Bench::run() {
  prefix_ = "bench-" + std::to_string(::getpid()) + "-";
  connect();
  tmp_ = (std::filesystem::temp_directory_path() / "scale-bench-XXXXXX").string();
  if (::mkdtemp(tmp_.data()) == nullptr) throw Fail(std::string("mkdtemp: ") + std::strerror(errno));
  std::printf("scale_bench %s: %d cluster(s) x %d agents, ttl=%s renew=%s window=%s, %d runs per scenario (%s)\n",
              o_.label.c_str(), o_.clusters, o_.agents, o_.ttl_s.c_str(), o_.renew_s.c_str(), o_.window_s.c_str(),
              o_.runs, o_.scenarios.c_str());
  std::fflush(stdout);
  out_["label"] = o_.label;
  out_["clusters"] = o_.clusters;
  out_["agents_per_cluster"] = o_.agents;
  out_["agents"] = o_.clusters * o_.agents;
  out_["ttl_ms"] = o_.ttl.count();
  out_["renew_ms"] = o_.renew.count();
  out_["window_s"] = static_cast<double>(o_.window.count()) / 1000.0;
  out_["runs"] = o_.runs;
  out_["complete"] = false;
  int status = 0;
  try {
    start_all();
    out_["startup_s"] = round_to(startup_s_, 2);
    const json s = steady();
    out_["steady"] = s;
    print_steady(s);
    out_["takeover"] = takeovers();
    check_alive();
    out_["complete"] = true;
  } catch (const Fail& e) {
    std::fprintf(stderr, "scale_bench: %s\n", e.what());
    status = 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scale_bench: %s\n", one_line(e.what()).c_str());
    status = 1;
  }
  kill_all();
  out_["agent_self_exits"] = self_exits_;
  out_["broken"] = broken_;
  if (broken_ > 0) status = 1;
  // The clusters' rows: gone (their agents are).
  try {
    const std::string like = quote(prefix_ + "%");
    q("DELETE FROM lease_agent.node WHERE cluster LIKE " + like);
    q("DELETE FROM lease_agent.term WHERE cluster LIKE " + like);
    q("DELETE FROM lease_agent.lease WHERE cluster LIKE " + like);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "scale_bench: could not delete the benchmark's rows: %s\n", one_line(e.what()).c_str());
  }
  if (!o_.json_file.empty()) {
    std::ofstream f(o_.json_file);
    f << out_.dump(1) << "\n";
    if (!f) {
      std::fprintf(stderr, "scale_bench: cannot write %s\n", o_.json_file.c_str());
      status = 1;
    }
  }
  std::error_code ec;
  if (status == 0 && std::getenv("SCALE_BENCH_KEEP_LOGS") == nullptr)
    std::filesystem::remove_all(tmp_, ec);
  else
    std::fprintf(stderr, "scale_bench: the agents' logs are in %s\n", tmp_.c_str());
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  o.dsn = std::getenv("LEASE_AGENT_TEST_DSN") ? std::getenv("LEASE_AGENT_TEST_DSN") : "";
  o.pgdir = std::getenv("LEASE_AGENT_TEST_PGDIR") ? std::getenv("LEASE_AGENT_TEST_PGDIR") : "";
  o.binary = LEASE_AGENT_BINARY;
  CLI::App app{"scale_bench: steady-state cost and takeover times of M clusters x N lease-agent processes"};
  app.add_option("--dsn", o.dsn, "database with the schema applied (default: LEASE_AGENT_TEST_DSN)");
  app.add_option("--binary", o.binary, "the lease-agent binary");
  app.add_option("--clusters", o.clusters, "clusters (default 1)");
  app.add_option("--agents", o.agents, "agents per cluster (default 3)");
  app.add_option("--ttl", o.ttl_s, "default 2s");
  app.add_option("--renew", o.renew_s, "default 500ms");
  app.add_option("--window", o.window_s, "steady-state measurement (default 10s)");
  app.add_option("--runs", o.runs, "runs per scenario (default 20)");
  app.add_option("--scenario", o.scenarios, "comma-separated: kill, term, stop, switchover; or none");
  app.add_option("--json", o.json_file, "write every figure to FILE");
  app.add_option("--label", o.label, "a name for this run (default MxN)");
  app.add_option("--pgdir", o.pgdir,
                 "pg.sh's directory, for the postmaster's pid in DIR/data/postmaster.pid "
                 "(default: LEASE_AGENT_TEST_PGDIR)");
  if (const auto status = bench::parse_flags(app, argc, argv, "scale_bench")) return *status;
  auto bad = [](const std::string& why) {
    std::fprintf(stderr, "scale_bench: %s\n", why.c_str());
    return 2;
  };
  try {
    o.ttl = lease_agent::parse_duration(o.ttl_s);
    o.renew = lease_agent::parse_duration(o.renew_s);
    o.window = lease_agent::parse_duration(o.window_s);
  } catch (const std::exception& e) {
    return bad(one_line(e.what()));
  }
  std::vector<std::string> wanted;
  {
    std::istringstream in(o.scenarios);
    std::string one;
    while (std::getline(in, one, ',')) {
      if (one.empty()) continue;
      if (one != "kill" && one != "term" && one != "stop" && one != "switchover" && one != "none")
        return bad("unknown scenario '" + one + "' (kill, term, stop, switchover, none)");
      if (one != "none") wanted.push_back(one);
    }
    if (wanted.empty() && o.scenarios.find("none") == std::string::npos)
      return bad("--scenario names no scenario (kill, term, stop, switchover, or none)");
  }
  if (o.clusters < 1 || o.clusters > 1000) return bad("--clusters must be 1..1000");
  if (o.agents < 1 || o.agents > 1000) return bad("--agents must be 1..1000");
  if (!wanted.empty() && o.agents < 2) return bad("takeovers need --agents 2 or more (or --scenario none)");
  if (o.clusters * o.agents > kMaxAgents) return bad("at most " + std::to_string(kMaxAgents) + " agents in all");
  if (o.runs < 1 || o.runs > 10000) return bad("--runs must be 1..10000");
  if (o.ttl < milliseconds(100)) return bad("--ttl must be 100ms or more");
  if (o.renew * 2 > o.ttl) return bad("--renew must be at most ttl/2");
  if (o.window < o.renew) return bad("--window must be at least --renew");
  if (o.dsn.empty()) return bad("no database: --dsn or LEASE_AGENT_TEST_DSN");
  if (::access(o.binary.c_str(), X_OK) != 0) return bad(o.binary + " is not an executable (--binary)");
  if (!o.json_file.empty()) {
    std::ofstream f(o.json_file, std::ios::app);
    if (!f) return bad("cannot write " + o.json_file + " (--json)");
  }
  if (o.label.empty()) o.label = std::to_string(o.clusters) + "x" + std::to_string(o.agents);

  // Hundreds of agents, each probed over HTTP: descriptors to spare.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  struct sigaction sa{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);

  Bench b(o);
  try {
    return b.run();
  } catch (const Fail& e) {  // before any agent started: the database
    std::fprintf(stderr, "scale_bench: %s\n", e.what());
    return 2;
  }
}
