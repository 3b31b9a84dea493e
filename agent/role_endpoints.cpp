// The role endpoints on cpp-httplib. GET and HEAD answer alike.
#include "role_endpoints.h"

#include <httplib.h>

#include <nlohmann/json.hpp>

namespace lease_agent {

std::string status_json(const RoleView& v) {
  nlohmann::ordered_json j;
  j["cluster"] = v.cluster;
  j["node"] = v.node;
  j["address"] = v.address;
  j["role"] = v.role;
  j["epoch"] = v.epoch;
  if (v.master_node.empty()) {
    j["master"] = nullptr;
    j["master_address"] = nullptr;
  } else {
    j["master"] = v.master_node;
    j["master_address"] = v.master_address;
  }
  j["lease_left_ms"] = v.lease_left_ms;
  j["healthy"] = v.healthy;
  j["may_acquire"] = v.may_acquire;
  if (v.last_round_trip_ago_ms < 0) {
    j["last_round_trip_ago_ms"] = nullptr;
    j["last_round_trip_latency_ms"] = nullptr;
  } else {
    j["last_round_trip_ago_ms"] = v.last_round_trip_ago_ms;
    j["last_round_trip_latency_ms"] = v.last_round_trip_latency_ms;
  }
  return j.dump() + "\n";
}

RoleEndpoints::RoleEndpoints(std::function<RoleView()> view, std::function<std::string()> metrics)
    : view_(std::move(view)), metrics_(std::move(metrics)) {}

RoleEndpoints::~RoleEndpoints() { stop(); }

bool RoleEndpoints::start(const std::string& host, int port, std::string& error) {
  server_ = std::make_unique<httplib::Server>();
  // Two threads: answers are computed in microseconds; keep the agent small.
  server_->new_task_queue = [] { return new httplib::ThreadPool(2); };
  server_->set_keep_alive_max_count(100);
  // Headers and body go out in separate writes: without TCP_NODELAY, a health checker
  // on a kept-alive connection waits ~40 ms for each answer (Nagle + delayed ACK).
  server_->set_tcp_nodelay(true);
  server_->set_read_timeout(5, 0);
  server_->set_write_timeout(5, 0);

  auto answer = [](httplib::Response& res, bool ok, const char* yes, const char* no) {
    res.status = ok ? 200 : 503;
    res.set_content(ok ? yes : no, "text/plain");
  };
  server_->Get("/master", [this, answer](const httplib::Request&, httplib::Response& res) {
    answer(res, view_().master, "master\n", "not master\n");
  });
  server_->Get("/standby", [this, answer](const httplib::Request&, httplib::Response& res) {
    answer(res, view_().connected_standby, "standby\n", "not a connected standby\n");
  });
  server_->Get("/health", [this, answer](const httplib::Request&, httplib::Response& res) {
    answer(res, view_().healthy, "healthy\n", "no database round trip within ttl\n");
  });
  server_->Get("/status", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(status_json(view_()), "application/json");
  });

  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(metrics_(), "text/plain; version=0.0.4");
  });

  if (!server_->bind_to_port(host, port)) {
    error = "cannot listen on " + host + ":" + std::to_string(port) +
            " (address in use or not available)";
    server_.reset();
    return false;
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return true;
}

void RoleEndpoints::stop() {
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace lease_agent
