// Metrics of one agent in the Prometheus text format (0.0.4).
#include "metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <utility>

#ifndef LEASE_AGENT_VERSION
#define LEASE_AGENT_VERSION "unknown"
#endif

namespace lease_agent {

AgentMetrics::AgentMetrics(std::string cluster, std::string node)
    : cluster_(std::move(cluster)), node_(std::move(node)) {}

void AgentMetrics::round_trip(double seconds) {
  if (std::isnan(seconds)) return;
  if (seconds < 0) seconds = 0;
  std::lock_guard<std::mutex> lock(mu_);
  ++round_trips_;
  round_trip_sum_ += seconds;
  for (size_t i = 0; i < kBuckets.size(); ++i)
    if (seconds <= kBuckets[i]) ++bucket_counts_[i];
}

void AgentMetrics::error(const std::string& kind) {
  size_t i = 0;
  while (i + 1 < kErrorKinds.size() && kind != kErrorKinds[i]) ++i;  // the last is "other"
  std::lock_guard<std::mutex> lock(mu_);
  ++errors_[i];
}

void AgentMetrics::transition(const std::string& to, const std::string& reason) {
  size_t other = kTransitions.size();
  size_t found = kTransitions.size();
  for (size_t i = 0; i < kTransitions.size(); ++i) {
    if (to != kTransitions[i].to) continue;
    if (reason == kTransitions[i].reason) found = i;
    if (std::strcmp(kTransitions[i].reason, "other") == 0) other = i;
  }
  if (found == kTransitions.size()) found = other;
  if (found == kTransitions.size()) return;  // neither master nor standby
  std::lock_guard<std::mutex> lock(mu_);
  ++transitions_[found];
}

void AgentMetrics::clock_warning() {
  std::lock_guard<std::mutex> lock(mu_);
  ++clock_warnings_;
}

void AgentMetrics::fence_wait(std::int64_t waited_ms, int ended) {
  std::lock_guard<std::mutex> lock(mu_);
  ++fence_waits_;
  fence_wait_seconds_ += static_cast<double>(waited_ms) / 1000.0;
  fence_ended_ += static_cast<std::uint64_t>(std::max(0, ended));
}

void AgentMetrics::new_server_life() {
  std::lock_guard<std::mutex> lock(mu_);
  ++new_lives_;
}

std::string AgentMetrics::escape_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string AgentMetrics::format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

namespace {
// A bucket bound in fixed notation ("0.0005", "1", "10"), as the client libraries write it.
std::string format_bound(double v) {
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed);
  return std::string(buf, r.ptr);
}
}  // namespace

std::string AgentMetrics::render(const MetricsView& v) const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string o;
  o.reserve(8192);
  // cluster and node, first on every sample: `cluster="..",node=".."`
  const std::string origin =
      "cluster=\"" + escape_label_value(cluster_) + "\",node=\"" + escape_label_value(node_) + "\"";
  auto family = [&](const char* name, const char* type, const char* help) {
    o += "# HELP ";
    o += name;
    o += ' ';
    o += help;
    o += "\n# TYPE ";
    o += name;
    o += ' ';
    o += type;
    o += '\n';
  };
  // One sample: name{origin,extra} value
  auto sample = [&](const std::string& name, const std::string& extra, const std::string& value) {
    o += name;
    o += '{';
    o += origin;
    if (!extra.empty()) {
      o += ',';
      o += extra;
    }
    o += "} ";
    o += value;
    o += '\n';
  };
  auto label = [](const char* key, const std::string& value) {
    return std::string(key) + "=\"" + escape_label_value(value) + "\"";
  };

  family("lease_agent_role", "gauge",
         "1 for the role of this agent at the moment of the scrape, 0 for the others "
         "(master, standby, registering, disconnected, stopping).");
  for (const char* r : kRoles) sample("lease_agent_role", label("role", r), v.role == r ? "1" : "0");

  family("lease_agent_epoch", "gauge", "Epoch of the lease held, or last seen (the fencing token).");
  sample("lease_agent_epoch", "", std::to_string(v.epoch));

  family("lease_agent_lease_left_seconds", "gauge",
         "While master: seconds until this agent's own deadline; otherwise the time left of the lease it last saw.");
  sample("lease_agent_lease_left_seconds", "", format_value(v.lease_left_seconds < 0 ? 0 : v.lease_left_seconds));

  family("lease_agent_database_up", "gauge", "1 while the last database round trip succeeded within ttl.");
  sample("lease_agent_database_up", "", v.healthy ? "1" : "0");

  family("lease_agent_transitions_total", "counter",
         "Role changes of this agent, by the role it changed to and why.");
  for (size_t i = 0; i < kTransitions.size(); ++i)
    sample("lease_agent_transitions_total",
           label("to", kTransitions[i].to) + "," + label("reason", kTransitions[i].reason),
           std::to_string(transitions_[i]));

  family("lease_agent_heartbeat_round_trip_seconds", "histogram",
         "Duration of successful heartbeats (one SQL statement each), seconds.");
  for (size_t i = 0; i < kBuckets.size(); ++i)
    sample("lease_agent_heartbeat_round_trip_seconds_bucket", label("le", format_bound(kBuckets[i])),
           std::to_string(bucket_counts_[i]));
  sample("lease_agent_heartbeat_round_trip_seconds_bucket", "le=\"+Inf\"", std::to_string(round_trips_));
  sample("lease_agent_heartbeat_round_trip_seconds_sum", "", format_value(round_trip_sum_));
  sample("lease_agent_heartbeat_round_trip_seconds_count", "", std::to_string(round_trips_));

  family("lease_agent_errors_total", "counter",
         "Failed database operations, by kind (heartbeat, connect, notification, switchover, other).");
  for (size_t i = 0; i < kErrorKinds.size(); ++i)
    sample("lease_agent_errors_total", label("kind", kErrorKinds[i]), std::to_string(errors_[i]));

  family("lease_agent_clock_drift_warnings_total", "counter",
         "Times the database's clock and this agent's monotonic clock disagreed by more than the margin.");
  sample("lease_agent_clock_drift_warnings_total", "", std::to_string(clock_warnings_));

  family("lease_agent_fence_waits_total", "counter",
         "Promotions that waited for application transactions of the previous term that held its fence.");
  sample("lease_agent_fence_waits_total", "", std::to_string(fence_waits_));
  family("lease_agent_fence_wait_seconds_total", "counter",
         "Time those promotions waited for the fence of the previous term.");
  sample("lease_agent_fence_wait_seconds_total", "", format_value(fence_wait_seconds_));
  family("lease_agent_fence_ended_transactions_total", "counter",
         "Application transactions of a previous term ended (terminated) because they held its fence too long.");
  sample("lease_agent_fence_ended_transactions_total", "", std::to_string(fence_ended_));
  family("lease_agent_server_lives_total", "counter",
         "Reconnections that found the database in a new server life (crash recovery, a promotion): no term for ttl.");
  sample("lease_agent_server_lives_total", "", std::to_string(new_lives_));

  family("lease_agent_build_info", "gauge", "Always 1; the version of this agent as a label.");
  sample("lease_agent_build_info", label("version", LEASE_AGENT_VERSION), "1");
  return o;
}

std::string AgentMetrics::render(bool master, bool healthy, std::int64_t epoch) const {
  MetricsView v;
  v.role = master ? "master" : healthy ? "standby" : "disconnected";
  v.epoch = epoch;
  v.healthy = healthy;
  return render(v);
}

}  // namespace lease_agent
