// The fault proxy against an in-test echo server. Every wait is bounded and waits for
// an event (poll() on a socket, or a counter reaching a value), never a fixed sleep;
// only the "nothing arrives" checks wait for a fixed time, by nature.
#include "fault_proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace lease_agent_fault;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using Mode = FaultProxy::Mode;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kSilence{300};  // how long "nothing arrives" is checked for
constexpr milliseconds kPrompt{3000};  // bound on waits for something that must happen

int listen_loopback(int& port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::listen(fd, 16) != 0 || ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    throw std::runtime_error(std::string("echo server: ") + std::strerror(errno));
  }
  port = ntohs(addr.sin_port);
  return fd;
}

// The upstream: echoes every byte back on its connection, counts the bytes received, and
// pushes bytes of its own to every connection on request. Its sends block (with a 5 s
// bound): the tests only send what the proxy will take.
class EchoServer {
 public:
  EchoServer() : listen_(listen_loopback(port_)), wake_(::eventfd(0, EFD_CLOEXEC)) {
    thread_ = std::thread([this] { run(); });
  }
  ~EchoServer() {
    stop_ = true;
    poke();
    thread_.join();
    ::close(listen_);
    ::close(wake_);
  }
  int port() const { return port_; }
  std::size_t received() const { return received_.load(); }
  void push(const std::string& bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    pushes_.push_back(bytes);
    poke();
  }

 private:
  void poke() {
    std::uint64_t one = 1;
    (void)!::write(wake_, &one, sizeof one);
  }
  static void send_all(int fd, const char* p, std::size_t n) {
    while (n > 0) {
      ssize_t w = ::send(fd, p, n, MSG_NOSIGNAL);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return;  // the connection is broken; its next recv() says so
      p += w;
      n -= static_cast<std::size_t>(w);
    }
  }
  void run() {
    std::vector<int> clients;
    std::vector<char> buf(64 * 1024);
    while (!stop_) {
      std::vector<pollfd> fds{{wake_, POLLIN, 0}, {listen_, POLLIN, 0}};
      for (int c : clients) fds.push_back({c, POLLIN, 0});
      if (::poll(fds.data(), fds.size(), -1) < 0) continue;  // EINTR
      if (fds[0].revents) {
        std::uint64_t count;
        (void)!::read(wake_, &count, sizeof count);
        std::vector<std::string> pushes;
        {
          std::lock_guard<std::mutex> lock(mutex_);
          pushes.swap(pushes_);
        }
        for (const auto& p : pushes) {
          for (int c : clients) send_all(c, p.data(), p.size());
        }
      }
      for (std::size_t i = 0; i < clients.size(); ++i) {
        if (!fds[2 + i].revents) continue;
        ssize_t n = ::recv(clients[i], buf.data(), buf.size(), 0);
        if (n > 0) {
          received_ += static_cast<std::size_t>(n);
          send_all(clients[i], buf.data(), static_cast<std::size_t>(n));
        } else if (n == 0 || errno != EINTR) {
          ::close(clients[i]);
          clients[i] = -1;
        }
      }
      clients.erase(std::remove(clients.begin(), clients.end(), -1), clients.end());
      if (fds[1].revents) {
        int c = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
        if (c >= 0) {
          timeval limit{5, 0};
          ::setsockopt(c, SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
          clients.push_back(c);
        }
      }
    }
    for (int c : clients) ::close(c);
  }

  int port_ = 0;
  int listen_;
  int wake_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> received_{0};
  std::mutex mutex_;
  std::vector<std::string> pushes_;
  std::thread thread_;
};

// A client connection to the proxy, closed on scope exit.
struct Client {
  explicit Client(int port) : fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    if (fd < 0 || ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      throw std::runtime_error(std::string("connect: ") + std::strerror(errno));
    }
  }
  ~Client() { close(); }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  void close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
  int fd;
};

// Sends `payload` while reading what comes back, until `expect` bytes have come back,
// the connection ends, or `timeout` has passed. Returns the bytes that came back.
std::string exchange(int fd, const std::string& payload, std::size_t expect,
                     milliseconds timeout = kPrompt) {
  const auto deadline = Clock::now() + timeout;
  std::size_t sent = 0;
  std::string got;
  char buf[64 * 1024];
  while (got.size() < expect || sent < payload.size()) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, static_cast<short>(POLLIN | (sent < payload.size() ? POLLOUT : 0)), 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    if ((p.revents & POLLOUT) && sent < payload.size()) {
      ssize_t n = ::send(fd, payload.data() + sent, payload.size() - sent,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) sent += static_cast<std::size_t>(n);
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
      if (n > 0) got.append(buf, static_cast<std::size_t>(n));
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) break;
    }
  }
  return got;
}

