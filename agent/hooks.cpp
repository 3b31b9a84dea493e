// Hooks: runs on-promote / on-demote commands as child processes, one at a
// time, and logs what they print and how they end.
//
// How a hook is started, and why:
// - posix_spawn, never fork+exec: the agent is multi-threaded, and between a
//   fork and an exec only async-signal-safe code may run.
// - /bin/sh -c COMMAND in a process group of its own, so that a timeout kills
//   the hook and everything it started in the background.
// - An empty signal mask and default dispositions: the agent blocks or ignores
//   signals in its threads, and both would otherwise be inherited.
// - stdin from /dev/null; stdout and stderr into one pipe that the runner
//   reads; every other descriptor closed (all of the agent's are O_CLOEXEC,
//   and descriptors 3 and up are closed in the child besides).
//
// A hook has finished when its shell has exited and its output pipe is at
// end of file (a background process that keeps the hook's output open is
// still part of the hook). Whatever has not finished by the timeout gets
// SIGTERM on its process group, and SIGKILL one second later. An on-promote
// superseded by a demotion gets SIGKILL at once and is not waited for: the
// runner goes on with the on-demote and reaps the killed hook afterwards.
#include "hooks.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>
#include <utility>
#include <vector>

#include "log.h"

extern char** environ;

namespace lease_agent {
namespace {

using Clock = std::chrono::steady_clock;

constexpr std::size_t kMaxLine = 4096;                       // longest logged line, in bytes
constexpr std::chrono::milliseconds kKillDelay{1000};        // SIGTERM -> SIGKILL
constexpr std::chrono::milliseconds kGiveUpAfterKill{1000};  // SIGKILL -> stop waiting for EOF
constexpr std::chrono::milliseconds kExitPollStep{10};       // only without pidfd support
constexpr std::chrono::milliseconds kReapPollStep{20};       // a killed hook not yet reaped

std::string errno_text(int err) { return std::strerror(err); }

// Closes a descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  void reset(int fd = -1) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

// Moves a descriptor to number 3 or above (keeping O_CLOEXEC), so that the
// dup2 onto 0, 1 and 2 in the child can never clobber it.
int above_stdio(int fd) {
  if (fd > 2) return fd;
  int moved = ::fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int err = errno;
  ::close(fd);
  errno = err;
  return moved;
}

// The agent's environment with the four LEASE_AGENT_* variables replaced.
std::vector<std::string> hook_environment(const std::string& cluster, const std::string& node,
                                          const HookCall& call) {
  const std::pair<const char*, std::string> ours[] = {
      {"LEASE_AGENT_CLUSTER", cluster},
      {"LEASE_AGENT_NODE", node},
      {"LEASE_AGENT_ROLE", call.role},
      {"LEASE_AGENT_EPOCH", std::to_string(call.epoch)},
  };
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const char* entry = *e;
    const char* eq = std::strchr(entry, '=');
    std::size_t name_len = eq != nullptr ? static_cast<std::size_t>(eq - entry) : std::strlen(entry);
    bool replaced = false;
    for (const auto& kv : ours) {
      if (std::strlen(kv.first) == name_len && std::strncmp(entry, kv.first, name_len) == 0) {
        replaced = true;
        break;
      }
    }
    if (!replaced) env.emplace_back(entry);
  }
  for (const auto& kv : ours) env.push_back(std::string(kv.first) + "=" + kv.second);
  return env;
}

// posix_spawn attributes and file actions, destroyed on scope exit.
struct SpawnSetup {
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  bool attr_ok = false;
  bool actions_ok = false;
  ~SpawnSetup() {
    if (attr_ok) posix_spawnattr_destroy(&attr);
    if (actions_ok) posix_spawn_file_actions_destroy(&actions);
  }
};

// Starts /bin/sh -c command with its output on `out_fd`. Returns the pid, or
// -1 with the reason in `error`.
pid_t spawn_hook(const std::string& command, const std::vector<std::string>& env, int out_fd,
                 std::string& error) {
  SpawnSetup s;
  int rc = posix_spawnattr_init(&s.attr);
  if (rc != 0) {
    error = "posix_spawnattr_init: " + errno_text(rc);
    return -1;
  }
  s.attr_ok = true;
  rc = posix_spawn_file_actions_init(&s.actions);
  if (rc != 0) {
    error = "posix_spawn_file_actions_init: " + errno_text(rc);
    return -1;
  }
  s.actions_ok = true;

  sigset_t empty;
  sigemptyset(&empty);
  sigset_t defaults;
  sigemptyset(&defaults);
  for (int sig : {SIGPIPE, SIGTERM, SIGINT, SIGHUP, SIGCHLD, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM})
    sigaddset(&defaults, sig);

  short flags = POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
  if ((rc = posix_spawnattr_setflags(&s.attr, flags)) != 0 ||
      (rc = posix_spawnattr_setpgroup(&s.attr, 0)) != 0 ||
      (rc = posix_spawnattr_setsigmask(&s.attr, &empty)) != 0 ||
      (rc = posix_spawnattr_setsigdefault(&s.attr, &defaults)) != 0) {
    error = "posix_spawnattr: " + errno_text(rc);
    return -1;
  }

  if ((rc = posix_spawn_file_actions_addopen(&s.actions, 0, "/dev/null", O_RDONLY, 0)) != 0 ||
      (rc = posix_spawn_file_actions_adddup2(&s.actions, out_fd, 1)) != 0 ||
      (rc = posix_spawn_file_actions_adddup2(&s.actions, out_fd, 2)) != 0) {
    error = "posix_spawn_file_actions: " + errno_text(rc);
    return -1;
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  // Belt and braces: a descriptor some library opened without O_CLOEXEC
  // must not leak into the hook either.
  if ((rc = posix_spawn_file_actions_addclosefrom_np(&s.actions, 3)) != 0) {
    error = "posix_spawn_file_actions_addclosefrom_np: " + errno_text(rc);
    return -1;
  }
#endif

  std::vector<char*> envp;
  envp.reserve(env.size() + 1);
  for (const auto& e : env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  char* argv[] = {const_cast<char*>("sh"), const_cast<char*>("-c"),
                  const_cast<char*>(command.c_str()), nullptr};

  pid_t pid = -1;
  rc = posix_spawn(&pid, "/bin/sh", &s.actions, &s.attr, argv, envp.data());
  if (rc != 0) {
    error = "posix_spawn /bin/sh: " + errno_text(rc);
    return -1;
  }
  return pid;
}

// A descriptor that becomes readable when `pid` exits, or -1 when the kernel
// has no pidfd_open (then the runner polls for the exit).
int open_pidfd(pid_t pid) {
#ifdef SYS_pidfd_open
  long fd = ::syscall(SYS_pidfd_open, pid, 0);
  if (fd >= 0) {
    ::fcntl(static_cast<int>(fd), F_SETFD, FD_CLOEXEC);  // pidfds are CLOEXEC already; be sure
    return static_cast<int>(fd);
  }
#else
  (void)pid;
#endif
  return -1;
}

// True once `pid` has exited. Leaves it a zombie (WNOWAIT), so that its pid,
// which is also its process group's id, cannot be reused before the final
// waitpid: signals to the group can never reach a stranger.
bool has_exited(pid_t pid) {
  siginfo_t info;
  std::memset(&info, 0, sizeof info);
  for (;;) {
    int rc = ::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT);
    if (rc == 0) return info.si_pid == pid;
    if (errno == EINTR) continue;
    return true;  // ECHILD: someone else reaped it (SIGCHLD ignored); it is gone
  }
}

// Collects a hook's output and logs it line by line.
class OutputLogger {
 public:
  explicit OutputLogger(const std::string& name) : prefix_("hook " + name + ": ") {}

  void add(const char* data, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i) {
      char c = data[i];
      if (c == '\n') {
        end_line();
      } else if (line_.size() < kMaxLine) {
        line_.push_back(c);
      } else {
        truncated_ = true;
      }
    }
  }

  // Logs the partial last line, if any.
  void finish() {
    if (!line_.empty() || truncated_) end_line();
  }

 private:
  void end_line() {
    if (!line_.empty() && line_.back() == '\r') line_.pop_back();
    if (truncated_) line_ += " [line truncated]";
    log_info(prefix_ + line_);
    line_.clear();
    truncated_ = false;
  }

  const std::string prefix_;
  std::string line_;
  bool truncated_ = false;
};

std::string format_ms(std::chrono::milliseconds d) {
  auto ms = d.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

// Logs how a reaped hook ended and returns its exit status (128+signal when
// killed).
int log_exit(const std::string& name, int status) {
  int code;
  std::string how;
  if (WIFEXITED(status)) {
    code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    code = 128 + WTERMSIG(status);
    const char* sig = ::strsignal(WTERMSIG(status));
    how = std::string(" (killed by signal ") + std::to_string(WTERMSIG(status)) +
          (sig != nullptr ? std::string(", ") + sig : std::string()) + ")";
  } else {
    code = -1;
  }
  std::string message = "hook " + name + " exited with status " + std::to_string(code) + how;
  if (code == 0)
    log_info(message);
  else
    log_warning(message);
  return code;
}

// `cancel_fd` (an eventfd, or -1): when it becomes readable, the hook is
// superseded: its process group gets SIGKILL, and run_hook returns at once,
// without waiting for the killed processes to die (on a loaded machine that
// can take tens of milliseconds, which the demotion must not wait for). The
// pid, unreaped, goes into `killed`; the caller reaps it later.
int run_hook(const std::string& cluster, const std::string& node, std::chrono::milliseconds timeout,
             const HookCall& call, int cancel_fd, std::vector<pid_t>& killed) {
  const std::string& name = call.name;

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    log_warning("hook " + name + " could not be started: pipe: " + errno_text(errno));
    return -1;
  }
  Fd read_end(above_stdio(fds[0]));
  Fd write_end(above_stdio(fds[1]));
  if (read_end.get() < 0 || write_end.get() < 0) {
    log_warning("hook " + name + " could not be started: fcntl: " + errno_text(errno));
    return -1;
  }

  std::string error;
  pid_t pid = spawn_hook(call.command, hook_environment(cluster, node, call), write_end.get(), error);
  write_end.reset();  // the hook holds the only writer now: EOF when it is done
  if (pid < 0) {
    log_warning("hook " + name + " could not be started: " + error);
    return -1;
  }
  log_info("hook " + name + " started", {{"pid", std::to_string(pid)}});

  ::fcntl(read_end.get(), F_SETFL, ::fcntl(read_end.get(), F_GETFL) | O_NONBLOCK);
  Fd pidfd(open_pidfd(pid));

  OutputLogger output(name);
  bool eof = false;
  bool exited = false;
  enum class Phase { running, terminated, killed } phase = Phase::running;
  Clock::time_point next_step = Clock::now() + timeout;  // when to escalate
  char buf[4096];

  while (!(eof && exited)) {
    pollfd pfds[3];
    nfds_t n = 0;
    if (!eof) pfds[n++] = pollfd{read_end.get(), POLLIN, 0};
    if (!exited && pidfd.get() >= 0) pfds[n++] = pollfd{pidfd.get(), POLLIN, 0};
    const bool may_cancel = cancel_fd >= 0 && phase != Phase::killed;
    if (may_cancel) pfds[n++] = pollfd{cancel_fd, POLLIN, 0};

    auto now = Clock::now();
    auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next_step - now);
    if (next_step > now && wait < std::chrono::milliseconds(1)) wait = std::chrono::milliseconds(1);
    if (wait.count() < 0) wait = std::chrono::milliseconds(0);
    if (!exited && pidfd.get() < 0 && wait > kExitPollStep) wait = kExitPollStep;

    int rc = ::poll(pfds, n, static_cast<int>(wait.count()));
    if (rc < 0 && errno != EINTR) {
      log_warning("hook " + name + ": poll: " + errno_text(errno));
      eof = true;  // stop reading; the timeout still bounds the wait for the exit
    }

    // Read everything there is now.
    while (!eof) {
      ssize_t got = ::read(read_end.get(), buf, sizeof buf);
      if (got > 0) {
        output.add(buf, static_cast<std::size_t>(got));
        continue;
      }
      if (got == 0) {
        eof = true;
      } else if (errno == EINTR) {
        continue;
      } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
        log_warning("hook " + name + ": read: " + errno_text(errno));
        eof = true;
      }
      break;
    }
    if (!exited) exited = has_exited(pid);
    if (eof && exited) break;

