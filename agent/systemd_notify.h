// The agent under systemd (Type=notify): READY=1, STATUS= and WATCHDOG=1 through the
// sd_notify(3) protocol (systemd_notify.cpp, without libsystemd). Outside systemd (no
// NOTIFY_SOCKET) every call does nothing.
#pragma once

#include <chrono>
#include <optional>
#include <string>

namespace lease_agent {

// Thread safety: notify() may be called from any thread.
class SystemdNotifier {
 public:
  SystemdNotifier();
  // Sends `message` ("READY=1", "STATUS=...", "WATCHDOG=1", several joined by '\n').
  // Never throws; a failure is ignored (systemd then restarts or times out the unit).
  void notify(const std::string& message);
  // How often to ping the watchdog: half of WatchdogSec= when it is set for this
  // process, nothing otherwise.
  std::optional<std::chrono::milliseconds> watchdog_interval() const { return watchdog_interval_; }

 private:
  std::optional<std::chrono::milliseconds> watchdog_interval_;
};

}  // namespace lease_agent
