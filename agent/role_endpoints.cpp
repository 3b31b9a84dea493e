// The role endpoints on cpp-httplib. GET and HEAD answer alike.
//
// Why not httplib's own connection handling: in httplib 0.11 a worker thread stays with
// a kept-alive connection until the client closes it or the keep-alive timeout passes,
// and its ThreadPool has a fixed size. Load balancers and monitoring keep connections
// open, so a few of them took every thread and the next health check timed out, which
// a load balancer reads as "master down". So here:
//
//  - ElasticPool (a httplib::TaskQueue) makes one thread per open connection on demand,
//    up to EndpointLimits::max_connections, and lets idle ones exit. At the cap a new
//    connection is closed at once instead of waiting behind the others: a quick failure
//    beats a hang for every checker.
//  - Server (a httplib::Server) runs each connection itself (it overrides
//    process_and_close_socket, which httplib calls for every accepted socket, as its own
//    SSLServer does) and leaves parsing, routing and writing answers to httplib's
//    process_request. Each wait polls the socket together with a stop descriptor, so
//    stop() closes idle kept-alive connections at once instead of after their timeout;
//    an idle connection is closed after keep_alive_idle and a request has
//    request_timeout in all to arrive and be answered, so no client holds a thread for
//    long.
#include "role_endpoints.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <list>
#include <mutex>
#include <nlohmann/json.hpp>
#include <system_error>
#include <vector>

#include "log.h"

namespace lease_agent {

std::string status_json(const RoleView& v) {
  nlohmann::ordered_json j;
  j["cluster"] = v.cluster;
  j["node"] = v.node;
  j["address"] = v.address;
  j["role"] = v.role;
  j["epoch"] = v.epoch;
  if (v.master_node.empty()) {
    j["master"] = nullptr;
    j["master_address"] = nullptr;
  } else {
    j["master"] = v.master_node;
    j["master_address"] = v.master_address;
  }
  j["lease_left_ms"] = v.lease_left_ms;
  j["healthy"] = v.healthy;
  j["may_acquire"] = v.may_acquire;
  if (v.last_round_trip_ago_ms < 0) {
    j["last_round_trip_ago_ms"] = nullptr;
    j["last_round_trip_latency_ms"] = nullptr;
  } else {
    j["last_round_trip_ago_ms"] = v.last_round_trip_ago_ms;
    j["last_round_trip_latency_ms"] = v.last_round_trip_latency_ms;
  }
  return j.dump() + "\n";
}

namespace {

using Clock = std::chrono::steady_clock;

// Set while ElasticPool runs a connection's task on the accepting thread only to close
// it (the pool is at its cap). httplib's TaskQueue::enqueue cannot refuse a task, and
// the task hides the socket; the task calls Server::process_and_close_socket, which sees
// this flag and closes the socket without reading from it.
thread_local bool t_refusing = false;

void close_socket(int sock) {
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

// Threads on demand, up to `max_threads`; a thread idle for `linger` exits unless it is
// one of the `warm` first. httplib enqueues one task per accepted connection, and the
// task runs until the connection is closed; so "all threads busy" means "max_threads
// connections open", and then the new connection is closed at once.
class ElasticPool final : public httplib::TaskQueue {
 public:
  ElasticPool(std::size_t max_threads, std::size_t warm, std::chrono::milliseconds linger)
      : max_threads_(std::max<std::size_t>(1, max_threads)), warm_(warm), linger_(linger) {}

  ~ElasticPool() override { shutdown(); }

  // Called by httplib's accepting thread only.
  void enqueue(std::function<void()> fn) override {
    std::vector<std::thread> exited;
    bool refuse = false;
    bool first_refusal = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      exited.swap(exited_);
      if (shutdown_) {
        refuse = true;
      } else if (jobs_.size() < idle_) {  // an idle thread will take it
        jobs_.push_back(std::move(fn));
        wake_.notify_one();
      } else if (threads_.size() < max_threads_) {
        jobs_.push_back(std::move(fn));
        if (!spawn()) {
          fn = std::move(jobs_.back());
          jobs_.pop_back();
          refuse = true;
        }
      } else {
        refuse = true;
      }
      if (refuse && !refusing_) refusing_ = first_refusal = true;
    }
    for (auto& t : exited) t.join();  // they have returned already: quick
    if (first_refusal) {
      log_warning("http: every connection thread is busy: closing new connections until one is free",
                  {{"event", "http_busy"}, {"max_connections", static_cast<long long>(max_threads_)}});
    }
    if (refuse) {
      t_refusing = true;
      fn();  // closes the socket at once (Server::process_and_close_socket)
      t_refusing = false;
    }
  }

  // Runs the queued tasks (they see the stop and close their sockets), then joins.
  void shutdown() override {
    std::vector<std::thread> exited;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      shutdown_ = true;
      wake_.notify_all();
      gone_.wait(lock, [&] { return threads_.empty(); });
      exited.swap(exited_);
    }
    for (auto& t : exited) t.join();
  }

