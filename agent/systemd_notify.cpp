// sd_notify(3) and sd_watchdog_enabled(3) of libsystemd.
#include "systemd_notify.h"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <cstdint>

namespace lease_agent {

SystemdNotifier::SystemdNotifier() {
  std::uint64_t usec = 0;
  // 0: the unit sets no WatchdogSec= (or it is meant for another process).
  if (sd_watchdog_enabled(/*unset_environment=*/0, &usec) > 0 && usec > 0)
    watchdog_interval_ = std::chrono::milliseconds(std::max<std::uint64_t>(1, usec / 2000));
}

void SystemdNotifier::notify(const std::string& message) {
  sd_notify(/*unset_environment=*/0, message.c_str());
}

}  // namespace lease_agent
