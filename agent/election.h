// The election: a small state machine that knows nothing of SQL, sockets or clocks.
//
// Clock model. Every decision here takes the monotonic time ("now") as an argument;
// the caller reads Clock (CLOCK_BOOTTIME, clock.h), tests pass whatever they like. Safety
// rests on one assumption: the monotonic clocks of all agents advance at nearly the
// same rate. No decision depends on two clocks agreeing, nor on any wall clock.
//
//  - Master: after a renewal that was sent at t_sent succeeds, this agent is master
//    until deadline = t_sent + ttl - margin. "Am I master" is computed when asked:
//    holding && now < deadline. Nothing else makes it master.
//  - Standby: it notes each version of the lease row it sees (in an answer or a
//    notification) and the local time it first saw it. Only once that version stayed
//    unchanged for ttl on its own clock does it name it in a heartbeat, and the store
//    acquires only if the row is still at that version (compare-and-set). Because the
//    version was first seen after the master sent the renewal that made it, the
//    master's deadline always falls before the standby may acquire.
//  - A free lease (released by a clean stop) may be taken at once by the first node
//    in line; the store decides who that is.
//  - A hand-off (a clean stop or a switchover of the master, schema 5) gives the lease
//    to one node in the master's own transaction. That node is master from the
//    notification on, until the send time of its latest heartbeat that was answered
//    before the hand-off + ttl - margin: that heartbeat was sent before the hand-off
//    committed, and every other standby first sees the hand-off's version after it.
//  - Renewals are announced to nobody (schema 5): the next in line times its heartbeat
//    just after the master's next renewal, from the database's report of the last one
//    (a duration on the database's clock, used for that timing only), and so first sees
//    each version within a few ms of its commit, as a notification would show it.
//
// Thread safety: none. The daemon serialises every call with one mutex.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <string>

#include "clock.h"

namespace lease_agent {

// CLOCK_BOOTTIME, not steady_clock (CLOCK_MONOTONIC): a suspend must count against the
// deadline (clock.h).
using Clock = BootClock;
using TimePoint = Clock::time_point;
using std::chrono::milliseconds;

struct Timing {
  milliseconds ttl{10000};
  milliseconds renew{2000};

  // Covers clock rate drift and the time to stop acting as master before anyone
  // else may start: a tenth of ttl.
  milliseconds margin() const { return ttl / 10; }
  // A failed round trip is retried after this long (a fraction of renew).
  milliseconds retry() const { return std::max(renew / 5, milliseconds(10)); }
};

// What the next heartbeat asks of the store.
struct HeartbeatRequest {
  std::optional<std::int64_t> epoch;            // the epoch held as master, if any
  std::optional<std::int64_t> watched_version;  // a version watched unchanged for ttl
  bool may_acquire = false;                     // the store may start a term for us
};

// What one heartbeat answered.
struct HeartbeatAnswer {
  bool duplicate = false;         // the node name is held by another live incarnation
  std::string duplicate_detail;   // changes when that other agent heartbeats
  bool holder_is_me = false;      // this incarnation holds the lease after the call
  bool acquired = false;          // this call acquired it (a new epoch)
  std::string holder;             // empty when the lease is free
  std::string holder_address;
  std::int64_t epoch = 0;
  std::int64_t version = 0;
  std::string first_in_line;      // filled when the store considered an acquisition
  std::int64_t lease_left_ms = 0; // by the database's clock, for display only
  double db_now_ms = 0;           // the database's clock, for the drift warning only
  std::string acquired_how;       // when acquired: "free", "expired", "switchover", "recovered"
  std::string switchover_to;      // to the master: a switchover asks it to hand over to this node
  std::string reserved_for;       // to the others: the free lease is reserved for this node
  std::int64_t reserved_left_ms = 0;  // for that long more (the database's clock)
  // Strict fencing (an acquisition): how long it waited for application transactions of
  // the term that ended, and how many of them it had to end (sql/PROTOCOL.md, "Fencing").
  std::int64_t fence_wait_ms = 0;
  int fence_ended = 0;
  // To a standby while someone holds the lease (schema 5): whether this node is the next
  // in line, how long ago the holder last wrote the row (the database's clock; -1 when
  // unknown) and the holder's renew (0 when unknown).
  bool next_in_line_is_me = false;
  std::int64_t renewed_ago_ms = -1;
  std::int64_t holder_renew_ms = 0;
};

enum class Transition { none, promote, demote, exit_duplicate };

// What an event led to, with one sentence that says what and why: the daemon
// logs it when notable, tests assert on it.
struct Decision {
  Transition transition = Transition::none;
  bool notable = false;  // worth a log line even without a transition
  std::string reason;
  std::string warning;   // a separate warning (database clock drift), or empty
  // Why, as a word for metrics: to master "free", "expired", "switchover", "recovered";
  // to standby "deadline", "lost", "stop", "switchover", "duplicate".
  std::string cause;
  // The epoch this decision is about: the one promoted to, or the one held until now.
  std::int64_t epoch = 0;
  // This decision ended a mastership: run on-demote (a demotion, or an exit while master).
  bool ends_mastership = false;
  // A switchover: the daemon now hands the lease over (on-demote, handover-delay, then
  // LeaseStore::hand_over) and reports the outcome with on_handed_over().
  bool hand_over = false;
  // A promotion that waited for the fence of the term before (metrics): ms waited, and
  // how many application transactions were ended.
  std::int64_t fence_wait_ms = 0;
  int fence_ended = 0;
};

class Election {
 public:
  explicit Election(Timing timing);