 private:
  using Threads = std::list<std::thread>;

  // With mutex_ held. False if no thread could be made (resource limits).
  bool spawn() {
    threads_.emplace_back();
    const Threads::iterator self = std::prev(threads_.end());
    try {
      // The thread touches `self` only under mutex_, which is held here until the
      // assignment is done.
      *self = std::thread([this, self] { work(self); });
    } catch (const std::system_error&) {
      threads_.erase(self);
      return false;
    }
    return true;
  }

  void work(Threads::iterator self) {
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      ++idle_;
      const bool woken =
          wake_.wait_for(lock, linger_, [&] { return shutdown_ || !jobs_.empty(); });
      --idle_;
      if (!jobs_.empty()) {  // even when shutting down: every accepted socket gets closed
        std::function<void()> job = std::move(jobs_.front());
        jobs_.pop_front();
        lock.unlock();
        try {
          job();
        } catch (...) {
          // process_and_close_socket does not throw; nothing to do if it ever did.
        }
        job = nullptr;
        lock.lock();
        refusing_ = false;  // a thread is free again: the next refusal is logged anew
        continue;
      }
      if (shutdown_) break;
      if (!woken && threads_.size() > warm_) break;  // idle for linger_: leave
    }
    // A thread cannot join itself: hand the std::thread over to be joined by the next
    // enqueue() or by shutdown().
    exited_.push_back(std::move(*self));
    threads_.erase(self);
    gone_.notify_all();
  }

  const std::size_t max_threads_;
  const std::size_t warm_;
  const std::chrono::milliseconds linger_;

  std::mutex mutex_;
  std::condition_variable wake_;  // a job or the shutdown
  std::condition_variable gone_;  // a thread has left
  Threads threads_;               // running (busy or idle)
  std::vector<std::thread> exited_;
  std::list<std::function<void()>> jobs_;
  std::size_t idle_ = 0;          // threads waiting for a job
  bool shutdown_ = false;
  bool refusing_ = false;         // the warning is logged once per busy spell
};

// One connection, as httplib reads and writes it: a buffered reader and a writer that
// wait at most until the current request's deadline, and never once stop() is called
// unless the socket is ready at once.
class ConnectionStream final : public httplib::Stream {
 public:
  ConnectionStream(int sock, int stop_fd) : sock_(sock), stop_fd_(stop_fd) {}

