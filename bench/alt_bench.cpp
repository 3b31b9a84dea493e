// alt_bench: takeover times of the alternatives a user would compare lease-agent with, measured
// on this machine over loopback, so that a report can set them beside lease-agent's own
// (bench/failover_bench.cpp) as ratios to the same ttl.
//
//   build/alt_bench [--runs 20] [--ttl 2s] [--stop-limit 6s] [--scenario LIST] [--json FILE]
//                   [--dsn DSN] [--etcd /usr/bin/etcd] [--etcdctl /usr/bin/etcdctl]
//                   [--elect-crash] [--etcd-fsync] [--java /usr/bin/java] [--zk-classpath CP]
//
//   e.g.  mkdir -p /tmp/pg && scripts/pg.sh start /tmp/pg && . /tmp/pg/env   (LEASE_AGENT_TEST_DSN)
//         cmake --build build --target alt_bench && build/alt_bench --runs 2 --json alt.json
//         scripts/pg.sh stop /tmp/pg
//   --runs 2 takes about 45 s, --runs 20 about 6-7 min (advisory-stop waits --stop-limit a run);
//   --elect-crash adds etcd-elect-kill, about 60 s a run (--runs 1 is enough).
//
// What it measures, per run: a holder takes a lock, a waiter queues behind it (the server shows
// both contenders, then 100 ms more so that the waiter's watch or wait is set up), the holder is
// faulted, and the time is taken from just before the signal is sent to the moment the waiter's
// "I hold it" line is read from its stdout pipe (ppoll on the pipe, CLOCK_MONOTONIC). So a time
// includes what the tool does before it tells its user (etcdctl: one more Get of its key).
//   etcd-lock-{term,kill,stop}  `etcdctl lock --ttl=N NAME` (N: --ttl in seconds) as holder and as
//       waiter; each prints its lock key once it holds the lock.
//   etcd-elect-term             `etcdctl elect NAME p1`, then a second candidate `... NAME p2`;
//   etcd-elect-kill             each prints its key once it is leader. The kill is only run with
//       --elect-crash: etcdctl 3.4 has no TTL flag for elect, its session TTL is 60 s, so one
//       run takes 40-60 s.
//   advisory-{term,kill,stop}   a PostgreSQL session advisory lock, the hand-rolled baseline:
//       holder and waiter are this program in its child mode
//       `alt_bench advisory-hold --dsn DSN --key K` (connect, SELECT pg_advisory_lock(K), print a
//       line, wait; on SIGTERM pg_advisory_unlock and exit). The database: --dsn or
//       LEASE_AGENT_TEST_DSN (e.g. `scripts/pg.sh start DIR && . DIR/env`).
//   zk-{term,kill,stop}         ZooKeeper's leader-election recipe (bench/zookeeper.h): holder and
//       waiter are this program in its child mode `alt_bench zk-hold --hosts H --path /NAME
//       --timeout-ms TTL` (an ephemeral sequential node under /NAME; the lowest is leader; each
//       other watches its predecessor; prints "held n-..." once leader; on SIGTERM deletes its
//       node and exits 0; on its session's expiry exits 1), on the C client (libzookeeper-mt).
// Faults: term = SIGTERM to the holder (a clean release); kill = SIGKILL (etcd: the session's
// lease must expire; PostgreSQL: the connection closes and the server drops the lock); stop =
// SIGSTOP, kept frozen until the waiter got the lock (and at least ttl) or --stop-limit passed
// (default 3 x ttl; then the run counts as "no takeover", not as a time), then SIGCONT, and what
// the old holder does within 2 s of the resume (advisory: 0.3 s; it never looks) is counted
// ("exit 1", "running ..., still holding the lock (pg_locks)").
// A run that could not be set up (or where a contender misbehaved) counts as failed.
//
// etcd: its own single member in a temp dir on free loopback ports, started before the first
// etcd scenario (ready when `etcdctl endpoint health` answers) and stopped at the end (SIGTERM,
// then SIGKILL after 10 s; the dir removed), however the run ends. It runs with
// --unsafe-no-fsync, as the PostgreSQL of scripts/pg.sh runs with fsync = off, so that neither
// side pays for a disk flush; --etcd-fsync gives etcd's default.
//
// ZooKeeper: one standalone server (ZooKeeperServerMain from Debian's `zookeeper` jars, run with
// --java, default /usr/bin/java) in the temp dir on a free loopback port, started before the
// first zk scenario (ready when it answers the four-letter `srvr`) and stopped at the end. Its
// tickTime is ttl/2, the largest that grants a session of ttl (the least a server grants is two
// ticks; ZooKeeper's own default tick, 2 s, would make a session at least 4 s), and forceSync=no
// (no fsync, as etcd and PostgreSQL here). A crash: the server expires the session when no
// packet came for its timeout, checked on tick boundaries, and deletes its ephemeral node, so
// the takeover comes in about (timeout - ping period, timeout + tick]; kill and stop wait a
// random time in [0, tick) first. A frozen leader, resumed, reconnects, hears that its
// session expired and exits; until then it believes it leads.
//
// What etcdctl 3.4 does (v3.4.23, etcdctl/ctlv3/command/lock_command.go, elect_command.go;
// clientv3/lease.go; lease/lessor.go):
//   - `lock` without a command: SIGINT/SIGTERM are caught (signal.Notify); on one it calls
//     m.Unlock(), which deletes its key NAME/<lease>, and exits 0. It does not revoke its
//     session's lease, so the lease lives on to its TTL with no key on it. The next waiter is
//     watching that key's deletion (concurrency.waitDeletes) and takes the lock at once.
//   - `elect NAME PROP`: the same, e.Resign() deletes the leader key, exit 0.
//   - On a crash the key goes with its lease: the client renews the lease once TTL/3 has passed
//     since the last renewal, looked at every 500 ms (for TTL 2 s: every 1 s), so at the crash
//     the lease has between TTL - that period and TTL left, and the server's lessor revokes
//     expired leases on a 500 ms tick: a takeover after (TTL - period, TTL + 0.5 s], for TTL 2 s
//     (1 s, 2.5 s]. So that the runs see every point of that cycle, kill and stop wait a random
//     time in [0, period) before the fault (not for elect: its one run keeps a fixed phase).
//     etcd raises a TTL below its minimum (1.5 x election timeout, rounded up: 2 s by default)
//     to that minimum.
//   - Resumed after SIGSTOP past its TTL, the old holder's keep-alive finds the lease gone (the
//     server answers TTL 0, or the client's 1 s deadline loop gives up), the session ends, and
//     `lock` prints "Error: session expired" and exits 1 (`elect`, from its source, not run
//     here: "elect: session expired"). Until it notices, it still believes it holds the lock;
//     `lock NAME COMMAND` does not watch its session at all: the command runs on. Measured: see
//     the old-holder counts (here it exits a few ms after SIGCONT: Go's overdue timers fire).
// The exit status is 0 when no run failed, 1 when one did, 2 on bad input (unknown scenario,
// unreachable database, etcd or ZooKeeper missing), 130 when interrupted (SIGINT, SIGTERM). Every child is in
// its own process group, dies with alt_bench (PR_SET_PDEATHSIG) and is killed and reaped at the
// end of its run; every wait is bounded.
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <pqxx/pqxx>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "bench_util.h"
#include "settings.h"
#include "zookeeper.h"

