// The faults of the suite: how each kind is injected and healed (README.md, "The faults").
// The runner (fault_suite.cpp) chooses kinds and targets and records what happened.
#pragma once

#include <array>
#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "suite_support.h"

namespace fault_suite {

// PostgreSQL's processes while a pg-freeze holds, also where the signal thread can
// resume them: a suite stopped by Ctrl-C or a test timeout must not leave the database
// frozen behind it.
constexpr std::size_t kMaxFrozen = 256;
std::array<std::atomic<pid_t>, kMaxFrozen>& frozen_pids();

// What the faults need of the runner.
struct FaultEnv {
  const Options& o;
  std::vector<std::unique_ptr<Slot>>& slots;
  std::string dir, cluster;
  std::mt19937_64& rng;
  std::function<void(Slot&)> start_agent;                                // a new generation
  std::function<void(Slot&, const std::string&, int)> end_life;          // (slot, how, exit status)
  std::function<void(i64, VKind, const std::string&)> observed;          // a violation seen while injecting
  std::function<void(const std::string&)> changed_primary;               // after a failover: the new dsn is in effect
  std::function<void(const std::string&)> slow_rig;  // a step of the rig took far too long: what (the dir is kept)
};

class Faults {
 public:
  explicit Faults(FaultEnv env) : e_(std::move(env)) {}
  ~Faults() { thaw_all(); }
  Faults(const Faults&) = delete;
  Faults& operator=(const Faults&) = delete;

  // Injects f (kind and target chosen) and draws how long it holds (f.hold_ms); sets
  // f.start and f.detail. heal_first, if given, heals another fault of the round that
  // must end at heal_first_at (mono ns) even while this injection still waits (for an
  // agent's exit, or for scripts/pg.sh): a SIGTERM'd agent cannot leave while a
  // pg-freeze holds the database; and a fast stop of PostgreSQL waits for a connection
  // whose start-up a net-drop-to-server swallowed, while the drop, unhealed, waited for
  // the stop (a failover held for authentication_timeout, 60 s by default).
  void begin(Fault& f, i64 heal_first_at = 0, const std::function<void()>& heal_first = {});
  // Heals f; sets f.heal.
  void end(Fault& f);
  // Resumes every process a pg-freeze stopped.
  void thaw_all();

  // The data directory of the server that is primary now (the only one without a pair).
  std::string primary_data_dir() const;

 private:
  void keep_pg_evidence(const std::string& tag);
  i64 rand_ms(double lo_ttl, double hi_ttl);
  pid_t postmaster_pid() const;
  void freeze(pid_t pid);
  void stall_log(Slot& s, Fault& f);
  void unstall_log(Slot& s);
  int pg_script(const std::vector<std::string>& args, const std::string& log, i64 limit_ms);
  // wait_exit, calling heal_first_ (once) when heal_first_at_ comes first.
  std::optional<int> wait_healing(pid_t pid, i64 limit_ms);

  FaultEnv e_;
  std::unique_ptr<Db> lock_db_;  // the transaction of a lock fault
  std::vector<pid_t> frozen_;    // PostgreSQL's processes while a pg-freeze holds
  i64 heal_first_at_ = 0;        // begin()'s heal_first, while begin() runs
  std::function<void()> heal_first_;
};

}  // namespace fault_suite