    if (may_cancel && pfds[n - 1].revents != 0) {
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(cancel_fd, &v, sizeof v);
      ::kill(-pid, SIGKILL);
      log_warning("hook " + name +
                  " superseded by a demotion while still running, sending SIGKILL to its process group; the "
                  "demotion does not wait for it to die");
      // What it wrote before the kill is logged (a bounded amount: a process that
      // left the group may write on); what it writes while dying is not.
      ssize_t got = 0;
      for (int i = 0; !eof && i < 16 && (got = ::read(read_end.get(), buf, sizeof buf)) > 0; ++i)
        output.add(buf, static_cast<std::size_t>(got));
      output.finish();
      killed.push_back(pid);
      return 128 + SIGKILL;
    }

    if (Clock::now() < next_step) continue;
    switch (phase) {
      case Phase::running:
        log_warning("hook " + name + " still running after hook-timeout " + format_ms(timeout) +
                    (exited ? " (its background processes hold its output)" : "") +
                    ", sending SIGTERM to its process group");
        ::kill(-pid, SIGTERM);
        phase = Phase::terminated;
        next_step = Clock::now() + kKillDelay;
        break;
      case Phase::terminated:
        log_warning("hook " + name + " still running " + format_ms(kKillDelay) +
                    " after SIGTERM, sending SIGKILL to its process group");
        ::kill(-pid, SIGKILL);
        phase = Phase::killed;
        next_step = Clock::now() + kGiveUpAfterKill;
        break;
      case Phase::killed:
        // Only a process that left the group (setsid) can still hold the
        // pipe, or one stuck in the kernel: stop waiting for it.
        if (!eof) {
          log_warning("hook " + name +
                      ": output still open after SIGKILL (a process left its group?); no longer "
                      "reading it");
          eof = true;
        }
        if (!exited) {
          // SIGKILL has been sent; the final waitpid below waits for it.
          exited = true;
        }
        break;
    }
  }
  output.finish();

  int status = 0;
  pid_t reaped;
  do {
    reaped = ::waitpid(pid, &status, 0);
  } while (reaped < 0 && errno == EINTR);
  if (reaped != pid) {
    log_warning("hook " + name + ": waitpid: " + errno_text(errno) + "; exit status unknown");
    return -1;
  }
  return log_exit(name, status);
}

}  // namespace

