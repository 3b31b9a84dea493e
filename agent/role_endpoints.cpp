// The role endpoints: a small HTTP/1.1 server of their own. GET and HEAD answer alike.
//
// Why not a library: the endpoints are five fixed GET paths with tiny answers, and
// what matters is how connections are held, which no library here does right:
//
//  - Memory. Debian's cpp-httplib is a shared library built with OpenSSL, zlib and
//    brotli, and its load-time constructor runs OPENSSL_init_ssl (error strings, the
//    configuration file): 1.6 MB of every agent's resident memory, and ~0.7 MB more for
//    the library and what it loads (pmap -x of an idle agent), for a server that never
//    speaks TLS. With this file the agent does not load it at all (CMakeLists.txt,
//    --as-needed); only the tests' and the benchmark's HTTP clients still use it.
//  - Connections. In httplib 0.11 a worker thread stays with a kept-alive connection
//    until the client closes it or the keep-alive timeout passes, and its ThreadPool has
//    a fixed size. Load balancers and monitoring keep connections open, so a few of them
//    took every thread and the next health check timed out, which a load balancer reads
//    as "master down". So here ConnectionPool makes one thread per open connection on
//    demand, up to EndpointLimits::max_connections, and lets idle ones exit. At the cap
//    a new connection is closed at once instead of waiting behind the others: a quick
//    failure beats a hang for every checker.
//  - Stop and slow clients. Each wait polls the socket together with a stop
//    descriptor, so stop() closes idle kept-alive connections at once instead of after
//    their timeout; an idle connection is closed after keep_alive_idle and a request
//    has request_timeout in all to arrive and be answered, so no client holds a thread
//    for long.
//
// What is served: a request line and headers (RFC 9112), in the origin or absolute
// form, any query ignored; a body announced by Content-Length (up to 64 KiB) is read and
// dropped. HTTP/1.1 keeps the connection alive unless "Connection: close"; HTTP/1.0
// closes unless "Connection: keep-alive". A method other than GET and HEAD answers 405,
// an unknown path 404, a malformed request 400 (then the connection is closed).
#include "role_endpoints.h"

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
#include <condition_variable>
#include <cstring>
#include <deque>
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

// The bounds of one request: longer heads are refused (health checks send a line and
// a few headers), bigger bodies too.
constexpr std::size_t kMaxHeadBytes = 16 * 1024;
constexpr std::size_t kMaxHeaders = 100;
constexpr std::size_t kMaxBodyBytes = 64 * 1024;
constexpr int kListenBacklog = 128;  // a burst of checkers connecting at once waits no SYN retransmission

void close_socket(int sock) {
  ::shutdown(sock, SHUT_RDWR);
  ::close(sock);
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  return s;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return {};
  const auto e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

// True if the comma-separated header value `value` holds the token `token` (lower case).
bool has_token(const std::string& value, const char* token) {
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = value.find(',', start);
    if (lower(trim(value.substr(start, comma == std::string::npos ? std::string::npos : comma - start))) == token)
      return true;
    if (comma == std::string::npos) return false;
    start = comma + 1;
  }
}

const char* reason_phrase(int status) {
  switch (status) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Payload Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
  }
  return "Unknown";
}

// Threads on demand, up to `max_threads`; a thread idle for `linger` exits unless it is
// one of the `warm` first. Each accepted connection is one job that runs until the
// connection is closed; so "all threads busy" means "max_threads connections open", and
// then enqueue() refuses the new connection.
class ConnectionPool {
 public:
  using Serve = std::function<void(int sock)>;  // serves a connection and closes it

  ConnectionPool(std::size_t max_threads, std::size_t warm, std::chrono::milliseconds linger, Serve serve)
      : max_threads_(std::max<std::size_t>(1, max_threads)), warm_(warm), linger_(linger), serve_(std::move(serve)) {}

  ~ConnectionPool() { shutdown(); }

