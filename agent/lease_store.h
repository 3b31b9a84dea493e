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

#include "dsn.h"
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

// The refusal of a switchover request (SQLSTATE LA002..LA005 of lease_agent.switchover):
// one sentence that names which and who is master.
class SwitchoverRefused : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A notification on this store's own channel (sql/002_protocol.sql,
// lease_agent.announce_to): a hand-off to it, a switchover request, a release.
struct LeaseNotice {
  enum class Kind { free, switchover, handed };
  Kind kind = Kind::free;
  std::int64_t version = 0;
  // handed: the new term; switchover: the epoch of the master asked.
  std::int64_t epoch = 0;
  bool to_me = false;   // handed: to this store's incarnation
  std::string how;      // handed: "handed" (a clean stop) or "switchover"
  std::string target;   // switchover: the node asked for
};

// What lease_agent.hand_over did.
struct HandOver {
  bool handed_over = false;  // the lease went to `target` (direct) or is free, reserved for it
  bool direct = false;       // handed off: `target` holds it (schema 5)
  std::string target;        // the node requested, if any
  std::int64_t version = 0;
};

// What lease_agent.leave did.
struct Leave {
  bool released = false;  // this incarnation held the lease and gave it up
  std::string handed_to;  // to this node (a hand-off); empty: set free
  std::int64_t epoch = 0;
};

// What lease_agent.switchover answered.
struct SwitchoverRequest {
  std::string target;
  std::string master;
  std::int64_t epoch = 0;      // the master's epoch at the request
  bool requested = false;      // false: the target already was the master
  double requested_at_ms = 0;  // the database's clock, ms since the Unix epoch
};

// The row of lease_agent.master for this store's cluster; node empty when none.
struct MasterRow {
  std::string node;
  std::int64_t epoch = 0;
  double acquired_at_ms = 0;  // the database's clock, ms since the Unix epoch
  std::int64_t lease_left_ms = 0;
  // False while a lease handed to `node` (a hand-off) has not been renewed by it yet: it
  // is master from the hand-off's notification on, but has not confirmed it heard it.
  bool confirmed = true;
};

// One node as `lease-agent status` shows it.
struct NodeStatus {
  std::string node;
  std::string address;
  std::string role;   // "master", "standby" or "gone"
  std::string state;  // "ok"; "stale": live but its heartbeat is more than half its ttl old; "gone"
  std::string registered_at;  // ISO 8601, UTC, the database's clock
  std::string heartbeat_at;
  std::int64_t heartbeat_age_ms = 0;
  bool holder = false;
};

struct ClusterStatus {
  std::string cluster;
  std::string holder;  // empty when nobody holds an unexpired lease
  std::int64_t epoch = 0;
  std::int64_t lease_left_ms = 0;
  std::string reserved_for;   // the free lease is reserved for this node (a switchover)
  std::string switchover_to;  // a switchover to this node was requested of the master
  std::vector<NodeStatus> nodes;
};

// The schema version this agent needs (lease_agent.schema_info.version).
constexpr int kSchemaVersion = 6;

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
  // The identity of the server's life seen at connect (lease_agent.server_life()): the
  // same token again means no acknowledged commit was lost since; empty when not
  // connected, or connected without the schema check.
  const std::string& server_life() const { return server_life_; }
  // The schema version the database reported at connect (lease_agent.schema_info): at
  // least kSchemaVersion; above it after `schema apply` of a newer release, which keeps
  // serving agents of this version. 0 when not checked.
  int schema_version() const { return schema_version_; }

  // One heartbeat (sql/002_protocol.sql: lease_agent.heartbeat_v6). Throws StoreError;
  // after a lost connection the store is disconnected.
  HeartbeatAnswer heartbeat(const HeartbeatRequest& req);

  // Clean stop: gives the lease up if held (handed to the next in line when
  // `may_hand_off`, the election's may_acquire; else set free), marks the node gone.
  // REQUIRES: this agent stopped acting as master. Throws StoreError.
  Leave leave(bool may_hand_off);

  // Switchover, the master's step: gives the lease to the requested node, directly or
  // free and reserved for it (sql/002_protocol.sql: lease_agent.hand_over; `may_hand_off`
  // as for leave). REQUIRES: this agent stopped acting as master. Throws StoreError.
  HandOver hand_over(bool may_hand_off);

  // Switchover, the operator's step: asks the master to hand the lease to `to` (empty:
  // the next in line); with `from`, only if that node is the master. Throws
  // SwitchoverRefused when the request is refused, StoreError otherwise.
  SwitchoverRequest request_switchover(const std::string& to, const std::string& from);

  // The master of this cluster now (lease_agent.master). Throws StoreError.
  MasterRow master();

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
  std::string server_life_;
  int schema_version_ = 0;
  std::string channel_;  // lease_agent.channel(cluster, incarnation), read at connect
};

// The SQL files of sql/, embedded at build time, in name order.
const std::vector<std::pair<std::string, std::string>>& schema_files();

}  // namespace lease_agent