HookRunner::HookRunner(std::string cluster, std::string node, std::chrono::milliseconds timeout)
    : cluster_(std::move(cluster)), node_(std::move(node)), timeout_(timeout) {
  cancel_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (cancel_fd_ < 0)
    log_warning("hooks: eventfd: " + errno_text(errno) + "; an on-demote will wait for a running on-promote");
  thread_ = std::thread([this] { loop(); });
}

HookRunner::~HookRunner() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (cancel_fd_ >= 0) ::close(cancel_fd_);
}

void HookRunner::enqueue(HookCall call) {
  if (call.command.empty()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (call.role == "standby") {
      const auto promotes = std::count_if(queue_.begin(), queue_.end(),
                                          [](const HookCall& c) { return c.role == "master"; });
      if (promotes > 0) {
        queue_.erase(std::remove_if(queue_.begin(), queue_.end(),
                                    [](const HookCall& c) { return c.role == "master"; }),
                     queue_.end());
        log_warning("hook on-promote dropped from the queue: superseded by a demotion before it started");
      }
      if (busy_ && running_role_ == "master" && cancel_fd_ >= 0) {
        const std::uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(cancel_fd_, &one, sizeof one);
      }
    }
    queue_.push_back(std::move(call));
  }
  cv_.notify_all();
}

