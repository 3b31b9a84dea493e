// The daemon: one worker thread talks to the database, one timer thread enforces the
// lease deadline, the HTTP threads and the hook thread only read the election.
//
// The worker may block in a database call for as long as libpq's timeouts allow; it
// never holds the mutex while it does. The deadline thread needs nothing but the
// mutex and the monotonic clock, so no database call can hold up a demotion.
#include "daemon.h"

#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <thread>

#include "election.h"
#include "hooks.h"
#include "lease_store.h"
#include "log.h"
#include "metrics.h"
#include "role_endpoints.h"

namespace lease_agent {
namespace {

long long ms_between(TimePoint a, TimePoint b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

// Everything the threads share, behind one mutex.
class Agent {
 public:
  explicit Agent(const Settings& s)
      : settings_(s),
        election_(Timing{s.ttl, s.renew}),
        hooks_(s.cluster, s.node, s.hook_timeout) {
    wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }
  ~Agent() {
    if (wake_fd_ >= 0) ::close(wake_fd_);
  }

  // Applies a decision of the election: logs it, queues hooks, re-arms the timer.
  // REQUIRES: mu_ held.
  void apply(const Decision& d) {
    if (!d.warning.empty()) {
      metrics_.clock_warning();
      log_warning(d.warning, {{"event", "clock-drift"}});
    }
    switch (d.transition) {
      case Transition::promote:
        metrics_.promoted();
        log_info(d.reason, {{"event", "promote"}, {"role", "master"}, {"epoch", std::to_string(election_.epoch())}});
        hooks_.enqueue({"on-promote", settings_.on_promote, "master", election_.epoch()});
        break;
      case Transition::demote:
        metrics_.demoted();
        log_warning(d.reason, {{"event", "demote"}, {"role", "standby"}, {"epoch", std::to_string(election_.epoch())}});
        hooks_.enqueue({"on-demote", settings_.on_demote, "standby", election_.epoch()});
        break;
      case Transition::exit_duplicate:
        log_error("node " + settings_.node + " of cluster " + settings_.cluster + ": " + d.reason,
                  {{"event", "duplicate-node"}});
        break;
      case Transition::none:
        if (d.notable) log_info(d.reason);
        break;
    }
    timer_cv_.notify_all();
  }

  RoleView view() {
    std::lock_guard<std::mutex> lock(mu_);
    const TimePoint now = Clock::now();
    RoleView v;
    v.cluster = settings_.cluster;
    v.node = settings_.node;
    v.address = settings_.address;
    v.master = !stopping_ && election_.is_master(now);
    v.connected_standby = !stopping_ && election_.is_connected_standby(now);
    v.healthy = election_.healthy(now);
    v.role = stopping_                                       ? "stopping"
             : v.master                                      ? "master"
             : v.connected_standby                           ? "standby"
             : v.healthy && !election_.registered()          ? "registering"
                                                             : "disconnected";
    v.epoch = election_.epoch();
    v.may_acquire = !stopping_ && election_.may_acquire(now);
    const HeartbeatAnswer& a = election_.last_answer();
    if (v.master) {
      v.master_node = settings_.node;
      v.master_address = settings_.address;
      v.lease_left_ms = ms_between(now, election_.deadline());
    } else if (election_.last_success()) {
      v.master_node = a.holder;
      v.master_address = a.holder_address;
      v.lease_left_ms = std::max<long long>(0, a.lease_left_ms - ms_between(*election_.last_success(), now));
    }
    if (election_.last_success()) {
      v.last_round_trip_ago_ms = ms_between(*election_.last_success(), now);
      v.last_round_trip_latency_ms = last_latency_ms_;
    }
    return v;
  }

  // From here on the agent is not master (503, on-demote queued), whatever answer
  // may still be in flight: the worker feeds no answer to the election once stopping.
  std::string metrics() {
    std::lock_guard<std::mutex> lock(mu_);
    const TimePoint now = Clock::now();
    return metrics_.render(!stopping_ && election_.is_master(now), election_.healthy(now), election_.epoch());
  }

  void request_stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stopping_ = true;
      apply(election_.resign(Clock::now()));
    }
    wake();
  }

  void wake() {
    const std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
  }

  void drain_wake() {
    std::uint64_t v;
    [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof v);
  }