  // Called by the accepting thread only. False: refused (the pool is at its cap, or
  // shutting down); the caller closes the socket.
  bool enqueue(int sock) {
    std::vector<std::thread> exited;
    bool refuse = false;
    bool first_refusal = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      exited.swap(exited_);
      if (shutdown_) {
        refuse = true;
      } else if (jobs_.size() < idle_) {  // an idle thread will take it
        jobs_.push_back(sock);
        wake_.notify_one();
      } else if (threads_.size() < max_threads_) {
        jobs_.push_back(sock);
        if (!spawn()) {
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
    return !refuse;
  }

  // Serves the queued connections (they see the stop and close at once), then joins.
  void shutdown() {
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
      const bool woken = wake_.wait_for(lock, linger_, [&] { return shutdown_ || !jobs_.empty(); });
      --idle_;
      if (!jobs_.empty()) {  // even when shutting down: every accepted socket gets closed
        const int sock = jobs_.front();
        jobs_.pop_front();
        lock.unlock();
        serve_(sock);
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
  const Serve serve_;

  std::mutex mutex_;
  std::condition_variable wake_;  // a job or the shutdown
  std::condition_variable gone_;  // a thread has left
  Threads threads_;               // running (busy or idle)
  std::vector<std::thread> exited_;
  std::deque<int> jobs_;          // accepted sockets not yet taken by a thread
  std::size_t idle_ = 0;          // threads waiting for a job
  bool shutdown_ = false;
  bool refusing_ = false;         // the warning is logged once per busy spell
};

// One connection: a buffered reader and a writer that wait at most until the current
// request's deadline, and never once stop() is called unless the socket is ready at
// once.
class ConnectionStream {
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
  void set_deadline(Clock::time_point deadline) { deadline_ = deadline; }

  enum class Line { ok, closed, too_long };
  // One line ending in LF (a CR before it is dropped), into `line`. `limit` bounds the
  // bytes read; `closed` also stands for a timeout, a stop or an error.
  Line read_line(std::string& line, std::size_t limit) {
    line.clear();
    for (;;) {
      if (buffered() == 0 && !fill()) return Line::closed;
      const char* start = buf_ + off_;
      const void* lf = std::memchr(start, '\n', buffered());
      const std::size_t take = lf ? static_cast<const char*>(lf) - start + 1 : buffered();
      if (line.size() + take > limit) return Line::too_long;
      line.append(start, take);
      off_ += take;
      if (lf) {
        line.pop_back();
        if (!line.empty() && line.back() == '\r') line.pop_back();
        return Line::ok;
      }
    }
  }

  // Reads and drops `n` bytes. False if they did not come in time.
  bool skip(std::size_t n) {
    while (n > 0) {
      if (buffered() == 0 && !fill()) return false;
      const std::size_t k = std::min(n, buffered());
      off_ += k;
      n -= k;
    }
    return true;
  }

  // Writes all of `data`. False if it could not be written in time.
  bool write_all(const std::string& data) {
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
      if (!wait(POLLOUT)) return false;
      const ssize_t n = ::send(sock_, p, left, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        p += n;
        left -= static_cast<std::size_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
        return false;
      }
    }
    return true;
  }

 private:
  std::size_t buffered() const { return len_ - off_; }

  // Reads what the socket has into the empty buffer. False at the peer's close, on
  // timeout, on stop or on an error.
  bool fill() {
    for (;;) {
      if (!wait(POLLIN)) return false;
      const ssize_t n = ::recv(sock_, buf_, sizeof buf_, MSG_DONTWAIT);
      if (n > 0) {
        off_ = 0;
        len_ = static_cast<std::size_t>(n);
        return true;
      }
      if (n == 0) return false;  // the peer closed
      if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) return false;
    }
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
    // POLLHUP with POLLIN: recv() will see the end of the stream.
    return (p[0].revents & (events | POLLHUP)) != 0;
  }

  const int sock_;
  const int stop_fd_;
  Clock::time_point deadline_ = Clock::now();
  char buf_[4096];
  std::size_t off_ = 0;
  std::size_t len_ = 0;
};

// One request's head, as far as the endpoints care.
struct Request {
  std::string method;
  std::string path;  // without the query
  bool http10 = false;
  bool keep_alive = true;
  std::size_t content_length = 0;
  bool chunked = false;  // a Transfer-Encoding body: not read, the connection is closed after
};

enum class ReadResult { ok, closed, bad, too_large, bad_version };

// Reads a request line and its headers.
ReadResult read_request(ConnectionStream& strm, Request& req) {
  std::string line;
  std::size_t budget = kMaxHeadBytes;
  ConnectionStream::Line got;
  // RFC 9112 2.2: empty lines before a request line are ignored.
  do {
    got = strm.read_line(line, budget);
    if (got == ConnectionStream::Line::too_long) return ReadResult::too_large;
    if (got == ConnectionStream::Line::closed) return ReadResult::closed;
    budget -= std::min(budget, line.size() + 2);
  } while (line.empty() && budget > 0);

  const auto sp1 = line.find(' ');
  const auto sp2 = sp1 == std::string::npos ? std::string::npos : line.find(' ', sp1 + 1);
  if (sp1 == 0 || sp2 == std::string::npos || line.find(' ', sp2 + 1) != std::string::npos) return ReadResult::bad;
  req.method = line.substr(0, sp1);
  std::string target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  const std::string version = line.substr(sp2 + 1);
  if (version.rfind("HTTP/", 0) != 0) return ReadResult::bad;
  if (version == "HTTP/1.0") {
    req.http10 = true;
    req.keep_alive = false;
  } else if (version != "HTTP/1.1") {
    return ReadResult::bad_version;
  }
  if (target.rfind("http://", 0) == 0 || target.rfind("https://", 0) == 0) {  // absolute form
    const auto slash = target.find('/', target.find("//") + 2);
    target = slash == std::string::npos ? "/" : target.substr(slash);
  }
  if (target.empty() || target[0] != '/') return ReadResult::bad;
  req.path = target.substr(0, target.find_first_of("?#"));

  for (std::size_t headers = 0;; ++headers) {
    got = strm.read_line(line, budget);
    if (got == ConnectionStream::Line::too_long) return ReadResult::too_large;
    if (got == ConnectionStream::Line::closed) return ReadResult::closed;
    budget -= std::min(budget, line.size() + 2);
    if (line.empty()) break;
    if (headers == kMaxHeaders) return ReadResult::too_large;
    const auto colon = line.find(':');
    if (colon == std::string::npos || colon == 0 || line[0] == ' ' || line[0] == '\t') return ReadResult::bad;
    const std::string name = lower(line.substr(0, colon));
    if (name.find_first_of(" \t") != std::string::npos) return ReadResult::bad;
    const std::string value = trim(line.substr(colon + 1));
    if (name == "connection") {
      if (has_token(value, "close")) req.keep_alive = false;
      else if (has_token(value, "keep-alive")) req.keep_alive = true;
    } else if (name == "content-length") {
      if (value.empty() || value.find_first_not_of("0123456789") != std::string::npos || value.size() > 9)
        return ReadResult::bad;
      req.content_length = std::stoul(value);
    } else if (name == "transfer-encoding") {
      req.chunked = true;
    }
  }
  return ReadResult::ok;
}

}  // namespace

class RoleEndpoints::Server {
 public:
  // Answers a GET of `path`: sets status, body and content type (404 by default).
  using Handler = std::function<void(const std::string& path, int& status, std::string& body,
                                     const char*& content_type)>;

