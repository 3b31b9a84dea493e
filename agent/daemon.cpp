// The daemon of `lease-agent run`: the pieces wired together, in order. The shared
// state (agent_state.h), the worker that talks to the database (worker.h), the deadline
// timer, the signals, the role endpoints, the hooks and systemd.
//
// Threads: the worker may block in a database call for as long as the store's timeouts
// allow; it never holds the state's mutex while it does. The deadline thread needs
// nothing but that mutex and the monotonic clock, so no database call can hold up a
// demotion. The HTTP threads and the hook thread only read the state.
#include "daemon.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <thread>

#include "agent_state.h"
#include "hooks.h"
#include "lease_store.h"
#include "log.h"
#include "metrics.h"
#include "role_endpoints.h"
#include "systemd_notify.h"
#include "worker.h"

namespace lease_agent {
namespace {

// Standalone (active=false): no database, always master.
int run_standalone(const Settings& s) {
  log_warning("active=false: standalone node, no database, always master", {{"event", "standalone"}});
  HookRunner hooks(s.cluster, s.node, s.hook_timeout);
  hooks.enqueue({"on-promote", s.on_promote, "master", 0});
  std::atomic<bool> stopping{false};
  AgentMetrics standalone_metrics(s.cluster, s.node);
  SystemdNotifier systemd;
  RoleEndpoints http([&] {
    RoleView v;
    v.cluster = s.cluster;
    v.node = s.node;
    v.address = s.address;
    v.master = !stopping;
    v.healthy = true;
    v.role = stopping ? "stopping" : "master";
    v.master_node = s.node;
    v.master_address = s.address;
    return v;
  }, [&] {
    MetricsView m;
    m.role = stopping ? "stopping" : "master";
    m.healthy = true;
    return standalone_metrics.render(m);
  });
  std::string error;
  if (s.http_enabled() && !http.start(s.http_host(), s.http_port(), error)) {
    log_error("http: " + error);
    return kExitUsage;
  }
  systemd.notify("READY=1\nSTATUS=standalone master (active=false)");
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  stopping = true;
  log_info(std::string("stopping on ") + strsignal(sig), {{"event", "demote"}, {"role", "standby"}, {"epoch", 0}});
  hooks.enqueue({"on-demote", s.on_demote, "standby", 0});
  hooks.drain();
  return kExitClean;
}

}  // namespace

void block_stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
}

std::string new_incarnation() {
  std::random_device rd;
  std::uniform_int_distribution<std::uint64_t> dist;
  const std::uint64_t v = (static_cast<std::uint64_t>(rd()) << 32) ^ rd() ^ dist(rd);
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

int run_daemon(const Settings& s) {
  log_set_format(s.log_format);
  log_set_origin(s.cluster, s.node);
  if (!s.active) return run_standalone(s);

  // 1. The pieces, in order: hooks, systemd, the shared state, the store, the worker,
  //    the endpoints.
  HookRunner hooks(s.cluster, s.node, s.hook_timeout);
  SystemdNotifier systemd;
  AgentState state(s, hooks, systemd);
  const std::string incarnation = new_incarnation();
  LeaseStore store(StoreOptions{s.dsn, s.cluster, s.node, incarnation, s.address, s.ttl, s.renew});
  Worker worker(state, store, hooks);
  RoleEndpoints http([&state] { return state.view(); }, [&state] { return state.metrics(); });
  std::string error;
  if (s.http_enabled() && !http.start(s.http_host(), s.http_port(), error)) {
    log_error("http: " + error);
    return kExitUsage;
  }
  log_info("starting", {{"incarnation", incarnation},
                        {"ttl_ms", static_cast<long long>(s.ttl.count())},
                        {"renew_ms", static_cast<long long>(s.renew.count())},
                        {"handover_delay_ms", static_cast<long long>(s.handover_delay.count())},
                        {"http", s.http}});

  // 2. The signals and the deadline get threads of their own.
  std::atomic<bool> shutting_down{false};
  std::atomic<bool> was_master{false};
  std::thread signals([&] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (shutting_down) return;  // woken by the shutdown below
      if (sig == SIGHUP) {
        log_info("SIGHUP ignored: settings are read at start; restart to change them");
        continue;
      }
      if (state.stopping()) {
        log_info(std::string(strsignal(sig)) + " again: the stop is already under way");
        continue;
      }
      log_info(std::string("stopping on ") + strsignal(sig), {{"event", "stop"}});
      if (state.request_stop()) was_master = true;
      worker.wake();
    }
  });
  std::thread deadline([&state] { state.deadline_loop(); });

  // 3. The loop, until a signal or a fault.
  const int status = worker.run();

  // 4. Stop serving (503, on-demote; also before an exit for a fault), then
  //    handover-delay and the release, then leave.
  if (state.request_stop()) was_master = true;
  hooks.drain();
  if (status == kExitClean) worker.leave(was_master);
  store.disconnect();
  http.stop();
  state.stop_timer();
  deadline.join();
  shutting_down = true;
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  log_info("stopped", {{"exit", status}});
  return status;
}

}  // namespace lease_agent