  // Waits up to `idle` for the next request (or the peer's close). False on timeout,
  // on stop, or on a socket error.
  bool wait_for_request(std::chrono::milliseconds idle) {
    if (buffered() > 0) return true;  // pipelined
    pollfd p[2] = {{sock_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
    const int n = poll_until(p, Clock::now() + idle);
    return n > 0 && !(p[1].revents & POLLIN) && p[0].revents != 0;
  }

  // Starts a request: it has until `deadline` to arrive and be answered.
  void set_deadline(Clock::time_point deadline) {
    deadline_ = deadline;
    broken_ = false;
  }
  // True when a read or write of this request failed: the request timed out, the peer
  // closed or reset, or stop() came. httplib may still have answered 400 then and
  // report success, but the stream is no longer in step: close the connection.
  bool broken() const { return broken_; }

  bool is_readable() const override { return buffered() > 0 || wait(POLLIN); }
  bool is_writable() const override { return wait(POLLOUT); }

  ssize_t read(char* ptr, std::size_t size) override {
    if (buffered() == 0) {
      for (;;) {
        if (!wait(POLLIN)) return fail();
        const ssize_t n = ::recv(sock_, buf_, sizeof buf_, MSG_DONTWAIT);
        if (n >= 0) {
          off_ = 0;
          len_ = static_cast<std::size_t>(n);
          if (n == 0) {  // the peer closed
            broken_ = true;
            return 0;
          }
          break;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return fail();
      }
    }
    const std::size_t k = std::min(size, buffered());
    std::memcpy(ptr, buf_ + off_, k);
    off_ += k;
    return static_cast<ssize_t>(k);
  }

  ssize_t write(const char* ptr, std::size_t size) override {
    if (size == 0) return 0;
    for (;;) {
      if (!wait(POLLOUT)) return fail();
      const ssize_t n = ::send(sock_, ptr, size, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) return n;
      if (n == 0) return fail();  // never for TCP; httplib would loop on 0
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return fail();
    }
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override {
    address_of(::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string& ip, int& port) const override {
    address_of(::getsockname, ip, port);
  }
  socket_t socket() const override { return sock_; }

 private:
  std::size_t buffered() const { return len_ - off_; }
  ssize_t fail() {
    broken_ = true;
    return -1;
  }

  // poll() on `p` until `deadline`, through EINTR. Returns poll's result.
  static int poll_until(pollfd (&p)[2], Clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      // Round up: poll(0) would spin on the last sub-millisecond.
      const int ms = left.count() <= 0 ? 0 : static_cast<int>(std::min<long long>(left.count() + 1, 1 << 30));
      const int n = ::poll(p, 2, ms);
      if (n >= 0 || errno != EINTR) return n;
    }
  }

  // True when the socket is ready for `events` before the deadline. Once stop() was
  // called it waits no more, but a socket ready at once is still used, so an answer
  // being written goes out if it can.
  bool wait(short events) const {
    pollfd p[2] = {{sock_, events, 0}, {stop_fd_, POLLIN, 0}};
    const int n = poll_until(p, deadline_);
    if (n <= 0) return false;  // the request's time is up, or an error
    if (p[0].revents & (POLLERR | POLLNVAL)) return false;
    // POLLHUP with POLLIN: read() will see the end of the stream.
    return (p[0].revents & (events | POLLHUP)) != 0;
  }

  template <typename GetName>
  void address_of(GetName get_name, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = 0;
    if (get_name(sock_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
      if (::inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text)) ip = text;
      port = ntohs(v4->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
      if (::inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text)) ip = text;
      port = ntohs(v6->sin6_port);
    }
  }

  const int sock_;
  const int stop_fd_;
  Clock::time_point deadline_ = Clock::now();
  bool broken_ = false;
  char buf_[4096];
  std::size_t off_ = 0;
  std::size_t len_ = 0;
};

}  // namespace

class RoleEndpoints::Server final : public httplib::Server {
 public:
  explicit Server(const EndpointLimits& limits) : limits_(limits) {
    // Level-triggered and never reset: once written, every poll of every connection
    // returns at once.
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) stop_fd_error_ = std::strerror(errno);
    const EndpointLimits l = limits_;
    new_task_queue = [l] {
      return new ElasticPool(l.max_connections, l.warm_threads, l.idle_thread_linger);
    };
    // Only for the Keep-Alive header of the answers (the connection loop below applies
    // the limits): advertise no longer than we keep, so clients close first.
    set_keep_alive_max_count(std::max<std::size_t>(1, limits_.keep_alive_max_requests));
    set_keep_alive_timeout(std::max<long long>(
        1, std::chrono::duration_cast<std::chrono::seconds>(limits_.keep_alive_idle).count()));
    // Headers and body go out in separate writes: without TCP_NODELAY, a health checker
    // on a kept-alive connection waits ~40 ms for each answer (Nagle + delayed ACK).
    set_tcp_nodelay(true);
    // httplib's default sets SO_REUSEPORT on the listening socket: a second agent given
    // the same port would then bind too and the kernel would share the checks between
    // the two. SO_REUSEADDR only: a restart may bind while old connections linger in
    // TIME_WAIT, but a port another process listens on is refused.
    set_socket_options([](socket_t sock) {
      int yes = 1;
      ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    });
    // The requests are a line and a few headers: refuse big bodies rather than buffer them.
    set_payload_max_length(64 * 1024);
  }

  ~Server() override {
    if (stop_fd_ >= 0) ::close(stop_fd_);
  }

  bool ready(std::string& error) const {
    if (stop_fd_ >= 0) return true;
    error = "cannot create the stop descriptor: " + stop_fd_error_;
    return false;
  }

  // The port of the listening socket, after a bind.
  int bound_port() const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    const socket_t s = svr_sock_;
    if (s == INVALID_SOCKET || ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len) != 0) return 0;
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
    return 0;
  }

