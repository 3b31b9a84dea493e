// Metrics of one agent, rendered in the Prometheus text format (0.0.4) for /metrics.
//
// Every sample carries the labels cluster and node, so that alert rules can group
// the agents of one cluster (`sum by (cluster) (lease_agent_role{role="master"})`)
// without relabelling in the scrape config. Every labelled series that can exist is
// rendered from the start (counters at 0), so rate() and increase() see the first
// event. The families:
//
//   lease_agent_role{role}                        gauge, 1 for the role of this instant, 0 for the other four
//   lease_agent_epoch                             gauge
//   lease_agent_lease_left_seconds                gauge
//   lease_agent_database_up                       gauge
//   lease_agent_transitions_total{to,reason}      counter
//   lease_agent_heartbeat_round_trip_seconds      histogram
//   lease_agent_errors_total{kind}                counter
//   lease_agent_clock_drift_warnings_total        counter
//   lease_agent_build_info{version}               gauge, always 1
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <string>

namespace lease_agent {

// The gauges of one instant, computed by the daemon under its lock.
struct MetricsView {
  std::string role;               // "master", "standby", "registering", "disconnected", "stopping"
  std::int64_t epoch = 0;         // epoch held, or last seen
  double lease_left_seconds = 0;  // while master: until this agent's own deadline; otherwise the lease it last saw
  bool healthy = false;           // last database round trip within ttl
};

// Counters and the round-trip histogram. Thread-safe: every method takes an
// internal mutex (the daemon may call it under its own lock or not).
class AgentMetrics {
 public:
  // The roles of lease_agent_role, in the order rendered.
  static constexpr std::array<const char*, 5> kRoles = {"master", "standby", "registering", "disconnected",
                                                        "stopping"};
  // The kinds of lease_agent_errors_total; an unknown kind is counted as "other".
  static constexpr std::array<const char*, 5> kErrorKinds = {"heartbeat", "connect", "notification", "switchover",
                                                             "other"};
  // The (to, reason) pairs of lease_agent_transitions_total. A reason not listed for
  // its `to` is counted as reason "other" of that `to` (the legacy promoted() and
  // demoted() count there too); a `to` other than master/standby is not counted.
  struct TransitionKind {
    const char* to;
    const char* reason;
  };
  static constexpr std::array<TransitionKind, 12> kTransitions = {{
      {"master", "free"},        // took a free lease
      {"master", "handed"},      // handed to this node by the clean stop of the master
      {"master", "expired"},     // took over after watching it unchanged for ttl
      {"master", "switchover"},  // handed over to this node
      {"master", "recovered"},   // renewed a lease of its own it had stopped counting on
      {"master", "other"},
      {"standby", "deadline"},    // no renewal by the deadline
      {"standby", "lost"},        // an answer showed another holder
      {"standby", "stop"},        // clean stop
      {"standby", "switchover"},  // handed the lease to another node
      {"standby", "duplicate"},   // exits: the node name is taken
      {"standby", "other"},
  }};
  // Upper bounds of the round-trip histogram, seconds (up to the default ttl).
  static constexpr std::array<double, 14> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,    0.25,  0.5,    1.0,   2.5,  5.0,   10.0};

  AgentMetrics(std::string cluster, std::string node);
  AgentMetrics() : AgentMetrics("", "") {}  // legacy call sites: cluster="" node=""

  void round_trip(double seconds);  // a successful heartbeat and its duration
  // kinds: "heartbeat", "connect", "notification", "switchover"; unknown kinds counted as "other"
  void error(const std::string& kind);
  void transition(const std::string& to, const std::string& reason);
  void clock_warning();
  // A promotion waited `waited_ms` for the fence of the previous term, ending `ended`
  // application transactions.
  void fence_wait(std::int64_t waited_ms, int ended);
  // A reconnection found a new server life.
  void new_server_life();

  // The whole exposition, with the gauges of `v`.
  std::string render(const MetricsView& v) const;

  // Legacy API, thin wrappers until daemon.cpp calls the one above.
  void heartbeat_error() { error("heartbeat"); }
  void connect_error() { error("connect"); }
  void promoted() { transition("master", "other"); }
  void demoted() { transition("standby", "other"); }
  // Role "master" when master, else "standby" when healthy, else "disconnected".
  std::string render(bool master, bool healthy, std::int64_t epoch) const;

  // A label value escaped per the text format: backslash, double quote, newline.
  static std::string escape_label_value(const std::string& v);
  // A sample value: shortest round-trip form; NaN, +Inf, -Inf.
  static std::string format_value(double v);

 private:
  const std::string cluster_;
  const std::string node_;
  mutable std::mutex mu_;
  std::array<std::uint64_t, kBuckets.size()> bucket_counts_{};  // cumulative: seconds <= bound
  std::uint64_t round_trips_ = 0;
  double round_trip_sum_ = 0;
  std::array<std::uint64_t, kErrorKinds.size()> errors_{};
  std::array<std::uint64_t, kTransitions.size()> transitions_{};
  std::uint64_t clock_warnings_ = 0;
  std::uint64_t fence_waits_ = 0;
  double fence_wait_seconds_ = 0;
  std::uint64_t fence_ended_ = 0;
  std::uint64_t new_lives_ = 0;
};

}  // namespace lease_agent
