// The record of one run of the fault suite: what the runner (fault_suite.cpp) saw, and
// what the checker (checker.h) judges. Plain data only: no processes, clocks or
// database here, so that a history can be made up by hand in a test (checker_test.cpp).
//
// Every time is CLOCK_MONOTONIC in nanoseconds (every process of the machine shares
// it), except FencedWrite::commit_us, which is the database's commit timestamp.
#pragma once

#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

namespace fault_history {

using i64 = std::int64_t;

inline i64 ms_to_ns(i64 ms) { return ms * 1000000; }

enum class Kind {
  kill9, sigterm, sigstop, drop, reset, latency, drop_to_server, drop_to_client,
  pg_restart_fast, pg_restart_immediate, pg_freeze, terminate_backends, lease_row_lock, node_table_lock, clock_jump,
  pg_backend_crash, log_stall, pg_failover, pg_switchover,
};
constexpr Kind kAllKinds[] = {
    Kind::kill9, Kind::sigterm, Kind::sigstop, Kind::drop, Kind::reset, Kind::latency, Kind::drop_to_server,
    Kind::drop_to_client, Kind::pg_restart_fast, Kind::pg_restart_immediate, Kind::pg_freeze, Kind::terminate_backends,
    Kind::lease_row_lock, Kind::node_table_lock, Kind::clock_jump, Kind::pg_backend_crash, Kind::log_stall,
    Kind::pg_failover, Kind::pg_switchover,
};

inline const char* kind_name(Kind k) {
  switch (k) {
    case Kind::kill9: return "kill-9";
    case Kind::sigterm: return "sigterm";
    case Kind::sigstop: return "sigstop";
    case Kind::drop: return "net-drop";
    case Kind::reset: return "net-reset";
    case Kind::latency: return "net-latency";
    case Kind::drop_to_server: return "net-drop-to-server";
    case Kind::drop_to_client: return "net-drop-to-client";
    case Kind::pg_restart_fast: return "pg-restart-fast";
    case Kind::pg_restart_immediate: return "pg-restart-immediate";
    case Kind::pg_freeze: return "pg-freeze";
    case Kind::terminate_backends: return "pg-terminate-backend";
    case Kind::lease_row_lock: return "lease-row-lock";
    case Kind::node_table_lock: return "node-table-lock";
    case Kind::clock_jump: return "clock-jump";
    case Kind::pg_backend_crash: return "pg-backend-crash";
    case Kind::log_stall: return "log-stall";
    case Kind::pg_failover: return "pg-failover";
    case Kind::pg_switchover: return "pg-switchover";
  }
  return "?";
}

// Faults of the database: they touch every agent at once.
inline bool is_global(Kind k) {
  switch (k) {
    case Kind::pg_restart_fast: case Kind::pg_restart_immediate: case Kind::pg_freeze: case Kind::terminate_backends:
    case Kind::lease_row_lock: case Kind::node_table_lock: case Kind::pg_backend_crash: case Kind::pg_failover:
    case Kind::pg_switchover:
      return true;
    default:
      return false;
  }
}

// Faults that end every agent's database connection (so every agent reconnects).
inline bool cuts_all(Kind k) {
  switch (k) {
    case Kind::pg_restart_fast: case Kind::pg_restart_immediate: case Kind::pg_freeze: case Kind::terminate_backends:
    case Kind::pg_backend_crash: case Kind::pg_failover: case Kind::pg_switchover:
      return true;
    default:
      return false;
  }
}

// Faults after which the server may have lost commits it acknowledged (the test servers
// run with synchronous_commit = off): a crash recovery, or the promotion of an
// asynchronous replica after an immediate stop of the primary. Only across these may
// the lease row go back and an epoch be given twice.
inline bool loses_commits(Kind k) {
  return k == Kind::pg_restart_immediate || k == Kind::pg_backend_crash || k == Kind::pg_failover;
}

// Faults after which the agents talk to a new life of the server (crash recovery, or
// another server promoted): every agent must wait ttl before it may start a term. A
// switchover loses nothing (a fast stop sends all WAL to the replica first) but still
// promotes another server, whose life is new.
inline bool new_server_life(Kind k) { return loses_commits(k) || k == Kind::pg_switchover; }

// Faults that need a primary and a streaming replica (scripts/pg.sh start-pair).
inline bool needs_pair(Kind k) { return k == Kind::pg_failover || k == Kind::pg_switchover; }

// What an agent's /status said it was.
enum class Role : std::uint8_t { master, standby, registering, handing_over, disconnected, stopping, other };

inline Role role_from_string(const std::string& s) {
  if (s == "master") return Role::master;
  if (s == "standby") return Role::standby;
  if (s == "registering") return Role::registering;
  if (s == "handing-over") return Role::handing_over;
  if (s == "disconnected") return Role::disconnected;
  if (s == "stopping") return Role::stopping;
  return Role::other;
}

// Roles an agent reports only while its database connection works.
inline bool is_connected(Role r) {
  return r == Role::master || r == Role::standby || r == Role::registering || r == Role::handing_over;
}

// One GET /status of one agent: sent at `sent`, answered at `recv`.
struct Sample {
  i64 sent = 0, recv = 0;
  int slot = 0, gen = 0;  // which agent, which of its processes (lives)
  Role role = Role::other;
  i64 epoch = 0;
  i64 round_trip_ms = 0;     // how long its last database round trip took (as it says), 0 unknown
  bool may_acquire = false;  // the agent may start a term (its connection, or its view of the server's life, is ttl old)
  bool master() const { return role == Role::master; }
};

// One process of an agent, from its start to its end.
struct Life {
  int gen = 0;
  i64 start = 0, end = 0;  // end 0: still running when the history was taken
  // How it ended: "kill-9", "sigterm", "run end" (SIGTERM at the end of the run), or
  // "exit N" (it exited by itself).
  std::string ended;
  // The exit status of a "sigterm" or "run end" (must be 0); -1: it did not exit and was killed.
  int exit_status = 0;
  std::vector<std::pair<i64, i64>> pauses;  // SIGSTOP..SIGCONT
};

struct Agent {
  std::string node;
  std::vector<Life> lives;
  std::vector<Sample> samples;  // in the order they were sent
};

// One on-promote / on-demote call, as the hook itself recorded it at its start.
struct HookRecord {
  i64 t = 0;
  std::string node, role;  // role "master" for on-promote, anything else is on-demote
  i64 epoch = 0;
};

struct Fault {
  int id = 0;
  int round = 0;  // faults of one round overlap; the next round begins after all healed
  Kind kind{};
  int target = -1;  // slot, or -1 for the database
  bool target_was_master = false;
  i64 hold_ms = 0;
  i64 latency_ms = 0;  // net-latency: what was added each way
  i64 start = 0, heal = 0;
  i64 all_healed = 0;  // when every fault of its round was healed
  int overlaps = 0;    // the fault of the round this one was added to, if any
  i64 promoted_at = 0;  // pg-failover / pg-switchover: when the new primary accepted writes (0 unknown)
  std::string detail;
};

// The node and lease rows read at the quiet end of a round.
struct NodeRow {
  std::string node, incarnation, registered_at;  // registered_at as text that sorts as time
  bool live = false;
};
struct Snapshot {
  i64 at = 0;
  int fault_id = 0;    // the last fault of the round
  bool read_ok = true;  // false: the tables could not be read (error says why)
  std::string error;
  std::vector<NodeRow> nodes;
  bool has_lease = false;
  std::string holder, holder_incarnation;  // "" when free
  i64 epoch = 0;
  bool held = false;  // a holder with an unexpired lease
  std::set<int> touched;     // slots a fault touched since the previous snapshot
  bool lost_commits = false;  // a fault since the previous snapshot may have lost commits
};

// One fenced write that is in the table at the end of the run (lost commits took theirs with them).
struct FencedWrite {
  int slot = 0, gen = 0;
  i64 epoch = 0, seq = 0;
  i64 commit_us = 0;  // pg_xact_commit_timestamp(xmin), microseconds since 1970
};

enum class VKind {
  // by the checker
  two_masters_answers,     // two agents answered master at once
  epoch_twice_answers,     // one epoch answered as master by two agents (without lost commits between)
  epoch_back_answers,      // an agent answered master at a smaller epoch after a greater one
  two_masters_hooks,       // two nodes' on-promote..on-demote overlap
  stop_without_demote,     // a clean stop as master without on-demote
  epoch_back_hooks,        // on-promote epochs went back (or one epoch, two nodes)
  unclean_stop,            // SIGTERM did not end the agent with status 0
  exited_by_itself,        // an agent exited without being told to
  no_registration,         // a running agent without a live registration
  registration_lost,       // an untouched agent lost its registration
  restart_ahead,           // a restarted agent came back ahead of one that kept its place
  lease_epoch_back,        // the lease row's epoch went back (without lost commits)
  lease_not_held,          // nobody holds the lease at the quiet end of a round
  no_lease_row,            // the cluster's lease row is missing
  snapshot_failed,         // the tables could not be read
  succession_skipped,      // the lease passed over an earlier, live, untouched node
  no_master_after_heal,    // no master within the bound after a heal
  no_takeover,             // no other master within ttl + renew of a fault of the master
  fenced_out_of_order,     // a fenced write of epoch e committed after the first of a later epoch
  fenced_epoch_two_nodes,  // fenced writes of one epoch by two agents
  ttl_wait_missing,        // no ttl wait after a fault that changed the server's life
  ttl_wait_needless,       // a ttl wait after a fault that kept the server's life
  // by the runner, passed through (History::observed)
  bad_status,              // /status answered something that is not its JSON
  not_back,                // an agent not back (a successful round trip) within the bound
  no_master_at_all,        // no master at all long after a heal
};

inline const char* vkind_name(VKind k) {
  switch (k) {
    case VKind::two_masters_answers: return "two-masters-answers";
    case VKind::epoch_twice_answers: return "epoch-twice-answers";
    case VKind::epoch_back_answers: return "epoch-back-answers";
    case VKind::two_masters_hooks: return "two-masters-hooks";
    case VKind::stop_without_demote: return "stop-without-demote";
    case VKind::epoch_back_hooks: return "epoch-back-hooks";
    case VKind::unclean_stop: return "unclean-stop";
    case VKind::exited_by_itself: return "exited-by-itself";
    case VKind::no_registration: return "no-registration";
    case VKind::registration_lost: return "registration-lost";
    case VKind::restart_ahead: return "restart-ahead";
    case VKind::lease_epoch_back: return "lease-epoch-back";
    case VKind::lease_not_held: return "lease-not-held";
    case VKind::no_lease_row: return "no-lease-row";
    case VKind::snapshot_failed: return "snapshot-failed";
    case VKind::succession_skipped: return "succession-skipped";
    case VKind::no_master_after_heal: return "no-master-after-heal";
    case VKind::no_takeover: return "no-takeover";
    case VKind::fenced_out_of_order: return "fenced-out-of-order";
    case VKind::fenced_epoch_two_nodes: return "fenced-epoch-two-nodes";
    case VKind::ttl_wait_missing: return "ttl-wait-missing";
    case VKind::ttl_wait_needless: return "ttl-wait-needless";
    case VKind::bad_status: return "bad-status";
    case VKind::not_back: return "not-back";
    case VKind::no_master_at_all: return "no-master-at-all";
  }
  return "?";
}

struct Violation {
  i64 at = 0;
  VKind kind{};
  std::string what;
};

struct History {
  i64 ttl_ms = 1000, renew_ms = 250;
  i64 t0 = 0, end = 0;  // the run's start (times are shown relative to it) and end
  std::vector<Agent> agents;  // by slot
  std::vector<HookRecord> hooks;
  std::vector<Fault> faults;  // in the order they were injected
  std::vector<Snapshot> snapshots;
  std::vector<FencedWrite> writes;
  std::vector<Violation> observed;  // what only the runner could see (VKind bad_status, not_back, ...)
};

}  // namespace fault_history
