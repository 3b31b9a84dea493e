// failover_bench: measures takeover times of real lease-agent processes on a real PostgreSQL.
//
//   build/failover_bench --dsn "host=127.0.0.1 port=5432 dbname=x user=y" [--runs 20]
//                        [--ttl 2s] [--renew 500ms] [--agents 3] [--scenario kill,term,stop,switchover]
//                        [--pair DIR] [--pg-sh PATH]
//
// Each run starts --agents agents in a fresh cluster, then faults the master:
//   kill: kill -9; term: SIGTERM (clean stop); stop: SIGSTOP past ttl, then SIGCONT;
//   switchover: SELECT lease_agent.switchover(cluster, 'n2') (no hooks, handover-delay 0).
//   For a switchover it also gives the time from the request's commit to n2's new term,
//   both on the database's clock (lease_agent.master.acquired_at - requested_at).
// The time is from the fault to the new master's row in lease_agent.master (polled on one
// connection, about every 0.2 ms), and to its first 200 on /master. Throughout, every agent's
// /master is sampled and a sample with two 200s is counted. Figures are printed in ms and as
// ratios to ttl, so a noisy machine does not matter.
//
// The database fails over (--scenario pg-failover,pg-switchover; not in the default set):
//   a replicated pair of scripts/pg.sh (start-pair DIR async: made in a temp dir and
//   stopped at the end, or the one of --pair DIR), the agents on its multi-host DSN
//   (target_session_attrs=read-write), then `pg.sh failover DIR immediate` (pg-failover: a
//   crash of the primary, commits not yet replicated are lost) or `... fast` (pg-switchover:
//   a planned one, nothing lost), each --no-rebuild; after the run, untimed, `pg.sh rebuild`.
//   Times are from the promotion (DIR/promoted_at: CLOCK_MONOTONIC when pg_ctl promote -w
//   returned, up to ~100 ms after the server took writes, so a time can be slightly negative)
//   to the first row in lease_agent.master written on the new primary (its expires_at - ttl
//   after the promotion on the database's clock, which is this machine's), as the benchmark's
//   poller first saw it, and to the first /master 200 of a request sent after that write
//   (a master that kept its term across the failover counts from its first renewal there).
//   Also: the longest stretch of samples without any 200 from the stop of the primary, and the
//   stop-to-promotion time of pg.sh.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <time.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <fstream>
#include <httplib.h>
#include <memory>
#include <mutex>
#include <pqxx/pqxx>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "settings.h"

extern char** environ;

namespace {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::duration<double, std::milli>;

int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

struct Agent {
  std::string node;
  int port = 0;
  pid_t pid = -1;
};

pid_t spawn(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
  pid_t pid = -1;
  if (posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ) != 0) pid = -1;
  posix_spawn_file_actions_destroy(&fa);
  return pid;
}

int http_status(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(0, 200000);
  c.set_read_timeout(0, 500000);
  auto r = c.Get("/master");
  return r ? r->status : -1;
}

// Whether the agent's connection is ttl old, so that it may start a term (/status).
bool may_acquire(int port) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(0, 200000);
  c.set_read_timeout(0, 500000);
  auto r = c.Get("/status");
  return r && r->status == 200 && r->body.find("\"may_acquire\":true") != std::string::npos;
}

