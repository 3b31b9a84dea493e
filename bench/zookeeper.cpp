// ZooKeeper's leader-election recipe (bench/zookeeper.h), on the multi-threaded C client: its
// own threads run the session and call the watcher; the watcher only records what happened
// and writes to an eventfd, and the caller's thread makes every synchronous call.
#include "zookeeper.h"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <unistd.h>
#include <zookeeper/zookeeper.h>
#include <zookeeper/zookeeper_version.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <vector>

namespace bench::zk {
namespace {

using Clock = std::chrono::steady_clock;

// What the client's threads tell the caller's.
struct Events {
  int fd = -1;                         // an eventfd, written on every event
  std::atomic<int> state{0};           // the session's state (ZOO_CONNECTED_STATE, ...)
  std::atomic<bool> expired{false};    // the session has ended for good
  std::atomic<std::uint64_t> seen{0};  // events so far

  Events() : fd(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {
    if (fd < 0) throw std::runtime_error(std::string("eventfd: ") + std::strerror(errno));
  }
  ~Events() { ::close(fd); }
  void poke() {
    seen.fetch_add(1);
    std::uint64_t one = 1;
    while (::write(fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
  }
  void drain() {
    std::uint64_t n;
    while (::read(fd, &n, sizeof n) < 0 && errno == EINTR) {
    }
  }
};

extern "C" void on_event(zhandle_t*, int type, int state, const char*, void* ctx) {
  auto* ev = static_cast<Events*>(ctx);
  if (type == ZOO_SESSION_EVENT) {
    ev->state.store(state);
    if (state == ZOO_EXPIRED_SESSION_STATE || state == ZOO_AUTH_FAILED_STATE) ev->expired.store(true);
  }
  ev->poke();  // a session change, or the watched node's deletion (or change)
}

// Waits for the session to connect, up to `limit`; false on expiry or at the limit.
bool wait_connected(Events& ev, std::chrono::milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (ev.state.load() != ZOO_CONNECTED_STATE) {
    if (ev.expired.load()) return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return false;
    pollfd p{ev.fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<long long>(left, 100))) > 0) ev.drain();
  }
  return true;
}

void quiet_client_log() {
  static const bool once = [] {
    zoo_set_debug_level(ZOO_LOG_LEVEL_WARN);  // to stderr: a child's goes to its stderr file
    return true;
  }();
  (void)once;
}

// The children of `path`, sorted (their sequence numbers are zero-padded); rc as the client's.
int sorted_children(zhandle_t* zh, const std::string& path, std::vector<std::string>& out) {
  String_vector kids{0, nullptr};
  const int rc = zoo_get_children(zh, path.c_str(), 0, &kids);
  out.clear();
  if (rc == ZOK) {
    for (int i = 0; i < kids.count; ++i) out.emplace_back(kids.data[i]);
    deallocate_String_vector(&kids);
    std::sort(out.begin(), out.end());
  }
  return rc;
}

}  // namespace

std::string client_version() { return ZOO_VERSION; }

struct Session::Impl {
  Events ev;
  zhandle_t* zh = nullptr;
  ~Impl() {
    if (zh) zookeeper_close(zh);
  }
};

Session::Session(const std::string& hosts, std::chrono::milliseconds session_timeout,
                 std::chrono::milliseconds limit)
    : impl_(std::make_unique<Impl>()) {
  quiet_client_log();
  impl_->zh = zookeeper_init(hosts.c_str(), on_event, static_cast<int>(session_timeout.count()), nullptr, &impl_->ev, 0);
  if (!impl_->zh) throw std::runtime_error("zookeeper_init " + hosts + ": " + std::strerror(errno));
  if (!wait_connected(impl_->ev, limit)) {
    throw std::runtime_error("no ZooKeeper session with " + hosts + " within " + std::to_string(limit.count()) +
                             " ms");
  }
}

Session::~Session() = default;

int Session::children(const std::string& path) {
  std::vector<std::string> names;
  const int rc = sorted_children(impl_->zh, path, names);
  if (rc == ZNONODE) return 0;
  return rc == ZOK ? static_cast<int>(names.size()) : -1;
}

int Session::negotiated_timeout_ms() const { return zoo_recv_timeout(impl_->zh); }

int hold(const std::string& hosts, const std::string& path, std::chrono::milliseconds session_timeout) {
  sigset_t stop_set;
  ::sigemptyset(&stop_set);
  ::sigaddset(&stop_set, SIGTERM);
  ::sigaddset(&stop_set, SIGINT);
  ::sigprocmask(SIG_BLOCK, &stop_set, nullptr);  // before the client's threads start: they inherit it
  const int sig_fd = ::signalfd(-1, &stop_set, SFD_CLOEXEC);
  if (sig_fd < 0) {
    std::fprintf(stderr, "zk-hold: signalfd: %s\n", std::strerror(errno));
    return 1;
  }
  auto fail = [](const char* what, int rc) {
    std::fprintf(stderr, "zk-hold: %s: %s\n", what, rc == ZSESSIONEXPIRED ? "session expired" : zerror(rc));
    return 1;
  };
  quiet_client_log();
  Events ev;
  zhandle_t* zh = zookeeper_init(hosts.c_str(), on_event, static_cast<int>(session_timeout.count()), nullptr, &ev, 0);
  if (!zh) {
    std::fprintf(stderr, "zk-hold: zookeeper_init %s: %s\n", hosts.c_str(), std::strerror(errno));
    return 1;
  }
  struct Closer {
    zhandle_t* zh;
    ~Closer() { zookeeper_close(zh); }
  } closer{zh};
  if (!wait_connected(ev, std::chrono::seconds(20))) {
    std::fprintf(stderr, "zk-hold: no session with %s within 20 s\n", hosts.c_str());
    return 1;
  }

  int rc = zoo_create(zh, path.c_str(), "", 0, &ZOO_OPEN_ACL_UNSAFE, 0, nullptr, 0);
  if (rc != ZOK && rc != ZNODEEXISTS) return fail(("create " + path).c_str(), rc);
  char created[512];
  rc = zoo_create(zh, (path + "/n-").c_str(), "", 0, &ZOO_OPEN_ACL_UNSAFE, ZOO_EPHEMERAL_SEQUENTIAL, created,
                  sizeof created);
  if (rc != ZOK) return fail("create the candidate's node", rc);
  const std::string own_path = created;
  const std::string own = own_path.substr(own_path.rfind('/') + 1);

  bool held = false;
  std::vector<std::string> line;
  for (;;) {
    // Look again after every event: the predecessor gone (it may not be the leader: then the
    // next one before us is watched), a session change.
    if (ev.expired.load()) return fail("the session", ZSESSIONEXPIRED);
    if (!held && ev.state.load() == ZOO_CONNECTED_STATE) {
      rc = sorted_children(zh, path, line);
      if (rc == ZSESSIONEXPIRED) return fail("the session", rc);
      if (rc == ZOK) {
        const auto at = std::find(line.begin(), line.end(), own);
        if (at == line.end()) return fail("its node is gone", ZNONODE);
        if (at == line.begin()) {
          held = true;
          std::printf("held %s\n", own.c_str());
          std::fflush(stdout);
        } else {
          rc = zoo_wexists(zh, (path + "/" + *(at - 1)).c_str(), on_event, &ev, nullptr);
          if (rc == ZNONODE) continue;  // gone already: look again
          if (rc == ZSESSIONEXPIRED) return fail("the session", rc);
        }
      }
      // ZCONNECTIONLOSS and the like: the session reconnects; its event brings us back here.
    }
    pollfd fds[2] = {{ev.fd, POLLIN, 0}, {sig_fd, POLLIN, 0}};
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      std::fprintf(stderr, "zk-hold: poll: %s\n", std::strerror(errno));
      return 1;
    }
    if (fds[1].revents) {
      signalfd_siginfo si;
      (void)!::read(sig_fd, &si, sizeof si);
      rc = zoo_delete(zh, own_path.c_str(), -1);  // what a leader that resigns does
      if (rc != ZOK && rc != ZNONODE) return fail("delete its node", rc);
      return 0;
    }
    if (fds[0].revents) ev.drain();
  }
}

}  // namespace bench::zk