  Server(const EndpointLimits& limits, Handler handler)
      : limits_(limits),
        handler_(std::move(handler)),
        pool_(limits.max_connections, limits.warm_threads, limits.idle_thread_linger,
              [this](int sock) { serve(sock); }) {
    // Level-triggered and never reset: once written, every poll of every connection
    // returns at once.
    stop_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (stop_fd_ < 0) stop_fd_error_ = std::strerror(errno);
  }

  // REQUIRES: accept_loop() is not running (it has returned, or never started).
  ~Server() {
    shut_down();
    pool_.shutdown();  // before the descriptors its threads poll are closed
    if (listen_fd_ >= 0) ::close(listen_fd_);
    if (stop_fd_ >= 0) ::close(stop_fd_);
  }

  bool ready(std::string& error) const {
    if (stop_fd_ >= 0) return true;
    error = "cannot create the stop descriptor: " + stop_fd_error_;
    return false;
  }

  // Binds HOST:PORT and listens. On failure returns false and sets `error`.
  bool listen(const std::string& host, int port, std::string& error) {
    const std::string where = "cannot listen on " + host + ":" + std::to_string(port);
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    const int rc = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), std::to_string(port).c_str(), &hints, &found);
    if (rc != 0) {
      error = where + " (" + ::gai_strerror(rc) + ")";
      return false;
    }
    int last_errno = 0;
    for (const addrinfo* a = found; a != nullptr && listen_fd_ < 0; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        last_errno = errno;
        continue;
      }
      // SO_REUSEADDR only: a restart may bind while old connections linger in TIME_WAIT,
      // but a port another process listens on is refused (no SO_REUSEPORT: a second
      // agent given the same port would bind too, and the kernel would share the checks
      // between the two).
      int yes = 1;
      int no = 0;
      ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
      if (a->ai_family == AF_INET6) ::setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof no);
      if (::bind(fd, a->ai_addr, a->ai_addrlen) == 0 && ::listen(fd, kListenBacklog) == 0) {
        listen_fd_ = fd;
      } else {
        last_errno = errno;
        ::close(fd);
      }
    }
    ::freeaddrinfo(found);
    if (listen_fd_ < 0) {
      error = where + " (address in use or not available: " + std::strerror(last_errno) + ")";
      return false;
    }
    return true;
  }

  // The port of the listening socket, after listen().
  int bound_port() const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    if (listen_fd_ < 0 || ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len) != 0) return 0;
    if (a.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&a)->sin_port);
    if (a.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&a)->sin6_port);
    return 0;
  }

  // The accepting thread: accepts connections until shut_down(), then closes every
  // connection and joins their threads.
  void accept_loop() {
    for (;;) {
      pollfd p[2] = {{listen_fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      const int n = ::poll(p, 2, -1);
      if (n < 0 && errno != EINTR) break;
      if (p[1].revents & POLLIN) break;
      if (n <= 0 || !(p[0].revents & POLLIN)) continue;
      const int sock = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (sock < 0) {
        if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
          // Out of descriptors or memory: the connection waits in the backlog; retry a
          // little later instead of spinning on the ready listening socket.
          pollfd s{stop_fd_, POLLIN, 0};
          ::poll(&s, 1, 10);
        }
        continue;  // EINTR, ECONNABORTED, EAGAIN...: the next one
      }
      if (!pool_.enqueue(sock)) close_socket(sock);  // at the cap: closed at once, unread
    }
    pool_.shutdown();
  }

  // Wakes every connection (they close) and the accepting thread (it returns after
  // joining them). Before accept_loop() has started, too: it then returns at once.
  void shut_down() {
    if (stop_fd_ >= 0) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const ssize_t n = ::write(stop_fd_, &one, sizeof one);
    }
  }

 private:
  // Serves one connection on a thread of the pool, request after request, and closes it.
  void serve(int sock) {
    // Without TCP_NODELAY a kept-alive checker can wait ~40 ms for an answer (Nagle +
    // delayed ACK).
    int yes = 1;
    ::setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    ConnectionStream strm(sock, stop_fd_);
    const std::size_t max_requests = std::max<std::size_t>(1, limits_.keep_alive_max_requests);
    for (std::size_t served = 0; served < max_requests; ++served) {
      if (!strm.wait_for_request(limits_.keep_alive_idle)) break;
      strm.set_deadline(Clock::now() + limits_.request_timeout);
      Request req;
      const ReadResult r = read_request(strm, req);
      if (r == ReadResult::closed) break;  // timed out, stopped, or the peer left
      if (r != ReadResult::ok) {
        answer_and_close(strm, r == ReadResult::too_large ? 431 : r == ReadResult::bad_version ? 505 : 400);
        break;
      }
      if (req.content_length > kMaxBodyBytes) {
        answer_and_close(strm, 413);
        break;
      }
      // A body is read and dropped, to keep the stream in step; a chunked one is not
      // read, and the connection closes after the answer.
      if (req.content_length > 0 && !strm.skip(req.content_length)) break;
      bool keep_alive = req.keep_alive && !req.chunked && served + 1 < max_requests;
      int status = 404;
      std::string body;
      const char* content_type = "text/plain";
      if (req.method != "GET" && req.method != "HEAD") {
        status = 405;
      } else {
        try {
          handler_(req.path, status, body, content_type);
        } catch (...) {  // the view or the metrics failed: say so, never a half answer
          status = 500;
          body.clear();
          content_type = "text/plain";
          keep_alive = false;
        }
      }
      if (!answer(strm, status, content_type, keep_alive, max_requests - served - 1, body,
                  req.method == "HEAD") ||
          !keep_alive)
        break;
    }
    close_socket(sock);
  }

  // Writes one answer in one write: status line, headers and (unless `head_only`,
  // which still announces its length) the body. False if it could not be written.
  bool answer(ConnectionStream& strm, int status, const char* content_type, bool keep_alive,
              std::size_t requests_left, const std::string& body, bool head_only = false) {
    std::string out = "HTTP/1.1 " + std::to_string(status) + " " + reason_phrase(status) + "\r\n";
    out += "Content-Type: ";
    out += content_type;
    out += "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
    if (status == 405) out += "Allow: GET, HEAD\r\n";
    if (keep_alive) {
      // Advertise no longer than we keep, so clients close first.
      const auto idle_s = std::max<long long>(
          1, std::chrono::duration_cast<std::chrono::seconds>(limits_.keep_alive_idle).count());
      out += "Connection: keep-alive\r\nKeep-Alive: timeout=" + std::to_string(idle_s) +
             ", max=" + std::to_string(requests_left) + "\r\n";
    } else {
      out += "Connection: close\r\n";
    }
    out += "\r\n";
    if (!head_only) out += body;
    return strm.write_all(out);
  }
  // An error answer, with "Connection: close"; the caller closes.
  void answer_and_close(ConnectionStream& strm, int status) {
    answer(strm, status, "text/plain", /*keep_alive=*/false, 0, std::string());
  }

  const EndpointLimits limits_;
  const Handler handler_;
  int stop_fd_ = -1;
  std::string stop_fd_error_;
  int listen_fd_ = -1;
  ConnectionPool pool_;  // last: its threads use the members above
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
  // Every answer asks the view afresh: /master is judged at the moment of the request.
  auto route = [this](const std::string& path, int& status, std::string& body, const char*& content_type) {
    auto yes_no = [&](bool ok, const char* yes, const char* no) {
      status = ok ? 200 : 503;
      body = ok ? yes : no;
    };
    if (path == "/master") {
      yes_no(view_().master, "master\n", "not master\n");
    } else if (path == "/standby") {
      yes_no(view_().connected_standby, "standby\n", "not a connected standby\n");
    } else if (path == "/health") {
      yes_no(view_().healthy, "healthy\n", "no database round trip within ttl\n");
    } else if (path == "/status") {
      status = 200;
      body = status_json(view_());
      content_type = "application/json";
    } else if (path == "/metrics") {
      status = 200;
      body = metrics_();
      content_type = "text/plain; version=0.0.4";
    }
  };
  server_ = std::make_unique<Server>(limits_, route);
  if (!server_->ready(error) || !server_->listen(host, port, error)) {
    server_.reset();
    return false;
  }
  port_ = server_->bound_port();
  try {
    thread_ = std::thread([this] { server_->accept_loop(); });
  } catch (const std::system_error& e) {
    server_.reset();
    error = std::string("cannot start the accepting thread: ") + e.what();
    return false;
  }
  return true;
}

void RoleEndpoints::stop() {
  if (server_) server_->shut_down();
  if (thread_.joinable()) thread_.join();
  server_.reset();
}

}  // namespace lease_agent