// Polls cond every ~0.2 ms for at most `limit`; returns the time it became true.
template <typename F>
bool await(F cond, std::chrono::milliseconds limit, Clock::time_point* when = nullptr) {
  const auto end = Clock::now() + limit;
  while (Clock::now() < end) {
    if (cond()) {
      if (when) *when = Clock::now();
      return true;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
  return false;
}

struct Figures {
  std::vector<double> to_row_ms, to_http_ms;
  int double_masters = 0;
  int failures = 0;
  int resumed_200 = 0;  // stop scenario: old master answered 200 after SIGCONT
  std::vector<double> request_to_term_ms;  // switchover: on the database's clock
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}


// ---------------------------------------------------------------------------
// The database fails over: pg-failover, pg-switchover (see the top).

long long mono_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<long long>(t.tv_sec) * 1000000000LL + t.tv_nsec;
}

double wall_ms() {
  timespec t{};
  ::clock_gettime(CLOCK_REALTIME, &t);
  return static_cast<double>(t.tv_sec) * 1000.0 + static_cast<double>(t.tv_nsec) / 1e6;
}

std::string one_line(std::string why) {  // libpq's messages span lines
  std::replace_if(why.begin(), why.end(), [](char c) { return c == '\n' || c == '\t'; }, ' ');
  while (!why.empty() && why.back() == ' ') why.pop_back();
  return why;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// The tail of a file, for an error line.
std::string tail_of(const std::string& path) {
  std::string t = slurp(path);
  if (t.size() > 600) t = "..." + t.substr(t.size() - 600);
  return one_line(t);
}

// `bash PG_SH ARGS...` with stdout and stderr to `log`; its exit status, -1 if it did not
// end within `limit` (then it is killed).
int run_pg_sh(const std::string& pg_sh, const std::vector<std::string>& args, const std::string& log,
              std::chrono::seconds limit = std::chrono::seconds(180)) {
  std::vector<std::string> all{"/bin/bash", pg_sh};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&fa, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_adddup2(&fa, 1, 2);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, argv[0], &fa, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) return -1;
  const auto end = Clock::now() + limit;
  for (;;) {
    int st = 0;
    if (::waitpid(pid, &st, WNOHANG) == pid) return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (Clock::now() >= end) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// The value of `export NAME="..."` (or unquoted) in a pg.sh env file.
std::string env_value(const std::string& env_text, const std::string& name) {
  std::istringstream in(env_text);
  std::string line;
  const std::string key = "export " + name + "=";
  while (std::getline(in, line)) {
    if (line.compare(0, key.size(), key) != 0) continue;
    std::string v = line.substr(key.size());
    if (v.size() >= 2 && v.front() == '"' && v.back() == '"') v = v.substr(1, v.size() - 2);
    return v;
  }
  return "";
}

struct PgFigures {
  std::vector<double> to_row_ms, to_http_ms, gap_ms, stop_to_promote_ms;
  int double_masters = 0;
  int failures = 0;
};

// One run of pg-failover (`how` immediate) or pg-switchover (fast) on the pair in `pair_dir`.
// Returns false (after one line on stderr) when the run failed.
bool pg_run(const std::string& scenario, const std::string& how, int run, const std::string& pg_sh,
            const std::string& pair_dir, const std::string& dsn, const std::string& binary, int agents,
            const std::string& ttl_s, const std::string& renew_s, std::chrono::milliseconds ttl,
            const std::string& log, PgFigures& f) {
  auto fail = [&](const std::string& why) {
    std::fprintf(stderr, "failover_bench: %s run %d: %s\n", scenario.c_str(), run + 1, why.c_str());
    return false;
  };
  const std::string cluster = "bench-" + scenario + "-" + std::to_string(::getpid()) + "-" + std::to_string(run);
  std::vector<Agent> as(agents);
  auto stop_agents = [&] {
    for (Agent& a : as)
      if (a.pid > 0) {
        ::kill(a.pid, SIGKILL);
        ::waitpid(a.pid, nullptr, 0);
        a.pid = -1;
      }
  };
  struct Stop {
    std::function<void()> f;
    ~Stop() { f(); }
  } stop_at_end{stop_agents};

  // Up as in the other scenarios: n1 master, the others in line, every connection ttl old.
  std::unique_ptr<pqxx::connection> db;
  try {
    db = std::make_unique<pqxx::connection>(dsn);
  } catch (const std::exception& e) {
    return fail("cannot connect to the pair: " + one_line(e.what()));
  }
  auto master_row = [&]() -> std::string {
    pqxx::nontransaction tx(*db);
    auto r = tx.exec("SELECT node FROM lease_agent.master WHERE cluster = " + tx.quote(cluster));
    return r.empty() ? "" : r[0][0].as<std::string>();
  };
  bool started = true;
  for (int i = 0; i < agents && started; ++i) {
    as[i].node = "n" + std::to_string(i + 1);
    as[i].port = free_port();
    as[i].pid = spawn({binary, "run", "--dsn", dsn, "--cluster", cluster, "--node", as[i].node, "--ttl", ttl_s,
                       "--renew", renew_s, "--http", "127.0.0.1:" + std::to_string(as[i].port)});
    started = as[i].pid > 0 && await([&] { return http_status(as[i].port) == (i == 0 ? 200 : 503); },
                                     std::chrono::seconds(10));
    if (started && i > 0)
      started = await(
          [&] {
            pqxx::nontransaction tx(*db);
            return tx.exec("SELECT 1 FROM lease_agent.node WHERE cluster = " + tx.quote(cluster) +
                           " AND node = " + tx.quote(as[i].node))
                       .size() == 1;
          },
          std::chrono::seconds(10));
  }
  for (int i = 0; i < agents && started; ++i)
    started = await([&] { return may_acquire(as[i].port); }, std::chrono::seconds(10));
  if (!started || master_row() != "n1")
    return fail("the agents were not up within 10 s (n1 master, the others in line)");
  db.reset();  // the failover ends it

  // Throughout: every agent's /master (successors first), and the lease row as the
  // primary of the moment shows it, each with the CLOCK_MONOTONIC time of the answer.
  struct Sample {
    long long sent_ns;
    int master;  // index of the agent that answered 200, -1 for none
  };
  struct RowSeen {
    long long at_ns;
    std::string node;
    double written_wall_ms;  // expires_at - ttl on the database's clock
  };
  std::mutex mu;
  std::vector<Sample> samples;
  std::vector<RowSeen> rows;
  std::atomic<bool> going{true};
  std::atomic<int> doubles{0};
  std::thread sampler([&] {
    while (going) {
      const long long sent = mono_ns();
      int masters = 0, who = -1;
      for (int i = agents - 1; i >= 0; --i)
        if (http_status(as[i].port) == 200) {
          ++masters;
          who = i;
        }
      if (masters > 1) ++doubles;
      std::lock_guard<std::mutex> g(mu);
      samples.push_back({sent, who});
    }
  });
  std::thread poller([&] {
    std::unique_ptr<pqxx::connection> c;
    const std::string q = "SELECT node, extract(epoch FROM expires_at) * 1000 - " + std::to_string(ttl.count()) +
                          " FROM lease_agent.master WHERE cluster = ";
    while (going) {
      try {
        if (!c) c = std::make_unique<pqxx::connection>(dsn + " connect_timeout=2");
        pqxx::nontransaction tx(*c);
        const pqxx::result r = tx.exec(q + tx.quote(cluster));
        const long long at = mono_ns();
        std::lock_guard<std::mutex> g(mu);
        if (!r.empty()) rows.push_back({at, r[0][0].as<std::string>(), r[0][1].as<double>()});
      } catch (const std::exception&) {
        c.reset();  // the primary went: find the next (the multi-host DSN)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
        continue;
      }
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  });
  auto finish = [&] {
    going = false;
    sampler.join();
    poller.join();
    f.double_masters += doubles;
  };

  const long long fault_ns = mono_ns();
  const int rc = run_pg_sh(pg_sh, {"failover", pair_dir, how, "--no-rebuild"}, log);
  if (rc != 0) {
    finish();
    return fail("pg.sh failover " + how + " failed (status " + std::to_string(rc) + "): " + tail_of(log));
  }
  const long long promoted_ns = std::atoll(slurp(pair_dir + "/promoted_at").c_str());
  const long long stopped_ns = std::atoll(slurp(pair_dir + "/stopped_at").c_str());
  if (promoted_ns <= fault_ns || stopped_ns <= fault_ns) {
    finish();
    return fail("pg.sh wrote no promoted_at / stopped_at of this failover in " + pair_dir);
  }
  // The promotion on the wall clock: what was written on the old primary expires before
  // promotion + ttl, so a row written after it was written on the new primary.
  const double promoted_wall_ms = wall_ms() - static_cast<double>(mono_ns() - promoted_ns) / 1e6;
  const auto deadline = promoted_ns + (3 * ttl + std::chrono::seconds(5)).count() * 1000000LL;

  std::optional<RowSeen> row;
  std::optional<long long> http_ns;
  long long gap_ns = 0;
  while (mono_ns() < deadline && !http_ns) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    std::lock_guard<std::mutex> g(mu);
    if (!row)
      for (const RowSeen& r : rows)
        if (!r.node.empty() && r.written_wall_ms > promoted_wall_ms) {
          row = r;
          break;
        }
    if (!row) continue;
    // The write on the monotonic clock (the two clocks run together).
    const long long written_ns = promoted_ns + static_cast<long long>((row->written_wall_ms - promoted_wall_ms) * 1e6);
    long long last_200 = fault_ns;
    gap_ns = 0;
    for (const Sample& s : samples) {
      if (s.master < 0 || s.sent_ns < fault_ns) continue;
      gap_ns = std::max(gap_ns, s.sent_ns - last_200);
      last_200 = s.sent_ns;
      if (s.sent_ns >= written_ns) {
        http_ns = s.sent_ns;
        break;
      }
    }
  }
  finish();
  if (!row) return fail("no master in lease_agent.master on the new primary within 3 ttl + 5 s of the promotion");
  if (!http_ns) return fail("no /master 200 after the master's write on the new primary within 3 ttl + 5 s");
  f.to_row_ms.push_back(static_cast<double>(row->at_ns - promoted_ns) / 1e6);
  f.to_http_ms.push_back(static_cast<double>(*http_ns - promoted_ns) / 1e6);
  f.gap_ms.push_back(static_cast<double>(gap_ns) / 1e6);
  f.stop_to_promote_ms.push_back(static_cast<double>(promoted_ns - stopped_ns) / 1e6);
  return true;
}

void print_stats(const char* what, const std::vector<double>& v, double ttl_ms) {
  std::printf("    %-34s min %8.1f  median %8.1f  p90 %8.1f  max %8.1f ms   (ttl: %.3f / %.3f / %.3f / %.3f)\n", what,
              percentile(v, 0.0), percentile(v, 0.5), percentile(v, 0.9), percentile(v, 1.0),
              percentile(v, 0.0) / ttl_ms, percentile(v, 0.5) / ttl_ms, percentile(v, 0.9) / ttl_ms,
              percentile(v, 1.0) / ttl_ms);
}
// pg-failover and pg-switchover: makes the pair (unless `pair_dir` names one), applies the
// schema, runs, reports; 0 all well, 1 a failed run or two 200s, 2 no pair.
int pg_scenarios(bool failover, bool switchover, int runs, int agents, const std::string& binary,
                 const std::string& ttl_s, const std::string& renew_s, std::chrono::milliseconds ttl,
                 const std::string& pg_sh, std::string pair_dir) {
  const double ttl_ms = static_cast<double>(ttl.count());
  if (!std::filesystem::exists(pg_sh)) {
    std::fprintf(stderr, "failover_bench: %s not found (--pg-sh)\n", pg_sh.c_str());
    return 2;
  }
  std::string work = (std::filesystem::temp_directory_path() / "failover-bench-XXXXXX").string();
  if (::mkdtemp(work.data()) == nullptr) {
    std::fprintf(stderr, "failover_bench: mkdtemp: %s\n", std::strerror(errno));
    return 2;
  }
  ::chmod(work.c_str(), 0711);  // the servers run as postgres (when root): they pass through
  const std::string log = work + "/pg.log";
  const bool own = pair_dir.empty();
  struct Cleanup {
    std::function<void()> f;
    ~Cleanup() { f(); }
  } cleanup{[&] {
    if (own && std::filesystem::exists(pair_dir) && run_pg_sh(pg_sh, {"stop", pair_dir}, log) != 0)
      std::fprintf(stderr, "failover_bench: pg.sh stop %s failed; see %s\n", pair_dir.c_str(), log.c_str());
    else {
      std::error_code ec;
      std::filesystem::remove_all(work, ec);
    }
  }};
  if (own) {
    pair_dir = work + "/pair";
    if (run_pg_sh(pg_sh, {"start-pair", pair_dir, "async"}, log) != 0) {
      std::fprintf(stderr, "failover_bench: pg.sh start-pair failed: %s\n", tail_of(log).c_str());
      return 2;
    }
  } else if (!std::filesystem::exists(pair_dir + "/pair")) {
    std::fprintf(stderr, "failover_bench: %s is not a pair made by pg.sh start-pair (--pair)\n", pair_dir.c_str());
    return 2;
  }
  const std::string dsn = env_value(slurp(pair_dir + "/env"), "LEASE_AGENT_TEST_DSN");
  if (dsn.empty()) {
    std::fprintf(stderr, "failover_bench: no LEASE_AGENT_TEST_DSN in %s/env\n", pair_dir.c_str());
    return 2;
  }
  {
    const pid_t p = spawn({binary, "schema", "apply", "--dsn", dsn});
    int st = -1;
    if (p <= 0 || ::waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
      std::fprintf(stderr, "failover_bench: lease-agent schema apply --dsn '%s' failed\n", dsn.c_str());
      return 2;
    }
  }
  std::printf("pair %s (async: synchronous_commit off), dsn: %s\n", pair_dir.c_str(), dsn.c_str());
  int status = 0;
  for (const auto& [scenario, how] : {std::pair<std::string, std::string>{"pg-failover", "immediate"},
                                      std::pair<std::string, std::string>{"pg-switchover", "fast"}}) {
    if ((scenario == "pg-failover" && !failover) || (scenario == "pg-switchover" && !switchover)) continue;
    PgFigures f;
    for (int run = 0; run < runs; ++run) {
      if (!pg_run(scenario, how, run, pg_sh, pair_dir, dsn, binary, agents, ttl_s, renew_s, ttl, log, f)) ++f.failures;
      // Untimed: the old primary back as a replica, for the next run.
      if (run_pg_sh(pg_sh, {"rebuild", pair_dir}, log) != 0) {
        std::fprintf(stderr, "failover_bench: pg.sh rebuild failed, stopping: %s\n", tail_of(log).c_str());
        ++f.failures;
        break;
      }
    }
    std::printf("%s (pg.sh failover %s) runs=%zu failed=%d double-200 samples=%d\n", scenario.c_str(), how.c_str(),
                f.to_row_ms.size(), f.failures, f.double_masters);
    print_stats("promotion to lease_agent.master:", f.to_row_ms, ttl_ms);
    print_stats("promotion to /master 200:", f.to_http_ms, ttl_ms);
    print_stats("longest stretch without a 200:", f.gap_ms, ttl_ms);
    print_stats("stop to promotion (pg.sh):", f.stop_to_promote_ms, ttl_ms);
    if (f.failures > 0 || f.double_masters > 0) status = 1;
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"failover_bench: takeover times of lease-agent processes"};
  std::string dsn = std::getenv("LEASE_AGENT_TEST_DSN") ? std::getenv("LEASE_AGENT_TEST_DSN") : "";
  std::string binary = LEASE_AGENT_BINARY;
  int runs = 20, agents = 3;
  std::string ttl_s = "2s", renew_s = "500ms", scenarios = "kill,term,stop,switchover";
  app.add_option("--dsn", dsn, "database (default: LEASE_AGENT_TEST_DSN)");
  app.add_option("--binary", binary, "the lease-agent binary");
  app.add_option("--runs", runs, "runs per scenario")->check(CLI::Range(1, 1000));
  app.add_option("--agents", agents, "agents per run")->check(CLI::Range(2, 200));
  app.add_option("--ttl", ttl_s);
  app.add_option("--renew", renew_s);
  app.add_option("--scenario", scenarios,
                 "comma-separated: kill, term, stop, switchover; pg-failover, pg-switchover (the database fails over)");
  // The source tree of this file: CMake compiles it by its absolute path.
  std::string pg_sh = std::filesystem::path(__FILE__).parent_path().parent_path() / "scripts" / "pg.sh";
  std::string pair_dir;
  app.add_option("--pair", pair_dir,
                 "pg-*: a pair made by `scripts/pg.sh start-pair DIR` to use (default: one of its own in a temp dir)");
  app.add_option("--pg-sh", pg_sh, "pg-*: scripts/pg.sh");
  CLI11_PARSE(app, argc, argv);
  const auto ttl = lease_agent::parse_duration(ttl_s);
  const double ttl_ms = static_cast<double>(ttl.count());

  std::vector<std::string> wanted;
  {
    std::istringstream in(scenarios);
    std::string one;
    while (std::getline(in, one, ',')) {
      if (one.empty()) continue;
      if (one != "kill" && one != "term" && one != "stop" && one != "switchover" && one != "pg-failover" &&
          one != "pg-switchover") {
        std::fprintf(stderr, "failover_bench: unknown scenario '%s' (kill, term, stop, switchover, pg-failover, pg-switchover)\n",
                     one.c_str());
        return 2;
      }
      wanted.push_back(one);
    }
  }
  auto want = [&](const std::string& name) { return std::find(wanted.begin(), wanted.end(), name) != wanted.end(); };
  const bool on_dsn = want("kill") || want("term") || want("stop") || want("switchover");

  std::optional<pqxx::connection> conn;
  if (on_dsn) {
    try {
      conn.emplace(dsn);
      pqxx::nontransaction tx(*conn);
      if (tx.exec("SELECT to_regprocedure('lease_agent.heartbeat(text,text,text,text,integer,bigint,bigint,boolean)')")[0][0]
              .is_null()) {
        std::fprintf(stderr,
                     "failover_bench: the database has no lease_agent schema (version 2); apply it first: "
                     "lease-agent schema apply --dsn DSN\n");
        return 2;
      }
    } catch (const std::exception& e) {
      std::string why = e.what();  // libpq's messages span lines: one line here
      std::replace_if(why.begin(), why.end(), [](char c) { return c == '\n' || c == '\t'; }, ' ');
      while (!why.empty() && why.back() == ' ') why.pop_back();
      std::fprintf(stderr, "failover_bench: cannot use the database (--dsn or LEASE_AGENT_TEST_DSN): %s\n", why.c_str());
      return 2;
    }
  }
  std::printf("failover_bench: %d runs per scenario, %d agents, ttl=%s renew=%s\n", runs, agents, ttl_s.c_str(),
              renew_s.c_str());
  int status = 0;
  for (const std::string scenario : {"kill", "term", "stop", "switchover"}) {
    if (!want(scenario)) continue;
    pqxx::connection& db = *conn;
    Figures f;
    for (int run = 0; run < runs; ++run) {
      const std::string cluster = "bench-" + scenario + "-" + std::to_string(::getpid()) + "-" + std::to_string(run);
      std::vector<Agent> as(agents);
      bool started = true;
      for (int i = 0; i < agents && started; ++i) {
        as[i].node = "n" + std::to_string(i + 1);
        as[i].port = free_port();
        as[i].pid = spawn({binary, "run", "--dsn", dsn, "--cluster", cluster, "--node", as[i].node, "--ttl", ttl_s,
                           "--renew", renew_s, "--http", "127.0.0.1:" + std::to_string(as[i].port)});
        started = as[i].pid > 0 && await([&] { return http_status(as[i].port) == (i == 0 ? 200 : 503); },
                                         std::chrono::seconds(10));
        // A standby is in line once its row is there.
        if (started && i > 0)
          started = await(
              [&] {
                pqxx::nontransaction tx(db);
                return tx.exec("SELECT 1 FROM lease_agent.node WHERE cluster = " + tx.quote(cluster) +
                               " AND node = " + tx.quote(as[i].node))
                           .size() == 1;
              },
              std::chrono::seconds(10));
      }
      auto master_row = [&]() -> std::string {
        pqxx::nontransaction tx(db);
        auto r = tx.exec("SELECT node FROM lease_agent.master WHERE cluster = " + tx.quote(cluster));
        return r.empty() ? "" : r[0][0].as<std::string>();
      };
      // Every successor in the steady state: its connection ttl old.
      for (int i = 0; i < agents && started; ++i)
        started = await([&] { return may_acquire(as[i].port); }, std::chrono::seconds(10));
      if (!started || master_row() != "n1") {
        ++f.failures;
        std::fprintf(stderr, "failover_bench: %s run %d: the agents were not up within 10 s (n1 master, the others in line)\n",
                     scenario.c_str(), run + 1);
      } else {
        // Sample every agent's /master until the run ends. Successors first: a 200 from a
        // successor, then a 200 from its predecessor, overlapped for real.
        std::atomic<bool> sampling{true};
        std::atomic<int> doubles{0};
        std::thread sampler([&] {
          while (sampling) {
            int masters = 0;
            for (auto a = as.rbegin(); a != as.rend(); ++a)
              if (a->pid > 0 && http_status(a->port) == 200) ++masters;
            if (masters > 1) ++doubles;
          }
        });
        const auto fault = Clock::now();
        std::string requested_at;
        if (scenario == "switchover") {
          pqxx::nontransaction tx(db);
          requested_at = tx.exec("SELECT requested_at::text FROM lease_agent.switchover(" + tx.quote(cluster) +
                                 ", 'n2')")[0][0].as<std::string>();
        } else {
          ::kill(as[0].pid, scenario == "kill" ? SIGKILL : scenario == "term" ? SIGTERM : SIGSTOP);
        }
        Clock::time_point row_at{}, http_at{};
        const bool row = await([&] { return master_row() == "n2"; }, ttl * 3, &row_at);
        if (row && !requested_at.empty()) {
          pqxx::nontransaction tx(db);
          f.request_to_term_ms.push_back(
              tx.exec("SELECT extract(epoch FROM acquired_at - " + tx.quote(requested_at) +
                      "::timestamptz) * 1000 FROM lease_agent.master WHERE cluster = " + tx.quote(cluster))[0][0]
                  .as<double>());
        }
        const bool http = row && await([&] { return http_status(as[1].port) == 200; }, ttl, &http_at);
        if (row && http) {
          f.to_row_ms.push_back(Ms(row_at - fault).count());
          f.to_http_ms.push_back(Ms(http_at - fault).count());
        } else {
          ++f.failures;
          std::fprintf(stderr, "failover_bench: %s run %d: no takeover by n2 %s\n", scenario.c_str(), run + 1,
                       row ? "on /master within ttl of the row" : "in lease_agent.master within 3 ttl");
        }
        if (scenario == "stop") {
          ::kill(as[0].pid, SIGCONT);
          if (http_status(as[0].port) == 200) ++f.resumed_200;
          await([&] { return false; }, std::chrono::milliseconds(200));
        }
        sampling = false;
        sampler.join();
        f.double_masters += doubles;
      }
      for (Agent& a : as)
        if (a.pid > 0) {
          ::kill(a.pid, SIGKILL);
          ::kill(a.pid, SIGCONT);
          ::waitpid(a.pid, nullptr, 0);
        }
    }
    std::printf("%-5s runs=%zu failed=%d  to lease_agent.master: median %.1f ms, worst %.1f ms (worst/ttl %.3f)"
                "  to /master 200: median %.1f ms, worst %.1f ms  double-200 samples=%d",
                scenario.c_str(), f.to_row_ms.size(), f.failures, percentile(f.to_row_ms, 0.5),
                percentile(f.to_row_ms, 1.0), percentile(f.to_row_ms, 1.0) / ttl_ms, percentile(f.to_http_ms, 0.5),
                percentile(f.to_http_ms, 1.0), f.double_masters);
    if (scenario == "stop") std::printf("  200-after-resume=%d", f.resumed_200);
    if (scenario == "switchover")
      std::printf("\n           request commit to n2's new term (database clock): median %.2f ms, p90 %.2f ms, worst %.2f ms",
                  percentile(f.request_to_term_ms, 0.5), percentile(f.request_to_term_ms, 0.9),
                  percentile(f.request_to_term_ms, 1.0));
    std::printf("\n");
    if (f.failures > 0 || f.double_masters > 0 || f.resumed_200 > 0) status = 1;
  }
  if (want("pg-failover") || want("pg-switchover")) {
    const int pg = pg_scenarios(want("pg-failover"), want("pg-switchover"), runs, agents, binary, ttl_s, renew_s, ttl,
                                pg_sh, pair_dir);
    status = std::max(status, pg);
  }
  return status;
}
