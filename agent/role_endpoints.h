// The role endpoints: /master, /standby, /health and /status over HTTP for load
// balancers, orchestrators and people.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

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
  bool may_acquire = false;        // it has seen the server's life for ttl: it may start a term
};

// The bounds of the endpoint server. Load balancers and monitoring keep connections
// alive, and a connection holds one thread for as long as it is open; so threads are
// made on demand, one per open connection, up to `max_connections`. A connection
// beyond that is closed at once (never queued behind the others), and an idle one is
// closed after `keep_alive_idle`, so a crowd of idle checkers cannot starve a new one
// for long. The defaults suit production; tests shrink them.
struct EndpointLimits {
  std::size_t max_connections = 64;                 // served at once; more are closed at once
  std::chrono::milliseconds keep_alive_idle{2000};  // an idle kept-alive connection is closed
  std::size_t keep_alive_max_requests = 100;        // then the connection is closed
  std::chrono::milliseconds request_timeout{5000};  // to read one request and write its answer
  std::size_t warm_threads = 2;                     // idle threads kept for the next connections
  std::chrono::milliseconds idle_thread_linger{10000};  // then an idle thread beyond those exits
};

// Serves the endpoints on threads of its own. Every answer asks `view` afresh, so
// /master is judged at the moment of the request; /metrics answers what `metrics`
// returns (Prometheus text format).
class RoleEndpoints {
 public:
  RoleEndpoints(std::function<RoleView()> view, std::function<std::string()> metrics,
                EndpointLimits limits = {});
  ~RoleEndpoints();  // stops and joins
  RoleEndpoints(const RoleEndpoints&) = delete;
  RoleEndpoints& operator=(const RoleEndpoints&) = delete;

  // Binds HOST:PORT (PORT 0: any free port, see port()) and starts serving. On failure
  // returns false and sets `error`.
  bool start(const std::string& host, int port, std::string& error);
  // The port bound by the last successful start(); 0 before.
  int port() const { return port_; }
  // Stops serving: closes the listening socket and every open connection (in-flight
  // answers that can be written at once still go out), and joins every thread. Prompt
  // even with idle kept-alive connections open. Idempotent.
  void stop();

 private:
  class Server;  // the HTTP server (role_endpoints.cpp)

  std::function<RoleView()> view_;
  std::function<std::string()> metrics_;
  EndpointLimits limits_;
  std::unique_ptr<Server> server_;
  std::thread thread_;
  int port_ = 0;
};

// The /status document.
std::string status_json(const RoleView& v);

}  // namespace lease_agent
