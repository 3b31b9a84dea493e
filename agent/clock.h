// The agent's clock: CLOCK_BOOTTIME, a monotonic clock that also counts the time the
// machine was suspended.
//
// std::chrono::steady_clock is CLOCK_MONOTONIC on Linux, which stops while the machine
// is suspended: a master suspended past its deadline would resume with the deadline
// still ahead and answer 200 beside the new master. CLOCK_BOOTTIME never stops and is
// never stepped; it advances at the rate of CLOCK_MONOTONIC, which is all the election
// assumes (election.h). A hypervisor pause is another matter: sql/PROTOCOL.md, "Clocks".
//
// A timer on this clock must be a timerfd on CLOCK_BOOTTIME (agent_state.cpp):
// std::condition_variable::wait_until with a clock other than steady_clock or
// system_clock waits on steady_clock, which does not count a suspend either.
#pragma once

#include <time.h>

#include <chrono>

namespace lease_agent {

// Meets the TrivialClock requirements.
struct BootClock {
  using duration = std::chrono::nanoseconds;
  using rep = duration::rep;
  using period = duration::period;
  using time_point = std::chrono::time_point<BootClock>;
  static constexpr bool is_steady = true;

  static time_point now() noexcept {
    timespec ts{};
    ::clock_gettime(CLOCK_BOOTTIME, &ts);  // cannot fail for a valid clock and pointer
    return time_point(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  }
};

}  // namespace lease_agent
