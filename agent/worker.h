// The worker: the one thread that talks to the database for the daemon. It connects
// (with backoff while the database is away), heartbeats when the election says so,
// waits for notifications of the lease row in between, hands the lease over when a
// switchover asks, and leaves the cluster on a clean stop.
//
// It may block in a database call for as long as the store's timeouts allow; it never
// holds the shared state's mutex while it does (AgentState).
#pragma once

#include "agent_state.h"
#include "hooks.h"
#include "lease_store.h"

namespace lease_agent {

class Worker {
 public:
  Worker(AgentState& state, LeaseStore& store, HookRunner& hooks);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs until a stop is requested (returns kExitClean) or a fault that cannot be
  // waited out (kExitFault: authentication refused, schema missing, node name taken).
  int run();
  // Wakes run() from its waits; call after AgentState::request_stop(). Any thread.
  void wake();
  // The clean stop, after the demotion and its on-demote: when `was_master`, answers
  // 503 for handover-delay more; then releases the lease and marks the node gone.
  void leave(bool was_master);

 private:
  // Waits up to `d` for a wake(); returns early when woken.
  void pause(milliseconds d);
  // After a demotion for a switchover: on-demote, handover-delay, the hand-over.
  void hand_over();
  // Reports a failed round trip to the election.
  void failed(TimePoint sent, const StoreError& e);

  AgentState& state_;
  LeaseStore& store_;
  HookRunner& hooks_;
  int wake_fd_ = -1;
};

}  // namespace lease_agent