enum class Outcome { data, eof, reset, silence };

const char* name(Outcome o) {
  switch (o) {
    case Outcome::data: return "data";
    case Outcome::eof: return "eof";
    case Outcome::reset: return "reset";
    case Outcome::silence: return "silence";
  }
  return "?";
}

// What the connection shows first within `timeout`: bytes, EOF, a reset, or nothing.
Outcome next_event(int fd, milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<milliseconds>(deadline - Clock::now());
    pollfd p{fd, POLLIN, 0};
    int n = ::poll(&p, 1, static_cast<int>(std::max<long long>(left.count(), 0)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Outcome::silence;
    char c;
    ssize_t r = ::recv(fd, &c, 1, MSG_DONTWAIT | MSG_PEEK);
    if (r > 0) return Outcome::data;
    if (r == 0) return Outcome::eof;
    if (errno == EAGAIN || errno == EINTR) continue;
    return errno == ECONNRESET ? Outcome::reset : Outcome::eof;
  }
}

// Polls `condition` every 2 ms until it holds or `timeout` has passed.
template <class Condition>
bool eventually(Condition condition, milliseconds timeout = kPrompt) {
  const auto deadline = Clock::now() + timeout;
  while (!condition()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(2ms);
  }
  return true;
}

// A connection through the proxy that has carried one round trip.
bool echoes(int fd, const std::string& text = "ping") {
  return exchange(fd, text, text.size()) == text;
}

}  // namespace

TEST_CASE("to_string names every mode") {
  CHECK(std::string(to_string(Mode::pass)) == "pass");
  CHECK(std::string(to_string(Mode::drop)) == "drop");
  CHECK(std::string(to_string(Mode::reset)) == "reset");
  CHECK(std::string(to_string(Mode::drop_to_server)) == "drop_to_server");
  CHECK(std::string(to_string(Mode::drop_to_client)) == "drop_to_client");
}

TEST_CASE("the constructor throws for an unresolvable upstream") {
  CHECK_THROWS_AS(FaultProxy("no such host.invalid", 5432), std::runtime_error);
}

TEST_CASE("pass forwards both ways") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  CHECK(proxy.mode() == Mode::pass);
  CHECK(proxy.port() > 0);

  Client a(proxy.port()), b(proxy.port());
  CHECK(echoes(a.fd, "hello"));
  CHECK(echoes(b.fd, "world"));
  echo.push("pushed");
  CHECK(exchange(a.fd, "", 6) == "pushed");

  // More than the proxy buffers per direction: partial writes and backpressure.
  std::string big(3 * 1024 * 1024, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  CHECK(exchange(a.fd, big, big.size(), 20s) == big);
}

TEST_CASE("drop is a silent black hole, for open and new connections") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  Client open(proxy.port());
  REQUIRE(echoes(open.fd));

  proxy.set_mode(Mode::drop);
  CHECK(proxy.mode() == Mode::drop);
  const std::size_t before = echo.received();
  CHECK(exchange(open.fd, "lost", 0).empty());  // sent (the proxy keeps reading)
  CHECK(next_event(open.fd, kSilence) == Outcome::silence);  // no answer, no EOF, no RST

  Client fresh(proxy.port());  // the handshake completes, then silence
  CHECK(exchange(fresh.fd, "lost too", 0).empty());
  CHECK(next_event(fresh.fd, kSilence) == Outcome::silence);
  CHECK(eventually([&] { return proxy.open_connections() == 2; }));
  CHECK(echo.received() == before);

  proxy.set_mode(Mode::pass);
  Client after(proxy.port());
  CHECK(echoes(after.fd));
}

TEST_CASE("reset closes open connections with an RST, and new ones while it lasts") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  Client a(proxy.port()), b(proxy.port());
  REQUIRE(echoes(a.fd));
  REQUIRE(echoes(b.fd));

  proxy.set_mode(Mode::reset);
  Outcome oa = next_event(a.fd, kPrompt), ob = next_event(b.fd, kPrompt);
  INFO("a: " << name(oa) << ", b: " << name(ob));
  CHECK(oa == Outcome::reset);
  CHECK(ob == Outcome::reset);
  CHECK(eventually([&] { return proxy.open_connections() == 0; }));

  Client during(proxy.port());
  Outcome od = next_event(during.fd, kPrompt);
  INFO("during: " << name(od));
  CHECK(od == Outcome::reset);

  proxy.set_mode(Mode::pass);
  Client after(proxy.port());
  CHECK(echoes(after.fd));
}

