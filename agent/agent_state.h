// The agent's shared state: the election and what goes with it, behind one mutex.
//
// Every thread reads or changes the election through AgentState: the worker (answers,
// failures, notifications), the deadline timer (demotion at the deadline), the signal
// thread (a clean stop) and the HTTP threads (the role view). A change returns the
// election's Decision; what the decision asks for (log lines, hooks, a systemd status)
// is collected as Effects under the mutex and carried out after it is released, in
// the order the decisions were taken. So no log write, hook start or notification to
// systemd ever runs while the mutex is held: nothing of that kind can hold up the
// deadline.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "election.h"
#include "hooks.h"
#include "log.h"
#include "metrics.h"
#include "role_endpoints.h"
#include "settings.h"
#include "systemd_notify.h"

namespace lease_agent {

// What one or more decisions ask for, carried out outside the mutex.
struct Effects {
  struct Line {
    LogLevel level;
    std::string message;
    LogFields fields;
    // When it happened: stamped under the mutex, with the decision, so that a line is not
    // dated by when the thread came round to writing it (a promotion is visible on
    // /master from the decision on; tests order the two).
    std::chrono::system_clock::time_point at = std::chrono::system_clock::now();
  };
  std::vector<Line> lines;
  std::vector<HookCall> hooks;
  std::optional<std::string> systemd;  // a message for sd_notify ("READY=1\nSTATUS=...")
};

class AgentState {
 public:
  // Throws std::system_error when the deadline timer's descriptors cannot be made.
  AgentState(const Settings& s, HookRunner& hooks, SystemdNotifier& systemd);
  ~AgentState();
  AgentState(const AgentState&) = delete;
  AgentState& operator=(const AgentState&) = delete;

  // Runs `change` on the election under the mutex, applies the decision it returns,
  // and carries out the effects after the mutex is released. Returns the decision.
  // Once a stop was requested, does nothing (returns no transition): no answer still
  // in flight may change the election of a stopping agent.
  Decision change(const std::function<Decision(Election&, TimePoint now)>& change);
  // The same for several decisions taken at once, applied in order; returns none
  // once a stop was requested.
  std::vector<Decision> change_all(const std::function<std::vector<Decision>(Election&, TimePoint now)>& change);
  // Runs `read` under the mutex (no decision), for values the worker needs.
  template <typename F>
  auto read(F read) {
    std::lock_guard<std::mutex> lock(mu_);
    return read(static_cast<const Election&>(election_), Clock::now());
  }

  // The worker's record of a round trip and of errors (metrics, /status).
  void record_round_trip(TimePoint sent, TimePoint received);
  void record_error(const std::string& kind);
  // Logs now (outside the mutex): for the worker's own lines.
  void log(LogLevel level, const std::string& message, const LogFields& fields = {});

  // A clean stop: from here on the agent is not master (503, on-demote queued),
  // whatever answer may still be in flight: the worker feeds no answer to the
  // election once stopping. Returns whether it was master.
  bool request_stop();
  bool stopping();

  // The deadline timer: demotes the instant the deadline passes (on CLOCK_BOOTTIME, so
  // also at once on resuming from a suspend); pings the systemd watchdog when it is
  // enabled. Returns after stop_timer().
  void deadline_loop();
  void stop_timer();

  RoleView view();
  std::string metrics();

  const Settings& settings() const { return settings_; }
  Timing timing() const { return election_.timing(); }

 private:
  // REQUIRES: mu_ held.
  void apply(const Decision& d, TimePoint now);
  std::string role(TimePoint now) const;  // REQUIRES: mu_ held
  void perform();  // carries out the pending effects, in order; REQUIRES: mu_ not held
  void wake_timer();  // the deadline timer looks again; REQUIRES: mu_ held
  // Blocks until Clock reaches `until` (max: no limit) or wake_timer() was called.
  void wait_timer(TimePoint until);

  const Settings& settings_;
  HookRunner& hooks_;
  SystemdNotifier& systemd_;

  std::mutex mu_;
  Election election_;
  bool stopping_ = false;
  bool announced_ready_ = false;
  std::string systemd_status_;  // the last STATUS= sent
  long long last_latency_ms_ = -1;
  AgentMetrics metrics_;
  // The deadline timer waits on both: a timerfd on CLOCK_BOOTTIME set to the next
  // deadline (absolute), and an eventfd that wake_timer() writes when the election
  // changed. (A condition variable would wait on CLOCK_MONOTONIC: clock.h.)
  int timer_fd_ = -1;
  int wake_fd_ = -1;
  bool timer_done_ = false;
  std::deque<Effects> pending_;  // decided, not yet carried out

  std::mutex perform_mu_;  // one thread carries out effects at a time, in order
};

}  // namespace lease_agent