namespace {

using bench::free_port;
using bench::one_line;

// ---------------------------------------------------------------------------
// Time, interruption, small text helpers.

using Ns = long long;  // CLOCK_MONOTONIC nanoseconds
constexpr Ns kMs = 1000000;
constexpr Ns kSec = 1000 * kMs;

Ns mono_ns() {
  timespec t{};
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<Ns>(t.tv_sec) * kSec + t.tv_nsec;
}

double to_ms(Ns d) { return static_cast<double>(d) / 1e6; }

timespec to_timespec(Ns d) { return timespec{static_cast<time_t>(d / kSec), static_cast<long>(d % kSec)}; }

volatile std::sig_atomic_t g_interrupted = 0;
extern "C" void on_interrupt(int) { g_interrupted = 1; }

// Bad input or an unusable environment: one line on stderr, exit 2.
struct Fatal : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Sleeps until `until` in slices of at most 50 ms; false when interrupted.
bool sleep_until(Ns until) {
  while (!g_interrupted) {
    const Ns left = until - mono_ns();
    if (left <= 0) return true;
    const timespec ts = to_timespec(std::min(left, 50 * kMs));
    ::nanosleep(&ts, nullptr);
  }
  return false;
}

// The last non-empty line of a file ("" if none), at most 300 characters.
std::string last_line(const std::string& path) {
  std::ifstream in(path);
  std::string line, last;
  while (std::getline(in, line))
    if (!one_line(line).empty()) last = one_line(line);
  return last.size() > 300 ? last.substr(last.size() - 300) : last;
}

std::string said(const std::string& path) {
  const std::string l = last_line(path);
  return l.empty() ? "" : " (its stderr: \"" + l + "\")";
}

std::string describe_status(int st) {
  if (WIFEXITED(st)) return "exit " + std::to_string(WEXITSTATUS(st));
  if (WIFSIGNALED(st)) {
    const char* abbrev = ::sigabbrev_np(WTERMSIG(st));
    return abbrev ? std::string("killed by SIG") + abbrev : "killed by signal " + std::to_string(WTERMSIG(st));
  }
  return "status " + std::to_string(st);
}

std::vector<std::string> split_commas(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string one;
  while (std::getline(in, one, ','))
    if (!one.empty()) out.push_back(one);
  return out;
}

// ---------------------------------------------------------------------------
// A child process: stdin /dev/null, stdout on a pipe (or appended to a file), stderr appended to
// a file. In its own process group (a ^C at the terminal reaches alt_bench only, which then
// stops it), killed by the kernel if alt_bench dies (PR_SET_PDEATHSIG). The destructor kills
// (SIGKILL, SIGCONT) and reaps it.
class Child {
 public:
  Child() = default;
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  Child(Child&& o) noexcept { *this = std::move(o); }
  Child& operator=(Child&& o) noexcept {
    if (this != &o) {
      kill_and_reap();
      pid_ = std::exchange(o.pid_, -1);
      out_ = std::exchange(o.out_, -1);
      buf_ = std::move(o.buf_);
      eof_ = o.eof_;
      status_ = std::exchange(o.status_, std::nullopt);
      read_at_ = o.read_at_;
      exited_at_ = o.exited_at_;
    }
    return *this;
  }
  ~Child() { kill_and_reap(); }