  // The request for a heartbeat sent now.
  HeartbeatRequest request(TimePoint now) const;

  // The store's connection was (re)established at `now`, to the server life `life`
  // (LeaseStore::server_life()). A new life (crash recovery, another server promoted,
  // the first connection) may have lost acknowledged commits: then no term starts (no
  // acquisition, no new epoch of a lease of ours) until this agent has seen the life for
  // ttl. Such a database may show a lease row older than what a master acted on, and it
  // lost every connection with them; ttl after the loss, every such master's deadline has
  // passed. And a version watched in an earlier life is forgotten: the loss can take the
  // row back to an older version and the number then come back meaning another write.
  // The same life again (a reconnection after a network fault, a frozen or cleanly
  // restarted server, a terminated session) lost nothing: the life's age and the watched
  // version are kept. Renewals of a held lease go on either way.
  // The next heartbeat is due at once, to see the row as this connection does.
  // Returns whether the life is new to this agent.
  bool on_connected(TimePoint now, const std::string& life);
  const std::string& server_life() const { return life_; }

  // A heartbeat sent at `sent` with `req` answered `a`, received at `received`.
  Decision on_answer(const HeartbeatRequest& req, const HeartbeatAnswer& a, TimePoint sent,
                     TimePoint received);

  // A heartbeat sent at `sent` failed at `now` (connection lost, timeout, error).
  Decision on_failure(TimePoint sent, TimePoint now, const std::string& error);

  // A notification of the lease row: `version`, and whether the lease is now free.
  Decision on_notify(std::int64_t version, bool free, TimePoint received);

  // A notification that a switchover was requested of the master at `epoch`: that master
  // stops acting as master at once and hands over (Decision::hand_over, as when an answer
  // names the target, see on_answer); the others ignore it.
  Decision on_switchover_requested(std::int64_t epoch, const std::string& target, TimePoint received);

  // A notification that the lease was handed off at `version` to term `epoch` (schema 5:
  // a clean stop, how "handed", or a switchover, "switchover"). `to_me`: to this
  // incarnation, which is then master without a round trip, until the send time of its
  // latest heartbeat answered before the hand-off + ttl - margin, and renews at once.
  // Another node's hand-off is a version to watch.
  Decision on_handed(std::int64_t version, std::int64_t epoch, bool to_me, const std::string& how,
                     TimePoint received);

