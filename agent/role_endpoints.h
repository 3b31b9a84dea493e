// The role endpoints: /master, /standby, /health and /status over HTTP for load
// balancers, orchestrators and people.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

namespace httplib {
class Server;
}

namespace lease_agent {

// What the agent is at one instant, computed at the moment of the request.
struct RoleView {
  bool master = false;             // holds the lease now (judged by its deadline)
  bool connected_standby = false;  // standby whose last round trip succeeded within ttl
  bool healthy = false;            // last round trip succeeded within ttl
  std::string role;                // "master", "standby", "registering", "disconnected", "stopping"
  std::string cluster;
  std::string node;
  std::string address;
  std::int64_t epoch = 0;
  std::string master_node;         // empty when unknown or free
  std::string master_address;
  std::int64_t lease_left_ms = 0;
  std::int64_t last_round_trip_ago_ms = -1;   // -1: none yet
  std::int64_t last_round_trip_latency_ms = -1;
  bool may_acquire = false;        // its connection is ttl old: it may start a term
};

// Serves the endpoints on a thread pool of its own. Every answer asks `view`
// afresh, so /master is judged at the moment of the request; /metrics answers
// what `metrics` returns (Prometheus text format).
class RoleEndpoints {
 public:
  RoleEndpoints(std::function<RoleView()> view, std::function<std::string()> metrics);
  ~RoleEndpoints();  // stops and joins
  RoleEndpoints(const RoleEndpoints&) = delete;
  RoleEndpoints& operator=(const RoleEndpoints&) = delete;

  // Binds HOST:PORT and starts serving. On failure returns false and sets `error`.
  bool start(const std::string& host, int port, std::string& error);
  void stop();

 private:
  std::function<RoleView()> view_;
  std::function<std::string()> metrics_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
};

// The /status document.
std::string status_json(const RoleView& v);

}  // namespace lease_agent
