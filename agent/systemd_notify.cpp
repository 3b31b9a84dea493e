// The sd_notify(3) protocol and sd_watchdog_enabled(3), written out here rather than
// linked from libsystemd: libsystemd and the libraries it loads (lz4, zstd, lzma,
// gcrypt, gpg-error, cap) cost every agent ~1 MB of resident memory (measured with
// pmap -x on an idle agent: 980 kB), for two functions of a few lines. The protocol is
// systemd's stable interface (sd_notify(3)): one datagram of "VAR=value" lines to the
// AF_UNIX socket named by $NOTIFY_SOCKET, a path or, with a leading '@', an abstract
// name.
#include "systemd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace lease_agent {
namespace {

// A whole unsigned decimal number, or false.
bool parse_unsigned(const char* text, std::uint64_t& value) {
  if (text == nullptr || *text < '0' || *text > '9') return false;
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(text, &end, 10);
  if (errno != 0 || *end != '\0') return false;
  value = v;
  return true;
}

// As sd_watchdog_enabled(0, &usec) > 0: WATCHDOG_USEC is set and positive, and
// WATCHDOG_PID, when set, names this process.
bool watchdog_usec(std::uint64_t& usec) {
  if (const char* pid_text = std::getenv("WATCHDOG_PID")) {
    std::uint64_t pid = 0;
    if (!parse_unsigned(pid_text, pid) || pid != static_cast<std::uint64_t>(::getpid())) return false;
  }
  std::uint64_t v = 0;
  if (!parse_unsigned(std::getenv("WATCHDOG_USEC"), v) || v == 0 || v == UINT64_MAX) return false;
  usec = v;
  return true;
}

}  // namespace

SystemdNotifier::SystemdNotifier() {
  std::uint64_t usec = 0;
  // None: the unit sets no WatchdogSec= (or it is meant for another process).
  if (watchdog_usec(usec))
    watchdog_interval_ = std::chrono::milliseconds(std::max<std::uint64_t>(1, usec / 2000));
}

void SystemdNotifier::notify(const std::string& message) {
  const char* name = std::getenv("NOTIFY_SOCKET");
  if (name == nullptr || (name[0] != '/' && name[0] != '@') || name[1] == '\0') return;
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  const std::size_t len = std::strlen(name);
  if (len > sizeof a.sun_path) return;  // sd_notify refuses it too (EINVAL)
  std::memcpy(a.sun_path, name, len);
  if (a.sun_path[0] == '@') a.sun_path[0] = '\0';  // abstract namespace
  // Exactly the name's length: an abstract name has no terminator, and the kernel ends
  // a path at the length given.
  const socklen_t addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len);
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  ssize_t n;
  do {
    n = ::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&a), addr_len);
  } while (n < 0 && errno == EINTR);
  ::close(fd);
}

}  // namespace lease_agent