  // The deadline thread: demotes the instant the deadline passes.
  void deadline_loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!timer_done_) {
      if (election_.holding())
        timer_cv_.wait_until(lock, election_.deadline());
      else
        timer_cv_.wait(lock);
      apply(election_.tick(Clock::now()));
    }
  }

  void stop_timer() {
    std::lock_guard<std::mutex> lock(mu_);
    timer_done_ = true;
    timer_cv_.notify_all();
  }

  int worker_loop();
  void leave();

  const Settings& settings_;
  std::mutex mu_;
  Election election_;
  HookRunner hooks_;
  std::condition_variable timer_cv_;
  bool timer_done_ = false;
  bool stopping_ = false;
  long long last_latency_ms_ = -1;
  AgentMetrics metrics_;
  int wake_fd_ = -1;
  std::unique_ptr<LeaseStore> store_;
};

// The worker: connect, heartbeat when due, wait for notifications in between.
int Agent::worker_loop() {
  milliseconds backoff = election_.timing().retry();
  TimePoint next_connect{};
  bool ever_connected = false;
  // An outage is logged once when it starts, again when its error changes, and
  // once when it ends.
  std::optional<TimePoint> outage_since;
  std::string outage_error;
  auto outage = [&](const std::string& error, TimePoint at) {
    if (!outage_since) outage_since = at;
    if (error != outage_error)
      log_warning(error + "; retrying with backoff up to " + std::to_string(election_.timing().renew.count()) + "ms",
                  {{"event", "database-unreachable"}});
    outage_error = error;
  };

  for (;;) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return kExitClean;
    }
    TimePoint now = Clock::now();

    // 1. Connect, with backoff while the database is away.
    if (!store_->connected()) {
      if (now < next_connect) {
        pollfd p{wake_fd_, POLLIN, 0};
        ::poll(&p, 1, static_cast<int>(std::max<long long>(1, ms_between(now, next_connect))));
        drain_wake();
        continue;
      }
      try {
        store_->connect();
        if (!ever_connected || outage_since)
          log_info(outage_since ? "connected to the database again after " +
                                      std::to_string(ms_between(*outage_since, Clock::now())) + "ms"
                                : std::string("connected to the database"),
                   {{"database", store_->describe_connection()}});
        ever_connected = true;
        {
          std::lock_guard<std::mutex> lock(mu_);
          election_.on_connected(Clock::now());
        }
        outage_since.reset();
        outage_error.clear();
        backoff = election_.timing().retry();
      } catch (const StoreError& e) {
        if (e.fatal()) {
          log_error(e.what(), {{"event", "fatal"}});
          return kExitFault;
        }
        {
          std::lock_guard<std::mutex> lock(mu_);
          metrics_.connect_error();
        }
        outage(e.what(), now);
        next_connect = Clock::now() + backoff;
        backoff = std::min(backoff * 2, election_.timing().renew);
        continue;
      }
    }

    // 2. Until the next heartbeat is due: notifications of the lease row.
    TimePoint due;
    {
      std::lock_guard<std::mutex> lock(mu_);
      due = election_.next_heartbeat();
    }
    now = Clock::now();
    if (now < due) {
      pollfd p[2] = {{wake_fd_, POLLIN, 0}, {store_->socket(), POLLIN, 0}};
      const long long wait = std::max<long long>(1, ms_between(now, due));
      ::poll(p, 2, static_cast<int>(std::min<long long>(wait, 60000)));
      if (p[0].revents) drain_wake();
      if (p[1].revents) {
        try {
          const std::vector<LeaseNotice> notices = store_->take_notices();
          const TimePoint received = Clock::now();
          std::lock_guard<std::mutex> lock(mu_);
          for (const LeaseNotice& n : notices) apply(election_.on_notify(n.version, n.free, received));
        } catch (const StoreError& e) {
          outage(e.what(), Clock::now());
        }
      }
      continue;
    }

    // 3. The heartbeat: one statement.
    HeartbeatRequest req;
    const TimePoint sent = Clock::now();
    {
      std::lock_guard<std::mutex> lock(mu_);
      apply(election_.tick(sent));
      req = election_.request(sent);
    }
    try {
      const HeartbeatAnswer a = store_->heartbeat(req);
      const TimePoint received = Clock::now();
      std::vector<LeaseNotice> notices = store_->take_notices();
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return kExitClean;  // the lease, if ours, is released by leave()
      last_latency_ms_ = ms_between(sent, received);
      metrics_.round_trip(std::chrono::duration<double>(received - sent).count());
      apply(election_.tick(received));
      const Decision d = election_.on_answer(req, a, sent, received);
      apply(d);
      if (d.transition == Transition::exit_duplicate) return kExitFault;
      for (const LeaseNotice& n : notices) apply(election_.on_notify(n.version, n.free, received));
    } catch (const StoreError& e) {
      const TimePoint failed = Clock::now();
      if (e.fatal()) {
        log_error(e.what(), {{"event", "fatal"}});
        return kExitFault;
      }
      std::lock_guard<std::mutex> lock(mu_);
      apply(election_.tick(failed));
      metrics_.heartbeat_error();
      const Decision d = election_.on_failure(sent, failed, e.what());
      if (d.notable) log_warning(d.reason, {{"event", "heartbeat-failed"}});
      if (!store_->connected()) next_connect = failed + election_.timing().retry();
    }
  }
}