  // Runs argv[0] (a path). Throws std::runtime_error when it cannot be started.
  static Child start(const std::vector<std::string>& argv, const std::string& stderr_file = "/dev/null",
                     const std::string& stdout_file = "") {
    std::vector<char*> av;
    for (const auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
    av.push_back(nullptr);
    int out[2] = {-1, -1}, report[2] = {-1, -1};
    const bool piped = stdout_file.empty();
    if (piped && ::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe: " + std::string(std::strerror(errno)));
    if (::pipe2(report, O_CLOEXEC) != 0) {
      if (piped) ::close(out[0]), ::close(out[1]);
      throw std::runtime_error("pipe: " + std::string(std::strerror(errno)));
    }
    const int in = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    const int err = ::open(stderr_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const int sout = piped ? out[1] : ::open(stdout_file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    const pid_t parent = ::getpid();
    const pid_t pid = (in >= 0 && err >= 0 && sout >= 0) ? ::fork() : -2;
    if (pid == 0) {  // the child: async-signal-safe calls only, up to the exec
      ::setpgid(0, 0);
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(127);
      struct sigaction dfl {};
      dfl.sa_handler = SIG_DFL;
      ::sigaction(SIGINT, &dfl, nullptr);
      ::sigaction(SIGTERM, &dfl, nullptr);
      ::sigaction(SIGPIPE, &dfl, nullptr);
      sigset_t none;
      ::sigemptyset(&none);
      ::sigprocmask(SIG_SETMASK, &none, nullptr);
      ::dup2(in, 0);
      ::dup2(sout, 1);
      ::dup2(err, 2);
      ::execv(av[0], av.data());
      const int e = errno;
      [[maybe_unused]] const ssize_t w = ::write(report[1], &e, sizeof e);
      ::_exit(127);
    }
    const int fork_errno = errno;
    for (int fd : {in, err, sout, report[1]})
      if (fd >= 0) ::close(fd);
    Child c;
    c.out_ = piped ? out[0] : -1;
    if (pid < 0) {
      ::close(report[0]);
      throw std::runtime_error("cannot start " + argv[0] + ": " +
                               (pid == -2 ? "cannot open /dev/null or " + stderr_file : std::strerror(fork_errno)));
    }
    c.pid_ = pid;
    int e = 0;
    ssize_t n;
    while ((n = ::read(report[0], &e, sizeof e)) < 0 && errno == EINTR) {
    }
    ::close(report[0]);
    if (n == static_cast<ssize_t>(sizeof e))
      throw std::runtime_error("cannot run " + argv[0] + ": " + std::strerror(e));
    return c;
  }

  pid_t pid() const { return pid_; }
  bool signal(int sig) const { return pid_ > 0 && !status_ && ::kill(pid_, sig) == 0; }

  // The next line of its stdout (without the newline), read by `deadline` (a deadline in the
  // past: only what is there already); nullopt at the deadline, at end of file or when
  // interrupted. *at: when that line's last bytes were read from the pipe.
  std::optional<std::string> read_line(Ns deadline, Ns* at = nullptr) {
    for (;;) {
      const auto nl = buf_.find('\n');
      if (nl != std::string::npos) {
        std::string line = buf_.substr(0, nl);
        buf_.erase(0, nl + 1);
        if (at) *at = read_at_;
        return line;
      }
      if (eof_ || out_ < 0 || g_interrupted) return std::nullopt;
      const Ns left = std::max<Ns>(0, deadline - mono_ns());
      pollfd p{out_, POLLIN, 0};
      const timespec ts = to_timespec(std::min(left, 50 * kMs));
      const int r = ::ppoll(&p, 1, &ts, nullptr);
      if (r < 0) {
        if (errno == EINTR) continue;
        return std::nullopt;
      }
      if (r == 0) {
        if (left == 0) return std::nullopt;
        continue;
      }
      char b[4096];
      const ssize_t n = ::read(out_, b, sizeof b);
      read_at_ = mono_ns();
      if (n > 0)
        buf_.append(b, static_cast<size_t>(n));
      else if (n == 0 || (errno != EINTR && errno != EAGAIN))
        eof_ = true;
    }
  }
  bool eof() const { return eof_; }
  const std::string& unread() const { return buf_; }

  // Its wait status once it has exited, waiting at most until `deadline` (0: just look).
  std::optional<int> wait_exit(Ns deadline) {
    for (;;) {
      if (status_ || pid_ <= 0) return status_;
      int st = 0;
      const pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        exited_at_ = mono_ns();
        status_ = st;
        return status_;
      }
      if (mono_ns() >= deadline || g_interrupted) return std::nullopt;
      sleep_until(std::min(deadline, mono_ns() + 2 * kMs));
    }
  }
  Ns exited_at() const { return exited_at_; }

  void kill_and_reap() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      ::kill(pid_, SIGCONT);
      int st = 0;
      while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
      }
      status_ = st;
      exited_at_ = mono_ns();
    }
    if (out_ >= 0) ::close(out_);
    out_ = -1;
  }

