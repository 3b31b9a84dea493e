// Metrics of one agent, rendered in the Prometheus text format for /metrics.
#pragma once

#include <array>
#include <cstdint>
#include <string>

namespace lease_agent {

// Counters and the round-trip histogram. Thread safety: none; the daemon
// guards it with its mutex.
class AgentMetrics {
 public:
  void round_trip(double seconds);  // a successful heartbeat and how long it took
  void heartbeat_error() { ++heartbeat_errors_; }
  void connect_error() { ++connect_errors_; }
  void promoted() { ++promotions_; }
  void demoted() { ++demotions_; }
  void clock_warning() { ++clock_warnings_; }

  // The whole exposition, with the gauges of this instant.
  std::string render(bool master, bool healthy, std::int64_t epoch) const;

 private:
  static constexpr std::array<double, 12> kBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                                      0.05,   0.1,   0.25,   0.5,   1.0,  2.5};
  std::array<std::uint64_t, kBuckets.size()> bucket_counts_{};
  std::uint64_t round_trips_ = 0;
  double round_trip_sum_ = 0;
  std::uint64_t heartbeat_errors_ = 0;
  std::uint64_t connect_errors_ = 0;
  std::uint64_t promotions_ = 0;
  std::uint64_t demotions_ = 0;
  std::uint64_t clock_warnings_ = 0;
};

}  // namespace lease_agent
