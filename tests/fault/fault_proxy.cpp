// The fault proxy (fault_proxy.h says what each fault does).
//
// How it works:
// - One thread runs a poll() loop over an eventfd (set_mode() and the destructor write
//   to it to wake the loop), the listening socket, and both sockets of every proxied
//   connection. Every socket is non-blocking; nothing but poll() ever waits.
// - A connection has two directions, client-to-server and server-to-client. Each is a
//   queue of chunks as read, with the steady-clock time at which a chunk may be written
//   (read time + latency, never earlier than the chunk before it, so that a change of
//   latency cannot reorder a direction). The poll timeout is the earliest such time.
// - A dropped direction keeps reading its source and discards the bytes, so that the
//   peer's sends still succeed and only silence comes back; it writes nothing, not even
//   chunks queued before the drop (those are sent once the direction passes again).
//   A connection accepted in drop mode is not connected upstream until drop ends.
// - A reset is a generation counter as well as a mode, so that set_mode(reset) followed
//   at once by set_mode(pass) still resets the connections open at the time.
// - Backpressure: a source is not read while its direction holds more than kMaxPending
//   bytes; EOF is passed on as a half-close (shutdown SHUT_WR) once the direction is
//   flushed; a connection ends when both directions have; any socket error aborts both.
#include "fault_proxy.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <thread>
#include <vector>