  // Switchover. An answer that names a target to this master demotes it at once
  // (Decision::hand_over): from then on, and until on_handed_over(), it is handing over:
  // not master, and no heartbeat is due (the daemon's hand-over is its next round trip;
  // a heartbeat could take the lease back as a new term).
  // `handed_over`: the target holds the lease (`direct`, a hand-off) or it is free,
  // reserved for the target. Otherwise (no request stands any more, the target is gone,
  // the call failed) the next heartbeat is due now.
  Decision on_handed_over(bool handed_over, const std::string& target, bool direct, TimePoint now);
  bool handing_over() const { return handing_over_; }

  // The passage of time: demotes at the deadline.
  Decision tick(TimePoint now);

  // Stops acting as master now (clean stop). Returns the demotion if there was one.
  Decision resign(TimePoint now);

  bool is_master(TimePoint now) const { return holding_ && now < deadline_; }
  // A standby whose last round trip succeeded within ttl.
  // Registered (in the line of succession), not master, and in touch with the database.
  // A node that waits for its previous incarnation's registration to expire is not yet.
  bool is_connected_standby(TimePoint now) const { return !holding_ && registered_ && healthy(now); }
  bool registered() const { return registered_; }
  // Whether a heartbeat sent now may start a term (see on_connected).
  bool may_acquire(TimePoint now) const { return life_since_ && now >= *life_since_ + timing_.ttl; }
  // The last round trip succeeded within ttl.
  bool healthy(TimePoint now) const;

  // When the next heartbeat is due: the regular one (for the next in line, just after
  // the master's next renewal), or sooner when a watched version will have stayed
  // unchanged for ttl.
  TimePoint next_heartbeat() const;
  // When the next event is due: the next heartbeat, or the deadline if sooner.
  TimePoint next_wakeup() const;

  // For status and logs.
  std::int64_t epoch() const { return epoch_; }
  TimePoint deadline() const { return deadline_; }
  bool holding() const { return holding_; }
  const HeartbeatAnswer& last_answer() const { return last_; }
  std::optional<TimePoint> last_success() const { return last_ok_; }
  const Timing& timing() const { return timing_; }
  int consecutive_failures() const { return failures_; }

 private:
  void watch(std::int64_t version, TimePoint seen);
  // Stops acting as master to hand the lease to `target` (a switchover).
  Decision step_down_for(const std::string& target);
  // The next in line's heartbeat, just after the holder's next renewal (on_answer).
  TimePoint after_next_renewal(const HeartbeatAnswer& a, TimePoint sent, TimePoint received);

  const Timing timing_;
  bool holding_ = false;        // believes it holds the lease (until deadline_)
  bool handing_over_ = false;   // demoted for a switchover, hand-over not yet done
  std::int64_t epoch_ = 0;      // epoch of the lease held, or last seen
  TimePoint deadline_{};
  std::optional<std::int64_t> watched_version_;
  TimePoint watched_since_{};
  std::optional<std::int64_t> tried_version_;  // watched version already named once
  TimePoint regular_next_{};    // the next regular heartbeat; zero: at once
  std::string life_;                       // the server life last connected to
  std::optional<TimePoint> life_since_;    // when this agent first connected to it
  TimePoint last_sent_{};                  // of the last heartbeat answered or failed
  std::optional<TimePoint> last_ok_;
  // The latest answered heartbeat: when it was sent, and the version it showed (-1 when
  // it was in an earlier server life: then any version is newer), for a hand-off.
  std::optional<TimePoint> answered_sent_;
  std::int64_t answered_version_ = -1;
  // The next in line's timing: the version of its last answer, and how many heartbeats
  // in a row found the holder's renewal overdue.
  std::int64_t phase_version_ = -1;
  int phase_misses_ = 0;
  bool registered_ = false;     // at least one answer without 'duplicate'
  std::string duplicate_seen_;  // detail of the first 'duplicate' answer at start
  int failures_ = 0;
  HeartbeatAnswer last_;
  std::optional<std::pair<double, TimePoint>> clock_ref_;  // (db ms, local) for drift
};

const char* to_string(Transition t);

}  // namespace lease_agent