  // SIGTERM, then SIGKILL if it has not exited within `grace`.
  void stop(Ns grace) {
    if (signal(SIGTERM)) wait_exit(mono_ns() + grace);
    kill_and_reap();
  }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  std::string buf_;
  bool eof_ = false;
  std::optional<int> status_;
  Ns read_at_ = 0, exited_at_ = 0;
};

struct Output {
  int status;  // wait status
  std::string out;
};

// Runs argv to its end within `limit`: its stdout and status, nullopt when it did not end in time
// (it is killed) or could not be started.
std::optional<Output> run_capture(const std::vector<std::string>& argv, Ns limit,
                                  const std::string& stderr_file = "/dev/null") {
  Child c;
  try {
    c = Child::start(argv, stderr_file);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const Ns deadline = mono_ns() + limit;
  std::string out;
  while (auto line = c.read_line(deadline)) out += *line + "\n";
  if (!c.eof()) return std::nullopt;
  out += c.unread();
  const auto st = c.wait_exit(deadline);
  if (!st) return std::nullopt;
  return Output{*st, out};
}

int count_nonempty_lines(const std::string& s) {
  std::istringstream in(s);
  std::string line;
  int n = 0;
  while (std::getline(in, line))
    if (!one_line(line).empty()) ++n;
  return n;
}

// A temp dir, removed with everything in it at the end.
struct TempDir {
  std::string path;
  TempDir() {
    std::string p = (std::filesystem::temp_directory_path() / "alt-bench-XXXXXX").string();
    if (::mkdtemp(p.data()) == nullptr) throw Fatal("mkdtemp: " + std::string(std::strerror(errno)));
    path = p;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// Starts the server `name` (argv; stdout and stderr appended to `log`) and asks `answers`
// every 100 ms until it says yes (at most `limit`; `how`: what it asks, for the message).
// Throws Fatal if it cannot start, exits, or does not answer in time. Returns at once,
// with the server running, when interrupted.
Child start_server(const std::string& name, const std::vector<std::string>& argv, const std::string& log, Ns limit,
                   const std::string& how, const std::function<bool()>& answers) {
  Child proc;
  try {
    proc = Child::start(argv, log, log);
  } catch (const std::exception& e) {
    throw Fatal(name + ": " + e.what());
  }
  const Ns deadline = mono_ns() + limit;
  while (!g_interrupted) {
    if (const auto st = proc.wait_exit(0))
      throw Fatal(name + " exited at start (" + describe_status(*st) + "): " + last_line(log));
    if (answers()) break;
    if (mono_ns() > deadline)
      throw Fatal(name + " did not answer " + how + " within " + std::to_string(limit / kSec) + " s: " + last_line(log));
    sleep_until(mono_ns() + 100 * kMs);
  }
  return proc;
}

// ---------------------------------------------------------------------------
// etcd: one member of its own.

class Etcd {
 public:
  Etcd(std::string etcd, std::string etcdctl, std::string dir, bool fsync)
      : etcd_(std::move(etcd)), etcdctl_(std::move(etcdctl)), dir_(std::move(dir)), fsync_(fsync) {}
  ~Etcd() { stop(); }

  // Starts it and waits until it answers `etcdctl endpoint health`; throws Fatal.
  void start() {
    for (const auto& p : {etcd_, etcdctl_})
      if (::access(p.c_str(), X_OK) != 0)
        throw Fatal(p + " is not an executable (" + std::strerror(errno) + "); give --etcd / --etcdctl");
    const int client = free_port();
    int peer = free_port();
    while (peer == client) peer = free_port();
    endpoint_ = "http://127.0.0.1:" + std::to_string(client);
    const std::string peer_url = "http://127.0.0.1:" + std::to_string(peer);
    log_ = dir_ + "/etcd.log";
    std::vector<std::string> argv{etcd_,
                                  "--name",
                                  "b",
                                  "--data-dir",
                                  dir_ + "/etcd-data",
                                  "--listen-client-urls",
                                  endpoint_,
                                  "--advertise-client-urls",
                                  endpoint_,
                                  "--listen-peer-urls",
                                  peer_url,
                                  "--initial-advertise-peer-urls",
                                  peer_url,
                                  "--initial-cluster",
                                  "b=" + peer_url};
    if (!fsync_) argv.push_back("--unsafe-no-fsync");
    proc_ = start_server("etcd", argv, log_, 20 * kSec, "`etcdctl endpoint health`", [&] {
      const auto h = run_capture(ctl({"--dial-timeout=1s", "--command-timeout=2s", "endpoint", "health"}), 5 * kSec);
      return h && WIFEXITED(h->status) && WEXITSTATUS(h->status) == 0;
    });
    const auto v = run_capture({etcd_, "--version"}, 5 * kSec);
    const std::string key = "etcd Version: ";
    if (v) {
      const auto at = v->out.find(key);
      if (at != std::string::npos) version_ = v->out.substr(at + key.size(), v->out.find('\n', at) - at - key.size());
    }
  }

  void stop() {
    proc_.stop(10 * kSec);
    std::error_code ec;
    std::filesystem::remove_all(dir_ + "/etcd-data", ec);
  }

  // etcdctl --endpoints=THIS args...
  std::vector<std::string> ctl(std::vector<std::string> args) const {
    args.insert(args.begin(), {etcdctl_, "--endpoints=" + endpoint_});
    return args;
  }
  // How many keys there are under NAME/ (-1: etcdctl did not answer within 5 s).
  int keys_under(const std::string& name) const {
    const auto r = run_capture(ctl({"get", "--prefix", "--keys-only", name + "/"}), 5 * kSec);
    if (!r || !WIFEXITED(r->status) || WEXITSTATUS(r->status) != 0) return -1;
    return count_nonempty_lines(r->out);
  }
  const std::string& version() const { return version_; }

 private:
  std::string etcd_, etcdctl_, dir_, endpoint_, log_, version_;
  bool fsync_;
  Child proc_;
};

// ---------------------------------------------------------------------------
// ZooKeeper: one standalone server of its own (Debian `zookeeper`: the jars, no service).

// What a ZooKeeper server answers to a four-letter command on 127.0.0.1:port, within 2 s.
std::string four_letters(int port, const std::string& command) {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return "";
  timeval limit{2, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  std::string out;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
      ::send(fd, command.data(), command.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(command.size())) {
    char b[4096];
    ssize_t n;
    while ((n = ::recv(fd, b, sizeof b, 0)) > 0) out.append(b, static_cast<size_t>(n));
  }
  ::close(fd);
  return out;
}

class ZooKeeper {
 public:
  ZooKeeper(std::string java, std::string classpath, std::string dir, Ns tick)
      : java_(std::move(java)), classpath_(std::move(classpath)), dir_(std::move(dir)), tick_(tick) {}
  ~ZooKeeper() { stop(); }

  // Starts it and waits until a session is established; throws Fatal.
  void start(Ns session_timeout) {
    if (::access(java_.c_str(), X_OK) != 0)
      throw Fatal(java_ + " is not an executable (" + std::strerror(errno) + "); give --java");
    const std::string jar = classpath_.substr(classpath_.rfind(':') + 1);  // the server's own jar, last
    if (::access(jar.c_str(), R_OK) != 0)
      throw Fatal(jar + " is not readable (" + std::strerror(errno) + "): install zookeeper, or give --zk-classpath");
    port_ = free_port();
    hosts_ = "127.0.0.1:" + std::to_string(port_);
    const std::string cfg = dir_ + "/zoo.cfg", data = dir_ + "/zk-data";
    std::filesystem::create_directories(data);
    std::ofstream(cfg) << "tickTime=" << tick_ / kMs << "\n"
                       << "minSessionTimeout=" << 2 * tick_ / kMs << "\n"
                       << "dataDir=" << data << "\n"
                       << "clientPort=" << port_ << "\n"
                       << "clientPortAddress=127.0.0.1\n"
                       << "admin.enableServer=false\n"
                       << "forceSync=no\n"  // as etcd --unsafe-no-fsync and the test PostgreSQL's fsync = off
                       << "4lw.commands.whitelist=srvr\n";
    log_ = dir_ + "/zookeeper.log";
    proc_ = start_server(
        "zookeeper", {java_, "-Xmx256m", "-cp", classpath_, "org.apache.zookeeper.server.ZooKeeperServerMain", cfg},
        log_, 30 * kSec, "`srvr`", [&] { return four_letters(port_, "srvr").rfind("Zookeeper version: ", 0) == 0; });
    if (g_interrupted) return;
    const std::string srvr = four_letters(port_, "srvr");
    const std::string key = "Zookeeper version: ";
    version_ = srvr.substr(key.size(), srvr.find_first_of("-,\n", key.size()) - key.size());
    try {
      session_ = std::make_unique<bench::zk::Session>(hosts_, std::chrono::milliseconds(session_timeout / kMs),
                                                      std::chrono::seconds(20));
    } catch (const std::exception& e) {
      throw Fatal(std::string("zookeeper: ") + e.what());
    }
  }

  void stop() {
    session_.reset();
    proc_.stop(10 * kSec);
    std::error_code ec;
    std::filesystem::remove_all(dir_ + "/zk-data", ec);
  }

  const std::string& hosts() const { return hosts_; }
  const std::string& version() const { return version_; }
  // Candidates in line under `path` (-1: the server did not answer).
  int candidates(const std::string& path) const { return session_ ? session_->children(path) : -1; }
  // The session timeout the server grants a client that asks for ttl (as the parent's session).
  int granted_ms() const { return session_ ? session_->negotiated_timeout_ms() : 0; }
  Ns tick() const { return tick_; }

 private:
  std::string java_, classpath_, dir_, hosts_, log_, version_;
  Ns tick_;
  int port_ = 0;
  Child proc_;
  std::unique_ptr<bench::zk::Session> session_;
};

// ---------------------------------------------------------------------------
// The child mode: hold a session advisory lock.

int advisory_hold(const std::string& dsn, long long key) {
  sigset_t stop_set;
  ::sigemptyset(&stop_set);
  ::sigaddset(&stop_set, SIGTERM);
  ::sigaddset(&stop_set, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop_set, nullptr);  // taken by sigwait below, also if sent early
  try {
    pqxx::connection c(dsn);
    pqxx::nontransaction tx(c);
    tx.exec("SELECT pg_advisory_lock(" + std::to_string(key) + ")");  // blocks while another holds it
    std::printf("held %lld\n", key);
    std::fflush(stdout);
    int sig = 0;
    ::sigwait(&stop_set, &sig);
    tx.exec("SELECT pg_advisory_unlock(" + std::to_string(key) + ")");
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alt_bench advisory-hold: %s\n", one_line(e.what()).c_str());
    return 1;
  }
}

// ---------------------------------------------------------------------------
// Scenarios.

enum class Fault { term, kill, stop };

struct RunId {
  std::string name;   // the etcd lock or election name
  long long key;      // the advisory lock's key
  std::string files;  // prefix of this run's stderr files
};

// One alternative: how to start a contender and how to see the server's line of them.
struct Tool {
  std::function<std::vector<std::string>(const RunId&, int who)> argv;  // who: 0 the holder, 1 the waiter
  std::function<std::string(const RunId&)> marker;   // the start of the line a contender prints once it holds
  std::function<int(const RunId&)> contenders;       // holder and waiters the server has (-1: unknown)
  std::function<std::string(const RunId&)> resumed;  // stop: the server's view of a resumed holder still running
  Ns resume_watch = 2 * kSec;                        // stop: how long to watch the old holder after SIGCONT
  double own_ttl_ms = 0;                             // the tool's own TTL (0: none)
  Ns phase_spread = 0;  // kill, stop: a random wait in [0, this) before the fault (the keep-alive period)
};

struct Scenario {
  std::string name;
  const Tool* tool;
  Fault fault;
  Ns bound;  // no takeover within it: "no takeover"
};

struct Result {
  int runs = 0, failed = 0, no_takeover = 0;
  std::vector<double> samples_ms;
  std::map<std::string, int> old_holder;  // term, stop: what the old holder did
  std::vector<double> resume_to_exit_ms;  // stop: SIGCONT to the old holder's exit
  std::string old_holder_said;            // stop: the last line of its stderr (of the last run)
};

// One run. false, with `why`, when it could not be set up or a contender misbehaved.
bool one_run(const Scenario& s, const RunId& id, Ns ttl, Result& r, std::string& why) {
  const Tool& t = *s.tool;
  const std::string holder_err = id.files + "holder.err", waiter_err = id.files + "waiter.err";
  Child holder = Child::start(t.argv(id, 0), holder_err);
  const auto held = holder.read_line(mono_ns() + 10 * kSec);
  if (g_interrupted) return false;
  if (!held || held->rfind(t.marker(id), 0) != 0) {
    const auto st = holder.wait_exit(holder.eof() ? mono_ns() + 200 * kMs : 0);
    why = held ? "the holder printed \"" + *held + "\""
          : st ? "the holder exited (" + describe_status(*st) + ") without the lock" + said(holder_err)
               : "the holder did not take the lock within 10 s" + said(holder_err);
    return false;
  }
  Child waiter = Child::start(t.argv(id, 1), waiter_err);
  // Really queued: the server has both, and 100 ms later the waiter still waits.
  const Ns queue_by = mono_ns() + 10 * kSec;
  int in_line = 0;
  while ((in_line = t.contenders(id)) != 2 && mono_ns() < queue_by && !g_interrupted && !waiter.wait_exit(0))
    sleep_until(mono_ns() + 10 * kMs);
  sleep_until(mono_ns() + 100 * kMs);
  if (s.fault != Fault::term && t.phase_spread > 0) {  // a crash comes at any point of the keep-alive cycle
    static std::mt19937_64 rng{std::random_device{}()};
    sleep_until(mono_ns() + std::uniform_int_distribution<Ns>(0, t.phase_spread - 1)(rng));
  }
  if (g_interrupted) return false;
  if (in_line != 2) {
    why = "the server did not show the waiter in line within 10 s (it shows " + std::to_string(in_line) + ")" +
          said(waiter_err);
    return false;
  }
  if (const auto early = waiter.read_line(0)) {
    why = "the waiter printed \"" + *early + "\" while the holder held the lock";
    return false;
  }
  if (waiter.wait_exit(0) || holder.wait_exit(0)) {
    why = std::string(holder.wait_exit(0) ? "the holder" : "the waiter") + " exited before the fault" +
          said(holder.wait_exit(0) ? holder_err : waiter_err);
    return false;
  }

  const int sig = s.fault == Fault::term ? SIGTERM : s.fault == Fault::kill ? SIGKILL : SIGSTOP;
  const Ns fault_at = mono_ns();
  holder.signal(sig);
  Ns took_at = 0;
  const auto took = waiter.read_line(fault_at + s.bound, &took_at);
  if (g_interrupted) return false;

  if (s.fault == Fault::stop) {
    if (!sleep_until(fault_at + ttl)) return false;  // frozen past ttl in any case
    const Ns resumed_at = mono_ns();
    holder.signal(SIGCONT);
    if (const auto st = holder.wait_exit(resumed_at + t.resume_watch)) {
      ++r.old_holder[describe_status(*st)];
      r.resume_to_exit_ms.push_back(to_ms(holder.exited_at() - resumed_at));
    } else if (!g_interrupted) {
      ++r.old_holder["running " + std::to_string(t.resume_watch / kMs) + " ms after SIGCONT" +
                     (t.resumed ? ", " + t.resumed(id) : "")];
    }
    r.old_holder_said = last_line(holder_err);
  } else if (s.fault == Fault::term) {
    const auto st = holder.wait_exit(mono_ns() + 5 * kSec);
    ++r.old_holder[st ? describe_status(*st) : "running 5 s after SIGTERM"];
  }
  if (g_interrupted) return false;

  if (took) {
    if (took->rfind(t.marker(id), 0) != 0) {
      why = "the waiter printed \"" + *took + "\"";
      return false;
    }
    r.samples_ms.push_back(to_ms(took_at - fault_at));
  } else if (waiter.wait_exit(0)) {
    why = "the waiter exited (" + describe_status(*waiter.wait_exit(0)) + ") without the lock" + said(waiter_err);
    return false;
  } else {
    ++r.no_takeover;
  }
  return true;
}

double round3(double x) { return std::round(x * 1000.0) / 1000.0; }

// The stdout line of a scenario, and its JSON object.
nlohmann::json report(const Scenario& s, const Result& r, double ttl_ms) {
  std::vector<double> v = r.samples_ms;
  std::sort(v.begin(), v.end());
  nlohmann::json j;
  j["runs"] = r.runs;
  j["failed"] = r.failed;
  j["no_takeover"] = r.no_takeover;
  j["bound_ms"] = s.bound / kMs;
  j["tool_ttl_ms"] =
      s.tool->own_ttl_ms > 0 ? nlohmann::json(std::llround(s.tool->own_ttl_ms)) : nlohmann::json(nullptr);
  nlohmann::json samples = nlohmann::json::array();
  for (double x : r.samples_ms) samples.push_back(round3(x));
  j["samples_ms"] = samples;
  std::printf("%-16s runs=%d failed=%d no_takeover=%d", s.name.c_str(), r.runs, r.failed, r.no_takeover);
  if (v.empty()) {
    for (const char* k : {"min", "median", "p95", "max", "max_over_ttl"}) j[k] = nullptr;
    std::printf("  no samples");
  } else {
    const double mn = v.front(), med = bench::percentile(v, 0.5), p95 = bench::percentile(v, 0.95), mx = v.back();
    j["min"] = round3(mn);
    j["median"] = round3(med);
    j["p95"] = round3(p95);
    j["max"] = round3(mx);
    j["max_over_ttl"] = round3(mx / ttl_ms);
    std::printf("  min %.1f  median %.1f  p95 %.1f  max %.1f ms  max/ttl %.3f", mn, med, p95, mx, mx / ttl_ms);
  }
  if (r.no_takeover > 0) std::printf("  (no takeover within %.0f ms: %d)", to_ms(s.bound), r.no_takeover);
  if (s.tool->own_ttl_ms > 0 && s.tool->own_ttl_ms != ttl_ms)
    std::printf("  [its own ttl %.0f ms]", s.tool->own_ttl_ms);
  if (!r.old_holder.empty()) {
    j["old_holder"] = r.old_holder;
    std::printf("  old holder after %s:", s.fault == Fault::stop ? "SIGCONT" : "SIGTERM");
    const char* sep = " ";
    for (const auto& [what, n] : r.old_holder) {
      std::printf("%s%s x%d", sep, what.c_str(), n);
      sep = ", ";
    }
  }
  if (s.fault == Fault::stop) {
    std::vector<double> e = r.resume_to_exit_ms;
    std::sort(e.begin(), e.end());
    j["resume_to_exit_ms"] = nlohmann::json::array();
    for (double x : r.resume_to_exit_ms) j["resume_to_exit_ms"].push_back(round3(x));
    j["old_holder_said"] = r.old_holder_said;
    if (!e.empty()) std::printf(" (%.1f-%.1f ms after SIGCONT)", e.front(), e.back());
    if (!r.old_holder_said.empty()) std::printf(", its stderr: \"%s\"", r.old_holder_said.c_str());
  }
  std::printf("\n");
  std::fflush(stdout);
  return j;
}

const std::vector<std::string> kDefault{"etcd-lock-term", "etcd-lock-kill", "etcd-lock-stop", "etcd-elect-term",
                                        "advisory-term",  "advisory-kill",  "advisory-stop",  "zk-term",
                                        "zk-kill",        "zk-stop"};

int run_all(int runs, const std::string& ttl_s, std::string stop_limit_s, const std::string& scenario_list,
            const std::string& json_path, std::string dsn, const std::string& etcd_path, const std::string& etcdctl_path,
            bool elect_crash, bool etcd_fsync, const std::string& java_path, const std::string& zk_classpath) {
  Ns ttl = 0, stop_limit = 0;
  try {
    ttl = static_cast<Ns>(lease_agent::parse_duration(ttl_s).count()) * kMs;
    stop_limit =
        stop_limit_s.empty() ? 3 * ttl : static_cast<Ns>(lease_agent::parse_duration(stop_limit_s).count()) * kMs;
  } catch (const std::exception& e) {
    throw Fatal(std::string("--ttl / --stop-limit: ") + e.what());
  }
  if (ttl % kSec != 0) throw Fatal("--ttl " + ttl_s + ": etcdctl lock --ttl takes whole seconds");
  const std::string ttl_arg = "--ttl=" + std::to_string(ttl / kSec);

  std::vector<std::string> wanted;
  std::vector<std::string> known = kDefault;
  known.push_back("etcd-elect-kill");
  for (const auto& n : scenario_list.empty() ? kDefault : split_commas(scenario_list)) {
    if (std::find(known.begin(), known.end(), n) == known.end()) {
      std::string all;
      for (const auto& k : known) all += (all.empty() ? "" : ", ") + k;
      throw Fatal("unknown scenario '" + n + "' (" + all + ")");
    }
    if (n == "etcd-elect-kill" && !elect_crash) throw Fatal("etcd-elect-kill takes 40-60 s a run: give --elect-crash");
    if (std::find(wanted.begin(), wanted.end(), n) == wanted.end()) wanted.push_back(n);
  }
  if (elect_crash && std::find(wanted.begin(), wanted.end(), "etcd-elect-kill") == wanted.end())
    wanted.push_back("etcd-elect-kill");
  const bool need_etcd =
      std::any_of(wanted.begin(), wanted.end(), [](const std::string& n) { return n.rfind("etcd-", 0) == 0; });
  const bool need_pg =
      std::any_of(wanted.begin(), wanted.end(), [](const std::string& n) { return n.rfind("advisory-", 0) == 0; });
  const bool need_zk =
      std::any_of(wanted.begin(), wanted.end(), [](const std::string& n) { return n.rfind("zk-", 0) == 0; });
  if (!json_path.empty() && !std::ofstream(json_path, std::ios::app)) throw Fatal("cannot write --json " + json_path);

  TempDir work;                                                       // destroyed after etcd (declared before it)
  nlohmann::json versions{{"etcd", nullptr}, {"postgres", nullptr}, {"zookeeper", nullptr}};  // null: not used
  Etcd etcd(etcd_path, etcdctl_path, work.path, etcd_fsync);
  if (need_etcd) {
    etcd.start();
    if (g_interrupted) {
      std::fprintf(stderr, "alt_bench: interrupted\n");
      return 130;
    }
    versions["etcd"] = etcd.version();
  }
  // tickTime ttl/2: the largest that grants a session of ttl (its minimum is two ticks), the
  // closest to ZooKeeper's default of 2 s.
  ZooKeeper zookeeper(java_path, zk_classpath, work.path, ttl / 2);
  if (need_zk) {
    zookeeper.start(ttl);
    if (g_interrupted) {
      std::fprintf(stderr, "alt_bench: interrupted\n");
      return 130;
    }
    versions["zookeeper"] = zookeeper.version() + " (C client " + bench::zk::client_version() + ")";
  }
  std::unique_ptr<pqxx::connection> db;
  if (need_pg) {
    if (dsn.empty()) throw Fatal("advisory-*: no database: give --dsn or set LEASE_AGENT_TEST_DSN");
    try {
      db = std::make_unique<pqxx::connection>(dsn);
      pqxx::nontransaction tx(*db);
      versions["postgres"] = tx.exec("SHOW server_version")[0][0].as<std::string>();
    } catch (const std::exception& e) {
      throw Fatal("cannot use the database (--dsn or LEASE_AGENT_TEST_DSN): " + one_line(e.what()));
    }
  }

  char self[4096];
  const ssize_t self_len = ::readlink("/proc/self/exe", self, sizeof self - 1);
  if (self_len <= 0) throw Fatal("readlink /proc/self/exe: " + std::string(std::strerror(errno)));
  const std::string self_path(self, static_cast<size_t>(self_len));

  Tool lock;
  lock.argv = [&](const RunId& id, int) { return etcd.ctl({"lock", ttl_arg, id.name}); };
  lock.marker = [](const RunId& id) { return id.name + "/"; };
  lock.contenders = [&](const RunId& id) { return etcd.keys_under(id.name); };
  lock.resumed = [&](const RunId& id) {
    return etcd.keys_under(id.name) == 1 ? std::string("its key gone") : std::string("its key still there");
  };
  lock.own_ttl_ms = to_ms(ttl);
  // The client renews once TTL/3 has passed, looked at every 500 ms: every 1 s for TTL 2 s.
  lock.phase_spread = std::max<Ns>(500 * kMs, ((ttl / 3 + 500 * kMs - 1) / (500 * kMs)) * 500 * kMs);
  Tool elect = lock;
  elect.phase_spread = 0;  // one run of etcd-elect-kill is long enough as it is: fixed phase
  elect.argv = [&](const RunId& id, int who) { return etcd.ctl({"elect", id.name, who == 0 ? "p1" : "p2"}); };
  elect.own_ttl_ms = 60000;  // concurrency.NewSession's default, not settable from etcdctl elect
  Tool advisory;
  advisory.argv = [&](const RunId& id, int) {
    return std::vector<std::string>{self_path, "advisory-hold", "--dsn", dsn, "--key", std::to_string(id.key)};
  };
  advisory.marker = [](const RunId&) { return std::string("held "); };
  const auto lock_rows = [&](const RunId& id, bool granted) {
    pqxx::nontransaction tx(*db);
    return tx
        .exec(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
            " AND (classid::bigint << 32 | objid::bigint) = " +
            std::to_string(id.key) + " AND granted = " + (granted ? "true" : "false"))[0][0]
        .as<int>();
  };
  advisory.contenders = [&](const RunId& id) { return lock_rows(id, true) + lock_rows(id, false); };
  advisory.resumed = [&](const RunId& id) {
    return lock_rows(id, true) == 1 && lock_rows(id, false) == 1 ? std::string("still holding the lock (pg_locks)")
                                                                 : std::string("lock released");
  };
  advisory.resume_watch = 300 * kMs;  // it never checks; it holds the lock for as long as its session lives

  Tool zk;
  zk.argv = [&](const RunId& id, int) {
    return std::vector<std::string>{self_path, "zk-hold", "--hosts", zookeeper.hosts(), "--path", "/" + id.name,
                                    "--timeout-ms", std::to_string(ttl / kMs)};
  };
  zk.marker = [](const RunId&) { return std::string("held "); };
  zk.contenders = [&](const RunId& id) { return zookeeper.candidates("/" + id.name); };
  zk.resumed = [&](const RunId& id) {
    return zookeeper.candidates("/" + id.name) == 1 ? std::string("its node gone") : std::string("its node still there");
  };
  zk.own_ttl_ms = zookeeper.granted_ms();
  zk.phase_spread = zookeeper.tick();  // the server expires sessions on tick boundaries

  const Ns quick = 3 * ttl + kSec;
  const std::map<std::string, Scenario> table{
      {"etcd-lock-term", {"etcd-lock-term", &lock, Fault::term, quick}},
      {"etcd-lock-kill", {"etcd-lock-kill", &lock, Fault::kill, quick}},
      {"etcd-lock-stop", {"etcd-lock-stop", &lock, Fault::stop, stop_limit}},
      {"etcd-elect-term", {"etcd-elect-term", &elect, Fault::term, quick}},
      {"etcd-elect-kill", {"etcd-elect-kill", &elect, Fault::kill, 90 * kSec}},
      {"advisory-term", {"advisory-term", &advisory, Fault::term, quick}},
      {"advisory-kill", {"advisory-kill", &advisory, Fault::kill, quick}},
      {"advisory-stop", {"advisory-stop", &advisory, Fault::stop, stop_limit}},
      {"zk-term", {"zk-term", &zk, Fault::term, quick}},
      {"zk-kill", {"zk-kill", &zk, Fault::kill, quick}},
      {"zk-stop", {"zk-stop", &zk, Fault::stop, stop_limit}},
  };

  std::printf("alt_bench: %d runs per scenario, ttl=%s, stop limit %.0f ms; etcd %s%s, postgres %s, zookeeper %s\n",
              runs, ttl_s.c_str(), to_ms(stop_limit), need_etcd ? etcd.version().c_str() : "-",
              need_etcd && !etcd_fsync ? " (--unsafe-no-fsync)" : "",
              need_pg ? versions["postgres"].get<std::string>().c_str() : "-",
              need_zk ? (zookeeper.version() + " (tickTime " + std::to_string(zookeeper.tick() / kMs) +
                         " ms, session " + std::to_string(zookeeper.granted_ms()) + " ms, forceSync=no)")
                            .c_str()
                      : "-");
  std::fflush(stdout);
  nlohmann::json out{{"tool versions", versions},
                     {"ttl_ms", ttl / kMs},
                     {"stop_limit_ms", stop_limit / kMs},
                     {"etcd_fsync", etcd_fsync},
                     {"zookeeper_tick_ms", need_zk ? nlohmann::json(zookeeper.tick() / kMs) : nlohmann::json(nullptr)},
                     {"scenarios", nlohmann::json::object()}};
  int status = 0;
  for (size_t si = 0; si < wanted.size() && !g_interrupted; ++si) {
    const Scenario& s = table.at(wanted[si]);
    Result r;
    for (int run = 0; run < runs && !g_interrupted; ++run) {
      const RunId id{"alt-" + std::to_string(::getpid()) + "-" + s.name + "-" + std::to_string(run),
                     (static_cast<long long>(::getpid()) << 20) | (static_cast<long long>(si) << 10) | run,
                     work.path + "/" + s.name + "-" + std::to_string(run) + "-"};
      std::string why;
      bool ok = false;
      try {
        ok = one_run(s, id, ttl, r, why);
      } catch (const std::exception& e) {
        why = one_line(e.what());
      }
      if (g_interrupted) break;
      ++r.runs;
      if (!ok) {
        ++r.failed;
        std::fprintf(stderr, "alt_bench: %s run %d: %s\n", s.name.c_str(), run + 1, why.c_str());
      }
    }
    if (g_interrupted) break;
    out["scenarios"][s.name] = report(s, r, to_ms(ttl));
    if (r.failed > 0) status = 1;
  }
  if (g_interrupted) {
    std::fprintf(stderr, "alt_bench: interrupted; children stopped\n");
    return 130;
  }
  if (!json_path.empty()) {
    std::ofstream f(json_path, std::ios::trunc);
    f << out.dump(2) << "\n";
    if (!f) throw Fatal("cannot write --json " + json_path);
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"alt_bench: takeover times of etcd's lock and election, a PostgreSQL advisory lock and ZooKeeper's election recipe"};
  int runs = 20;
  std::string ttl_s = "2s", stop_limit_s, scenarios, json_path;
  std::string dsn = std::getenv("LEASE_AGENT_TEST_DSN") ? std::getenv("LEASE_AGENT_TEST_DSN") : "";
  std::string etcd_path = "/usr/bin/etcd", etcdctl_path = "/usr/bin/etcdctl";
  std::string java_path = "/usr/bin/java",
              zk_classpath = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";
  bool elect_crash = false, etcd_fsync = false;
  app.add_option("--runs", runs, "runs per scenario")->check(CLI::Range(1, 1000));
  app.add_option("--ttl", ttl_s, "the ttl to compare with, whole seconds (etcdctl lock --ttl)");
  app.add_option("--stop-limit", stop_limit_s,
                 "stop scenarios: how long the holder stays frozen at most (default 3 x ttl)");
  app.add_option("--scenario", scenarios,
                 "comma-separated (default all but etcd-elect-kill): etcd-lock-term, etcd-lock-kill, etcd-lock-stop, "
                 "etcd-elect-term, etcd-elect-kill, advisory-term, advisory-kill, advisory-stop");
  app.add_option("--json", json_path, "also write the figures as JSON to this file");
  app.add_option("--dsn", dsn, "advisory-*: the database (default: LEASE_AGENT_TEST_DSN)");
  app.add_option("--etcd", etcd_path, "the etcd binary");
  app.add_option("--etcdctl", etcdctl_path, "the etcdctl binary");
  app.add_option("--java", java_path, "zk-*: the java binary that runs the ZooKeeper server");
  app.add_option("--zk-classpath", zk_classpath, "zk-*: the ZooKeeper server's classpath (its jar last)");
  app.add_flag("--elect-crash", elect_crash, "also etcd-elect-kill (40-60 s a run: elect's session TTL is 60 s)");
  app.add_flag("--etcd-fsync", etcd_fsync, "run etcd with fsync (its default; without: --unsafe-no-fsync)");
  auto* hold = app.add_subcommand("advisory-hold", "child mode: hold a session advisory lock until SIGTERM");
  std::string hold_dsn;
  long long hold_key = 0;
  hold->add_option("--dsn", hold_dsn)->required();
  hold->add_option("--key", hold_key)->required();
  auto* zk_hold = app.add_subcommand("zk-hold", "child mode: ZooKeeper's election recipe, leader until SIGTERM");
  std::string zk_hosts, zk_path;
  int zk_timeout_ms = 2000;
  zk_hold->add_option("--hosts", zk_hosts)->required();
  zk_hold->add_option("--path", zk_path)->required();
  zk_hold->add_option("--timeout-ms", zk_timeout_ms)->check(CLI::Range(100, 600000));
  if (const auto status = bench::parse_flags(app, argc, argv, "alt_bench")) return *status;
  if (*hold) return advisory_hold(hold_dsn, hold_key);
  if (*zk_hold) return bench::zk::hold(zk_hosts, zk_path, std::chrono::milliseconds(zk_timeout_ms));

  struct sigaction sa {};
  sa.sa_handler = on_interrupt;  // no SA_RESTART: waits return at once, then every loop sees the flag
  ::sigaction(SIGINT, &sa, nullptr);
  ::sigaction(SIGTERM, &sa, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  if (!std::getenv("PGCONNECT_TIMEOUT")) ::setenv("PGCONNECT_TIMEOUT", "5", 1);  // an unreachable host: no hang
  try {
    return run_all(runs, ttl_s, stop_limit_s, scenarios, json_path, dsn, etcd_path, etcdctl_path, elect_crash,
                   etcd_fsync, java_path, zk_classpath);
  } catch (const Fatal& e) {
    std::fprintf(stderr, "alt_bench: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "alt_bench: %s\n", one_line(e.what()).c_str());
    return 2;
  }
}
