// Metrics of one agent in the Prometheus text format.
#include "metrics.h"

#include <sstream>

namespace lease_agent {

void AgentMetrics::round_trip(double seconds) {
  ++round_trips_;
  round_trip_sum_ += seconds;
  for (size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++bucket_counts_[i];
}

std::string AgentMetrics::render(bool master, bool healthy, std::int64_t epoch) const {
  std::ostringstream o;
  auto metric = [&](const char* name, const char* type, const char* help) {
    o << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  metric("lease_agent_master", "gauge", "1 while this node holds the lease, judged now.");
  o << "lease_agent_master " << (master ? 1 : 0) << "\n";
  metric("lease_agent_epoch", "gauge", "Epoch of the lease last held or seen (the fencing token).");
  o << "lease_agent_epoch " << epoch << "\n";
  metric("lease_agent_database_up", "gauge", "1 while the last database round trip succeeded within ttl.");
  o << "lease_agent_database_up " << (healthy ? 1 : 0) << "\n";
  metric("lease_agent_transitions_total", "counter", "Role changes of this agent.");
  o << "lease_agent_transitions_total{to=\"master\"} " << promotions_ << "\n";
  o << "lease_agent_transitions_total{to=\"standby\"} " << demotions_ << "\n";
  metric("lease_agent_errors_total", "counter", "Failed heartbeats and connection attempts.");
  o << "lease_agent_errors_total{kind=\"heartbeat\"} " << heartbeat_errors_ << "\n";
  o << "lease_agent_errors_total{kind=\"connect\"} " << connect_errors_ << "\n";
  metric("lease_agent_clock_drift_warnings_total", "counter",
         "Times the database's clock and this agent's monotonic clock disagreed by more than the margin.");
  o << "lease_agent_clock_drift_warnings_total " << clock_warnings_ << "\n";
  metric("lease_agent_round_trip_seconds", "histogram", "Duration of successful heartbeats.");
  for (size_t i = 0; i < kBuckets.size(); ++i)
    o << "lease_agent_round_trip_seconds_bucket{le=\"" << kBuckets[i] << "\"} " << bucket_counts_[i] << "\n";
  o << "lease_agent_round_trip_seconds_bucket{le=\"+Inf\"} " << round_trips_ << "\n";
  o << "lease_agent_round_trip_seconds_sum " << round_trip_sum_ << "\n";
  o << "lease_agent_round_trip_seconds_count " << round_trips_ << "\n";
  return o.str();
}

}  // namespace lease_agent