  // httplib 0.11 listens with a backlog of 5 (compiled into the library): a burst of
  // more checkers connecting at once than the accepting thread has taken lost SYNs and
  // waited a second for the retransmission. Listening again changes the backlog.
  bool widen_backlog(std::string& error) {
    const socket_t s = svr_sock_;
    if (s != INVALID_SOCKET && ::listen(s, kListenBacklog) == 0) return true;
    error = std::string("cannot listen: ") + std::strerror(errno);
    return false;
  }

  // Wakes every connection (they close) and closes the listening socket, so that
  // listen_after_bind() returns and joins the pool. Unlike httplib::Server::stop() this
  // works before listen_after_bind() has started running, too: it then returns at once.
  void shut_down() {
    if (stop_fd_ >= 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(stop_fd_, &one, sizeof one);
    }
    const socket_t s = svr_sock_.exchange(INVALID_SOCKET);
    if (s != INVALID_SOCKET) close_socket(s);  // wakes accept() with an error
  }

 private:
  // httplib calls this for every accepted socket, on a thread of the pool (or on the
  // accepting thread, refusing, see t_refusing). It must close the socket.
  bool process_and_close_socket(socket_t sock) override {
    if (t_refusing) {
      close_socket(sock);
      return false;
    }
    // Inherited from the listening socket on Linux; set again so as not to depend on it.
    int yes = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    ConnectionStream strm(sock, stop_fd_);
    bool ok = false;
    const std::size_t max_requests = std::max<std::size_t>(1, limits_.keep_alive_max_requests);
    for (std::size_t served = 0; served < max_requests; ++served) {
      if (!strm.wait_for_request(limits_.keep_alive_idle)) break;
      strm.set_deadline(Clock::now() + limits_.request_timeout);
      bool connection_closed = false;
      const bool last = served + 1 == max_requests;  // answers with "Connection: close"
      ok = process_request(strm, last, connection_closed, nullptr);
      if (!ok || connection_closed || strm.broken()) break;
    }
    close_socket(sock);
    return ok;
  }

  static constexpr int kListenBacklog = 128;

  const EndpointLimits limits_;
  int stop_fd_ = -1;
  std::string stop_fd_error_;
};

RoleEndpoints::RoleEndpoints(std::function<RoleView()> view, std::function<std::string()> metrics,
                             EndpointLimits limits)
    : view_(std::move(view)), metrics_(std::move(metrics)), limits_(limits) {}

RoleEndpoints::~RoleEndpoints() { stop(); }

bool RoleEndpoints::start(const std::string& host, int port, std::string& error) {
  if (server_) {
    error = "the role endpoints are already serving";
    return false;
  }
  server_ = std::make_unique<Server>(limits_);
  if (!server_->ready(error)) {
    server_.reset();
    return false;
  }

  auto answer = [](httplib::Response& res, bool ok, const char* yes, const char* no) {
    res.status = ok ? 200 : 503;
    res.set_content(ok ? yes : no, "text/plain");
  };
  server_->Get("/master", [this, answer](const httplib::Request&, httplib::Response& res) {
    answer(res, view_().master, "master\n", "not master\n");
  });
  server_->Get("/standby", [this, answer](const httplib::Request&, httplib::Response& res) {
    answer(res, view_().connected_standby, "standby\n", "not a connected standby\n");
  });
  server_->Get("/health", [this, answer](const httplib::Request&, httplib::Response& res) {
    answer(res, view_().healthy, "healthy\n", "no database round trip within ttl\n");
  });
  server_->Get("/status", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(status_json(view_()), "application/json");
  });

  server_->Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    res.status = 200;
    res.set_content(metrics_(), "text/plain; version=0.0.4");
  });

  if (!server_->bind_to_port(host, port)) {
    error = "cannot listen on " + host + ":" + std::to_string(port) +
            " (address in use or not available)";
    server_.reset();
    return false;
  }
  if (!server_->widen_backlog(error)) {
    server_.reset();
    return false;
  }
  port_ = server_->bound_port();
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return true;
}

void RoleEndpoints::stop() {
  if (server_) server_->shut_down();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace lease_agent