namespace lease_agent_fault {
namespace {

using Clock = std::chrono::steady_clock;
using Mode = FaultProxy::Mode;

constexpr std::size_t kReadSize = 64 * 1024;      // bytes read per recv()
constexpr std::size_t kMaxPending = 1024 * 1024;  // stop reading a source above this backlog

std::runtime_error sys_error(const std::string& what) {
  return std::runtime_error("fault proxy: " + what + ": " + std::strerror(errno));
}

void set_nodelay(int fd) {
  int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Closes a socket; with `abort`, with a TCP RST rather than a FIN.
void close_socket(int& fd, bool abort) {
  if (fd < 0) return;
  if (abort) {
    linger l{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  }
  ::close(fd);
  fd = -1;
}

bool drops_to_server(Mode m) { return m == Mode::drop || m == Mode::drop_to_server; }
bool drops_to_client(Mode m) { return m == Mode::drop || m == Mode::drop_to_client; }

// Bytes read from one side, to be written to the other side from `due` on.
struct Chunk {
  Clock::time_point due;
  std::string bytes;
};

// One direction of a connection: what was read from its source and is not yet written
// to its target.
struct Direction {
  std::deque<Chunk> queue;
  std::size_t offset = 0;   // bytes of queue.front() already written
  std::size_t pending = 0;  // bytes in the queue not yet written
  bool eof = false;         // the source has sent its FIN
  bool shut = false;        // ... and it has been passed on to the target

  bool due(Clock::time_point now) const { return !queue.empty() && queue.front().due <= now; }
};

struct Conn {
  int client = -1;         // -1 once the connection has ended
  int server = -1;         // -1 until the upstream connect has started
  bool connected = false;  // the upstream connect has completed
  Direction to_server;
  Direction to_client;

  bool finished() const {
    return to_server.eof && to_server.shut && to_client.eof && to_client.shut;
  }
  void close(bool abort) {
    close_socket(client, abort);
    close_socket(server, abort);
  }
};

// Writes what is due of `d` to `fd`, then passes on its EOF once it is all written.
// False on a socket error.
bool flush(Direction& d, int fd, Clock::time_point now) {
  while (d.due(now)) {
    const std::string& bytes = d.queue.front().bytes;
    ssize_t n = ::send(fd, bytes.data() + d.offset, bytes.size() - d.offset, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK;  // poll() for POLLOUT then
    }
    d.offset += static_cast<std::size_t>(n);
    d.pending -= static_cast<std::size_t>(n);
    if (d.offset == bytes.size()) {
      d.queue.pop_front();
      d.offset = 0;
    }
  }
  if (d.eof && d.queue.empty() && !d.shut) {
    ::shutdown(fd, SHUT_WR);
    d.shut = true;
  }
  return true;
}

}  // namespace

struct FaultProxy::Impl {
  Impl(const std::string& upstream_host, int upstream_port);
  ~Impl();

  void wake();
  void run();
  void step();
  void service(Conn& c, Mode m, Clock::time_point now);
  void handle(Conn& c, short client_events, short server_events, Mode m);
  bool read_into(int fd, Direction& d, bool dropped);
  void apply_resets();
  void accept_all();
  void retire();
  void close_all(bool abort);

  // Set by the constructor, then read-only.
  sockaddr_storage upstream{};
  socklen_t upstream_len = 0;
  int listen_fd = -1;
  int wake_fd = -1;
  int port = 0;

  // Shared between the callers and the thread.
  std::atomic<Mode> mode{Mode::pass};
  std::atomic<std::uint64_t> resets{0};  // one more for every set_mode(reset)
  std::atomic<long long> latency_ms{0};
  std::atomic<int> open{0};
  std::atomic<bool> stopping{false};
  std::thread thread;

  // The thread's own.
  std::vector<std::unique_ptr<Conn>> conns;
  std::uint64_t resets_done = 0;
  std::vector<char> buffer = std::vector<char>(kReadSize);
};

FaultProxy::Impl::Impl(const std::string& upstream_host, int upstream_port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(upstream_port);
  if (int rc = ::getaddrinfo(upstream_host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    throw std::runtime_error("fault proxy: cannot resolve " + upstream_host + ": " +
                             ::gai_strerror(rc));
  }
  std::memcpy(&upstream, found->ai_addr, found->ai_addrlen);
  upstream_len = found->ai_addrlen;
  ::freeaddrinfo(found);

  // On a throw below, ~Impl closes whatever has been opened (no thread runs yet).
  listen_fd = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (listen_fd < 0) throw sys_error("socket");
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(listen_fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    throw sys_error("bind 127.0.0.1:0");
  }
  if (::listen(listen_fd, SOMAXCONN) != 0) throw sys_error("listen");
  if (::getsockname(listen_fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw sys_error("getsockname");
  }
  port = ntohs(addr.sin_port);
  wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) throw sys_error("eventfd");
  thread = std::thread([this] { run(); });
}

FaultProxy::Impl::~Impl() {
  stopping.store(true);
  if (thread.joinable()) {
    wake();
    thread.join();
  }
  close_all(false);
  close_socket(listen_fd, false);
  close_socket(wake_fd, false);
}

void FaultProxy::Impl::wake() {
  std::uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the thread will wake anyway.
  while (::write(wake_fd, &one, sizeof one) < 0 && errno == EINTR) {
  }
}

void FaultProxy::Impl::run() {
  try {
    while (!stopping.load()) step();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fault proxy: thread stopped: %s\n", e.what());
    close_all(true);  // better broken connections than silently frozen ones
  } catch (...) {
    std::fprintf(stderr, "fault proxy: thread stopped: unknown exception\n");
    close_all(true);
  }
}

// One turn of the loop: apply a reset, write what is due, wait, then read and accept.
void FaultProxy::Impl::step() {
  apply_resets();
  const Mode m = mode.load();

  Clock::time_point now = Clock::now();
  for (auto& c : conns) service(*c, m, now);
  retire();

  // Slots 0 and 1: eventfd and listener; then two per connection, client then server. A
  // socket with nothing to wait for gets fd -1 (ignored), lest a lasting POLLHUP spin.
  std::vector<pollfd> fds{{wake_fd, POLLIN, 0}, {listen_fd, POLLIN, 0}};
  Clock::time_point wake_at = Clock::time_point::max();
  auto want_write = [&](Direction& d, bool dropped, short& events) {
    if (dropped || d.queue.empty()) return;
    if (d.due(now)) {
      events |= POLLOUT;  // flush() met EAGAIN
    } else {
      wake_at = std::min(wake_at, d.queue.front().due);
    }
  };
  for (auto& c : conns) {
    short ce = 0, se = 0;
    if (!c->to_server.eof && (drops_to_server(m) || c->to_server.pending < kMaxPending)) {
      ce |= POLLIN;
    }
    want_write(c->to_client, drops_to_client(m), ce);
    if (c->server >= 0 && !c->connected) {
      se = POLLOUT;
    } else if (c->connected) {
      if (!c->to_client.eof && (drops_to_client(m) || c->to_client.pending < kMaxPending)) {
        se |= POLLIN;
      }
      want_write(c->to_server, drops_to_server(m), se);
    }
    fds.push_back({ce ? c->client : -1, ce, 0});
    fds.push_back({se ? c->server : -1, se, 0});
  }
  int timeout = -1;
  if (wake_at != Clock::time_point::max()) {
    auto wait = std::chrono::ceil<std::chrono::milliseconds>(wake_at - now);
    timeout = static_cast<int>(std::clamp<long long>(wait.count(), 0, 60'000));
  }

  if (::poll(fds.data(), fds.size(), timeout) < 0) {
    if (errno == EINTR) return;
    throw sys_error("poll");
  }
  if (fds[0].revents) {
    std::uint64_t count;
    (void)!::read(wake_fd, &count, sizeof count);
  }
  // The mode now, not the one before poll(): bytes sent after set_mode() returned must
  // see the new mode.
  const Mode now_mode = mode.load();
  const std::size_t polled = conns.size();  // accept_all() appends
  for (std::size_t i = 0; i < polled; ++i) {
    handle(*conns[i], fds[2 + 2 * i].revents, fds[3 + 2 * i].revents, now_mode);
  }
  if (fds[1].revents) accept_all();
  retire();
}

// Resets every open connection if set_mode(reset) was called since the last time, or if
// the mode is reset now.
void FaultProxy::Impl::apply_resets() {
  const std::uint64_t r = resets.load();
  if (r != resets_done || mode.load() == Mode::reset) {
    resets_done = r;
    close_all(true);
  }
}

// Before poll(): starts the upstream connect unless in drop, writes what is due, and
// ends the connection if both directions have ended.
void FaultProxy::Impl::service(Conn& c, Mode m, Clock::time_point now) {
  if (c.client < 0) return;  // ended after the last poll(), erased next
  if (c.server < 0 && m != Mode::drop) {
    c.server = ::socket(upstream.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c.server < 0) return c.close(true);
    set_nodelay(c.server);
    if (::connect(c.server, reinterpret_cast<const sockaddr*>(&upstream), upstream_len) == 0) {
      c.connected = true;
    } else if (errno != EINPROGRESS && errno != EINTR) {  // EINTR: it goes on regardless
      return c.close(true);
    }
  }
  if (!drops_to_client(m) && !flush(c.to_client, c.client, now)) return c.close(true);
  if (c.connected && !drops_to_server(m) && !flush(c.to_server, c.server, now)) {
    return c.close(true);
  }
  if (c.finished()) c.close(false);
}

// After poll(): completes the upstream connect and reads whatever is readable.
void FaultProxy::Impl::handle(Conn& c, short client_events, short server_events, Mode m) {
  constexpr short kReadable = POLLIN | POLLHUP | POLLERR;
  if (c.server >= 0 && !c.connected && server_events) {
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(c.server, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
      return c.close(true);  // the client sees a reset, as if upstream had refused it
    }
    c.connected = true;
  } else if ((server_events & kReadable) && !read_into(c.server, c.to_client, drops_to_client(m))) {
    return c.close(true);
  }
  if ((client_events & kReadable) && !read_into(c.client, c.to_server, drops_to_server(m))) {
    return c.close(true);
  }
}

// Reads once from `fd` into `d`, or into nothing if `dropped`. False on a socket error.
bool FaultProxy::Impl::read_into(int fd, Direction& d, bool dropped) {
  for (;;) {
    ssize_t n = ::recv(fd, buffer.data(), buffer.size(), 0);
    if (n > 0) {
      if (dropped) return true;
      Clock::time_point due = Clock::now() + std::chrono::milliseconds(latency_ms.load());
      if (!d.queue.empty()) due = std::max(due, d.queue.back().due);
      d.queue.push_back({due, std::string(buffer.data(), static_cast<std::size_t>(n))});
      d.pending += static_cast<std::size_t>(n);
      return true;
    }
    if (n == 0) {
      d.eof = true;
      return true;
    }
    if (errno != EINTR) return errno == EAGAIN || errno == EWOULDBLOCK;
  }
}

// Accepts every pending connection, each under the mode at the moment it is accepted:
// a caller may leave reset and connect while this loop runs (a mode read once for the
// loop reset such a connection). A reset requested before the accept applies to the
// connections open before it, not to the one accepted after.
void FaultProxy::Impl::accept_all() {
  apply_resets();
  for (;;) {
    int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        std::fprintf(stderr, "fault proxy: accept: %s\n", std::strerror(errno));
      }
      break;
    }
    if (mode.load() == Mode::reset) {
      close_socket(fd, true);
      continue;
    }
    set_nodelay(fd);
    conns.push_back(std::make_unique<Conn>());
    conns.back()->client = fd;  // connected upstream by the next service()
  }
}

// Forgets the connections that have ended, and publishes the count of the others.
void FaultProxy::Impl::retire() {
  conns.erase(std::remove_if(conns.begin(), conns.end(), [](auto& c) { return c->client < 0; }),
              conns.end());
  open.store(static_cast<int>(conns.size()));
}

void FaultProxy::Impl::close_all(bool abort) {
  for (auto& c : conns) c->close(abort);
  conns.clear();
  open.store(0);
}

FaultProxy::FaultProxy(const std::string& upstream_host, int upstream_port)
    : impl_(std::make_unique<Impl>(upstream_host, upstream_port)) {}

FaultProxy::~FaultProxy() = default;

int FaultProxy::port() const { return impl_->port; }

void FaultProxy::set_mode(Mode m) {
  if (m == Mode::reset) impl_->resets.fetch_add(1);
  impl_->mode.store(m);
  impl_->wake();
}

void FaultProxy::set_latency(std::chrono::milliseconds d) {
  impl_->latency_ms.store(std::max<long long>(d.count(), 0));
}

FaultProxy::Mode FaultProxy::mode() const { return impl_->mode.load(); }

int FaultProxy::open_connections() const { return impl_->open.load(); }

const char* to_string(FaultProxy::Mode m) {
  switch (m) {
    case FaultProxy::Mode::pass: return "pass";
    case FaultProxy::Mode::drop: return "drop";
    case FaultProxy::Mode::reset: return "reset";
    case FaultProxy::Mode::drop_to_server: return "drop_to_server";
    case FaultProxy::Mode::drop_to_client: return "drop_to_client";
  }
  return "unknown";
}

}  // namespace lease_agent_fault