// Clean stop, after the demotion: release the lease, mark the node gone.
void Agent::leave() {
  try {
    if (!store_->connected()) store_->connect(false);
    const bool released = store_->leave();
    log_info(released ? "released the lease and left the cluster" : "left the cluster",
             {{"event", "leave"}});
  } catch (const StoreError& e) {
    log_warning(std::string("could not leave the cluster cleanly: ") + e.what() +
                "; the lease and registration expire after ttl");
  }
}

// Standalone (active=false): no database, always master.
int run_standalone(const Settings& s) {
  log_warning("active=false: standalone node, no database, always master", {{"event", "standalone"}});
  HookRunner hooks(s.cluster, s.node, s.hook_timeout);
  hooks.enqueue({"on-promote", s.on_promote, "master", 0});
  std::atomic<bool> stopping{false};
  AgentMetrics standalone_metrics;
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
  }, [&] { return standalone_metrics.render(!stopping, true, 0); });
  std::string error;
  if (s.http_enabled() && !http.start(s.http_host(), s.http_port(), error)) {
    log_error("http: " + error);
    return kExitUsage;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  int sig = 0;
  sigwait(&set, &sig);
  stopping = true;
  log_info(std::string("stopping on ") + strsignal(sig), {{"event", "demote"}, {"role", "standby"}, {"epoch", "0"}});
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

  // 1. The pieces, in order: the agent, the store, the endpoints.
  Agent agent(s);
  const std::string incarnation = new_incarnation();
  agent.store_ = std::make_unique<LeaseStore>(
      StoreOptions{s.dsn, s.cluster, s.node, incarnation, s.address, s.ttl, s.renew});
  RoleEndpoints http([&agent] { return agent.view(); }, [&agent] { return agent.metrics(); });
  std::string error;
  if (s.http_enabled() && !http.start(s.http_host(), s.http_port(), error)) {
    log_error("http: " + error);
    return kExitUsage;
  }
  log_info("starting", {{"incarnation", incarnation},
                        {"ttl", format_duration(s.ttl)},
                        {"renew", format_duration(s.renew)},
                        {"http", s.http}});

  // 2. The signals and the deadline get threads of their own.
  std::thread signals([&agent] {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGHUP) {
        log_info("SIGHUP ignored: settings are read at start; restart to change them");
        continue;
      }
      {
        std::lock_guard<std::mutex> lock(agent.mu_);
        if (agent.timer_done_) return;  // woken by the shutdown below
      }
      log_info(std::string("stopping on ") + strsignal(sig), {{"event", "stop"}});
      agent.request_stop();
    }
  });
  std::thread deadline([&agent] { agent.deadline_loop(); });

  // 3. The loop, until a signal or a fault.
  const int status = agent.worker_loop();

  // 4. Clean stop: stop serving (503, on-demote), then release, then leave.
  agent.request_stop();
  agent.hooks_.drain();
  if (status == kExitClean) agent.leave();
  agent.store_->disconnect();
  http.stop();
  agent.stop_timer();
  deadline.join();
  pthread_kill(signals.native_handle(), SIGTERM);
  signals.join();
  log_info("stopped", {{"exit", std::to_string(status)}});
  return status;
}

}  // namespace lease_agent
