// An LD_PRELOAD shim that "suspends the machine" for one process: it adds an offset
// to CLOCK_BOOTTIME, and to nothing else, as a suspend of that length would.
//
// LEASE_AGENT_BOOTTIME_OFFSET_FILE names a file that holds the offset in milliseconds
// (decimal; a missing or empty file is 0). It is read at every clock_gettime of
// CLOCK_BOOTTIME, so a test moves the clock of a running process by rewriting the file.
// CLOCK_MONOTONIC and the others stay as they are: that is what tells a suspend-aware
// clock from steady_clock.
//
// A suspend also moves the kernel's timers on CLOCK_BOOTTIME: an absolute timerfd whose
// time the suspend went past fires on resuming. The kernel does not know of this offset,
// so the shim keeps the absolute times of the BOOTTIME timerfds it has seen set and,
// when the first clock read after a change finds a new offset, sets them again on the
// kernel's clock (time - offset). The process then sees what it would see after a real
// suspend, from its next clock read on.
#include <dlfcn.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

namespace {

using clock_gettime_fn = int (*)(clockid_t, struct timespec*);
using timerfd_create_fn = int (*)(int, int);
using timerfd_settime_fn = int (*)(int, int, const struct itimerspec*, struct itimerspec*);

pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;

struct Timer {
  int fd = -1;
  bool armed = false;   // with an absolute time on CLOCK_BOOTTIME as the process sees it
  long long at_ns = 0;  // that time
};
Timer timers[16];
long long applied_offset_ns = 0;  // the offset the kernel timers were last set for

constexpr long long kNs = 1000000000LL;

template <typename F>
F real(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

long long offset_ns() {
  const char* path = getenv("LEASE_AGENT_BOOTTIME_OFFSET_FILE");
  if (path == nullptr) return 0;
  const int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  char buf[32];
  const ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return 0;
  buf[n] = '\0';
  return strtoll(buf, nullptr, 10) * 1000000LL;
}

long long to_ns(const timespec& t) { return static_cast<long long>(t.tv_sec) * kNs + t.tv_nsec; }
timespec from_ns(long long ns) {
  if (ns <= 0) ns = 1;  // in the past: fire at once (zero would disarm)
  timespec t;
  t.tv_sec = static_cast<time_t>(ns / kNs);
  t.tv_nsec = static_cast<long>(ns % kNs);
  return t;
}

// REQUIRES: mu held.
void arm_on_kernel_clock(const Timer& t, long long offset) {
  static const timerfd_settime_fn settime = real<timerfd_settime_fn>("timerfd_settime");
  itimerspec v{};
  v.it_value = from_ns(t.at_ns - offset);
  settime(t.fd, TFD_TIMER_ABSTIME, &v, nullptr);
}

}  // namespace

extern "C" int clock_gettime(clockid_t id, struct timespec* ts) {
  static const clock_gettime_fn real_gettime = real<clock_gettime_fn>("clock_gettime");
  const int rc = real_gettime(id, ts);
  if (rc != 0 || id != CLOCK_BOOTTIME) return rc;
  const long long offset = offset_ns();
  pthread_mutex_lock(&mu);
  if (offset != applied_offset_ns) {
    applied_offset_ns = offset;
    for (const Timer& t : timers)
      if (t.fd >= 0 && t.armed) arm_on_kernel_clock(t, offset);
  }
  pthread_mutex_unlock(&mu);
  *ts = from_ns(to_ns(*ts) + offset);
  return 0;
}

extern "C" int timerfd_create(int id, int flags) {
  static const timerfd_create_fn real_create = real<timerfd_create_fn>("timerfd_create");
  const int fd = real_create(id, flags);
  if (fd < 0 || id != CLOCK_BOOTTIME) return fd;
  pthread_mutex_lock(&mu);
  Timer* slot = nullptr;
  for (Timer& t : timers)
    if (t.fd == fd || (slot == nullptr && t.fd < 0)) slot = &t;  // a reused number, or a free slot
  if (slot != nullptr) *slot = Timer{fd, false, 0};
  pthread_mutex_unlock(&mu);
  return fd;
}

extern "C" int timerfd_settime(int fd, int flags, const struct itimerspec* value, struct itimerspec* old) {
  static const timerfd_settime_fn real_settime = real<timerfd_settime_fn>("timerfd_settime");
  pthread_mutex_lock(&mu);
  Timer* tracked = nullptr;
  for (Timer& t : timers)
    if (t.fd == fd && fd >= 0) tracked = &t;
  const bool absolute = (flags & TFD_TIMER_ABSTIME) != 0 && value != nullptr &&
                        (value->it_value.tv_sec != 0 || value->it_value.tv_nsec != 0);
  int rc;
  if (tracked != nullptr && absolute && value->it_interval.tv_sec == 0 && value->it_interval.tv_nsec == 0) {
    tracked->armed = true;
    tracked->at_ns = to_ns(value->it_value);
    const long long offset = offset_ns();
    applied_offset_ns = offset;
    itimerspec v = *value;
    v.it_value = from_ns(tracked->at_ns - offset);
    rc = real_settime(fd, flags, &v, old);
  } else {
    if (tracked != nullptr) tracked->armed = false;  // relative or disarmed: no offset applies
    rc = real_settime(fd, flags, value, old);
  }
  pthread_mutex_unlock(&mu);
  return rc;
}
