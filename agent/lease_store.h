// The lease store: the one adapter between the agent and PostgreSQL (libpqxx).
// All SQL the agent sends is here; the protocol itself is the SQL of sql/.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <pqxx/connection>

#include "election.h"

namespace lease_agent {

// Every failure of the store is a StoreError. `fatal` ones cannot be waited out
// (authentication refused, schema missing or too old): the agent exits 3. The
// others (unreachable, timeouts, lost connections) are retried.
class StoreError : public std::runtime_error {
 public:
  StoreError(const std::string& what, bool fatal) : std::runtime_error(what), fatal_(fatal) {}
  bool fatal() const { return fatal_; }

 private:
  bool fatal_;
};

// A notification of the lease row of this store's cluster.
struct LeaseNotice {
  std::int64_t version = 0;
  bool free = false;
};

// One node as `lease-agent status` shows it.
struct NodeStatus {
  std::string node;
  std::string address;
  std::string role;  // "master", "standby" or "gone"
  std::string registered_at;  // ISO 8601, UTC, the database's clock
  std::string heartbeat_at;
  bool holder = false;
};

struct ClusterStatus {
  std::string cluster;
  std::string holder;  // empty when nobody holds an unexpired lease
  std::int64_t epoch = 0;
  std::int64_t lease_left_ms = 0;
  std::vector<NodeStatus> nodes;
};

// The schema version this agent needs (lease_agent.schema_info.version).
constexpr int kSchemaVersion = 2;

struct StoreOptions {
  std::string dsn;  // libpq connection string or URI; empty: libpq's environment
  std::string cluster;
  std::string node;
  std::string incarnation;
  std::string address;
  milliseconds ttl{10000};
  milliseconds renew{2000};
};

// Thread safety: one thread at a time.
class LeaseStore {
 public:
  explicit LeaseStore(StoreOptions options);
  ~LeaseStore();
  LeaseStore(const LeaseStore&) = delete;
  LeaseStore& operator=(const LeaseStore&) = delete;

  // Connects with timeouts and keepalives set from ttl and renew, checks the
  // schema version (unless !check_schema), prepares the statements and, when
  // `listen`, LISTENs for lease notifications. Throws StoreError.
  void connect(bool listen = true, bool check_schema = true);
  bool connected() const { return conn_ != nullptr; }
  void disconnect();
  // The connection's socket for waiting on notifications; -1 when not connected.
  int socket() const;
  // "host:port/dbname" of the open connection: safe to log (no password).
  std::string describe_connection() const;

  // One heartbeat (sql/002_protocol.sql: lease_agent.heartbeat). Throws StoreError;
  // after a lost connection the store is disconnected.
  HeartbeatAnswer heartbeat(const HeartbeatRequest& req);

  // Clean stop: releases the lease if held, marks the node gone. True if released.
  bool leave();

  // Reads what the socket has and returns the notices of this cluster.
  std::vector<LeaseNotice> take_notices();

  // One-shot view of the cluster for `lease-agent status`.
  ClusterStatus cluster_status();

  // Applies the embedded sql/ files in one transaction; idempotent.
  void apply_schema();

  // The longest the agent's own statements (heartbeat, leave; five times this for the
  // connection set-up) may go unanswered before the connection is cut: twice the
  // statement_timeout that the server applies (max(renew, ttl/4, 250ms)), so that a
  // server that is merely slow answers with its own error first. One-shot commands
  // (status, schema apply) get 30 s.
  milliseconds call_timeout() const;

 private:
  struct Listener;
  class Watchdog;
  class Guard;
  [[noreturn]] void fail(const std::exception& e, const char* doing);
  milliseconds statement_timeout() const;

  StoreOptions opt_;
  std::unique_ptr<pqxx::connection> conn_;
  std::unique_ptr<Listener> listener_;
  std::unique_ptr<Watchdog> watchdog_;
};

// Connection options the agent adds to the user's DSN unless the DSN sets them:
// connect_timeout, keepalives, tcp_user_timeout, application_name. Throws
// StoreError (fatal) if the DSN cannot be parsed. Exposed for tests.
std::string effective_conninfo(const std::string& dsn, milliseconds ttl, milliseconds renew,
                               const std::string& application_name);

// The SQL files of sql/, embedded at build time, in name order.
const std::vector<std::pair<std::string, std::string>>& schema_files();

}  // namespace lease_agent