// Regression: the proxy read the mode once per batch of accepts, so a client that saw its
// connection reset, left reset mode and connected again while the batch ran was reset too
// (1 run in 300 under load; seen in CI). Many rounds make the window likely to be hit.
TEST_CASE("a connection made after reset ends passes, however soon") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  constexpr int kRounds = 100;
  int passed = 0;
  for (int i = 0; i < kRounds; ++i) {
    proxy.set_mode(Mode::reset);
    Client during(proxy.port());
    REQUIRE(next_event(during.fd, kPrompt) == Outcome::reset);
    proxy.set_mode(Mode::pass);
    Client after(proxy.port());
    if (echoes(after.fd)) ++passed;
  }
  CHECK(passed == kRounds);
}

TEST_CASE("a reset undone at once still resets the open connections") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  Client a(proxy.port());
  REQUIRE(echoes(a.fd));
  proxy.set_mode(Mode::reset);
  proxy.set_mode(Mode::pass);
  CHECK(next_event(a.fd, kPrompt) == Outcome::reset);
}

TEST_CASE("drop_to_server loses client-to-server bytes only") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  Client c(proxy.port());
  REQUIRE(echoes(c.fd));
  const std::size_t before = echo.received();

  proxy.set_mode(Mode::drop_to_server);
  CHECK(exchange(c.fd, "lost", 0).empty());
  CHECK(next_event(c.fd, kSilence) == Outcome::silence);
  CHECK(echo.received() == before);

  echo.push("still here");  // server to client passes
  CHECK(exchange(c.fd, "", 10) == "still here");
}

TEST_CASE("drop_to_client loses server-to-client bytes only") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  Client c(proxy.port());
  REQUIRE(echoes(c.fd));
  const std::size_t before = echo.received();

  proxy.set_mode(Mode::drop_to_client);
  CHECK(exchange(c.fd, "arrives", 0).empty());
  CHECK(eventually([&] { return echo.received() == before + 7; }));  // and is echoed
  CHECK(next_event(c.fd, kSilence) == Outcome::silence);
  CHECK(proxy.open_connections() == 1);
}

TEST_CASE("latency delays every chunk in both directions, in order") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  Client c(proxy.port());
  REQUIRE(echoes(c.fd));

  proxy.set_latency(200ms);
  auto start = Clock::now();
  REQUIRE(echoes(c.fd));
  // A lower bound by construction: 200 ms to the server, 200 ms back.
  CHECK(Clock::now() - start >= 400ms);

  // Chunks sent apart, and a latency change between them, keep their order.
  std::string got = exchange(c.fd, "one,", 0);
  proxy.set_latency(0ms);
  got += exchange(c.fd, "two,", 0);
  got += exchange(c.fd, "three", 13);
  CHECK(got == "one,two,three");
}

TEST_CASE("open_connections follows connections as they open and close") {
  EchoServer echo;
  FaultProxy proxy("127.0.0.1", echo.port());
  CHECK(proxy.open_connections() == 0);
  Client a(proxy.port());
  CHECK(eventually([&] { return proxy.open_connections() == 1; }));
  {
    Client b(proxy.port());
    CHECK(eventually([&] { return proxy.open_connections() == 2; }));
    REQUIRE(echoes(b.fd));
  }
  CHECK(eventually([&] { return proxy.open_connections() == 1; }));

  // A half-close is passed on: the server's EOF comes back after the echo.
  REQUIRE(echoes(a.fd));
  ::shutdown(a.fd, SHUT_WR);
  CHECK(next_event(a.fd, kPrompt) == Outcome::eof);
  CHECK(eventually([&] { return proxy.open_connections() == 0; }));
}

TEST_CASE("the destructor returns with connections open, and closes them") {
  EchoServer echo;
  auto proxy = std::make_unique<FaultProxy>("127.0.0.1", echo.port());
  proxy->set_latency(100ms);  // with chunks still queued, too
  Client a(proxy->port()), b(proxy->port());
  REQUIRE(echoes(a.fd));
  CHECK(exchange(b.fd, "queued", 0).empty());
  CHECK(eventually([&] { return proxy->open_connections() == 2; }));
  proxy.reset();
  Outcome oa = next_event(a.fd, kPrompt), ob = next_event(b.fd, kPrompt);
  INFO("a: " << name(oa) << ", b: " << name(ob));
  CHECK((oa == Outcome::eof || oa == Outcome::reset));
  CHECK((ob == Outcome::eof || ob == Outcome::reset));
}