void HookRunner::drain() {
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
}

int HookRunner::run_now(const HookCall& call) { return run_call(call, -1); }

int HookRunner::run_call(const HookCall& call, int cancel_fd) {
  if (call.command.empty()) return 0;
  try {
    std::vector<pid_t> killed;
    const int code = run_hook(cluster_, node_, timeout_, call, cancel_fd, killed);
    for (pid_t pid : killed) killed_.push_back({pid, call.name});
    return code;
  } catch (const std::exception& e) {
    log_error("hook " + call.name + " failed: " + e.what());
  } catch (...) {
    log_error("hook " + call.name + " failed");
  }
  return -1;
}

void HookRunner::reap_killed(bool wait) {
  for (auto it = killed_.begin(); it != killed_.end();) {
    int status = 0;
    pid_t reaped;
    do {
      reaped = ::waitpid(it->pid, &status, wait ? 0 : WNOHANG);
    } while (reaped < 0 && errno == EINTR);
    if (reaped == 0) {  // still dying
      ++it;
      continue;
    }
    if (reaped == it->pid)
      log_exit(it->name, status);
    else
      log_warning("hook " + it->name + ": waitpid: " + errno_text(errno) + "; exit status unknown");
    it = killed_.erase(it);
  }
}

void HookRunner::loop() {
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    // Killed hooks are reaped when nothing else is to run: the next call (an
    // on-demote) never waits for them.
    while (!killed_.empty() && !stopping_ && queue_.empty()) {
      lock.unlock();
      reap_killed(false);
      lock.lock();
      if (killed_.empty()) break;
      cv_.wait_for(lock, kReapPollStep, [this] { return stopping_ || !queue_.empty(); });
    }
    cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
    if (queue_.empty()) {  // stopping, and nothing left to run
      lock.unlock();
      reap_killed(true);  // SIGKILL has been sent: not long
      return;
    }
    HookCall call = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    running_role_ = call.role;
    if (cancel_fd_ >= 0) {  // a cancel meant for an earlier call
      std::uint64_t v;
      [[maybe_unused]] ssize_t r = ::read(cancel_fd_, &v, sizeof v);
    }
    lock.unlock();
    run_call(call, cancel_fd_);  // never throws
    lock.lock();
    busy_ = false;
    running_role_.clear();
    cv_.notify_all();
  }
}

}  // namespace lease_agent
