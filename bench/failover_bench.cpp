// failover_bench: measures takeover times of real lease-agent processes on a real PostgreSQL.
//
//   build/failover_bench --dsn "host=127.0.0.1 port=5432 dbname=x user=y" [--runs 20]
//                        [--ttl 2s] [--renew 500ms] [--agents 3] [--scenario kill,term,stop,switchover]
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
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <netinet/in.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <httplib.h>
#include <pqxx/pqxx>
#include <optional>
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
  app.add_option("--scenario", scenarios, "comma-separated: kill, term, stop, switchover");
  CLI11_PARSE(app, argc, argv);
  const auto ttl = lease_agent::parse_duration(ttl_s);
  const double ttl_ms = static_cast<double>(ttl.count());

  std::optional<pqxx::connection> conn;
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
  pqxx::connection& db = *conn;
  std::printf("failover_bench: %d runs per scenario, %d agents, ttl=%s renew=%s\n", runs, agents, ttl_s.c_str(),
              renew_s.c_str());
  int status = 0;
  for (const std::string scenario : {"kill", "term", "stop", "switchover"}) {
    if (scenarios.find(scenario) == std::string::npos) continue;
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
  return status;
}
