// Hooks: on-promote / on-demote commands, run one at a time in order on a
// thread of their own, so that no hook ever holds up the heartbeat or the
// lease deadline.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace lease_agent {

struct HookCall {
  std::string name;      // "on-promote" or "on-demote", for the log
  std::string command;   // run with /bin/sh -c; empty: nothing to run
  std::string role;      // LEASE_AGENT_ROLE: "master" or "standby"
  std::int64_t epoch = 0;  // LEASE_AGENT_EPOCH
};

// Runs queued hook calls in order. Each gets the agent's environment plus
// LEASE_AGENT_CLUSTER, LEASE_AGENT_NODE, LEASE_AGENT_ROLE, LEASE_AGENT_EPOCH,
// its own process group, and no open descriptors of the agent. Each line it
// writes to stdout or stderr is logged ("hook on-promote: <line>"). A hook
// still running after `timeout` is sent SIGTERM, then SIGKILL a second later,
// and that is logged. A hook's exit status is logged; it changes nothing else.
//
// A demotion does not wait behind a promotion: when a call with role "standby"
// (on-demote) is queued, an on-promote that is still running gets SIGKILL on its
// process group at once and queued on-promote calls are dropped, so that the
// on-demote starts now: the next master may be promoted a margin (ttl/10) after
// this one's deadline, and a hook that waited behind a promotion would run late.
// The on-demote does not wait for the killed processes to die either; they are
// reaped, and their end logged, when no call is waiting. An on-demote can thus
// run without its on-promote having run (or finished). Both are logged.
//
// Thread safety: enqueue() and drain() may be called from any thread.
class HookRunner {
 public:
  HookRunner(std::string cluster, std::string node, std::chrono::milliseconds timeout);
  ~HookRunner();  // finishes the calls already queued, then joins
  HookRunner(const HookRunner&) = delete;
  HookRunner& operator=(const HookRunner&) = delete;

  // Queues a call; returns at once. Calls with an empty command are ignored.
  void enqueue(HookCall call);

  // Blocks until every call queued so far has finished (or been killed).
  void drain();

  // Runs one call now on the calling thread; returns its exit status
  // (128+signal when killed, -1 when it could not be started).
  int run_now(const HookCall& call);

 private:
  struct Killed {
    pid_t pid;         // a superseded hook's shell, SIGKILLed, not yet reaped
    std::string name;  // for the log
  };

  void loop();
  int run_call(const HookCall& call, int cancel_fd);
  // Reaps killed hooks and logs their ends; waits for them when `wait`.
  // Called on the runner's thread only.
  void reap_killed(bool wait);

  const std::string cluster_;
  const std::string node_;
  const std::chrono::milliseconds timeout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<HookCall> queue_;
  bool busy_ = false;
  std::string running_role_;  // role of the call running now
  int cancel_fd_ = -1;        // eventfd: kill the running call now
  bool stopping_ = false;
  std::vector<Killed> killed_;  // runner thread only
  std::thread thread_;
};

}  // namespace lease_agent
