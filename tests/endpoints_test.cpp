// Tests of RoleEndpoints (agent/role_endpoints): the answers of every endpoint, and the
// connection handling: kept-alive connections do not starve a new checker, the number of
// connections served at once is bounded and the next one is closed at once, idle and slow
// connections are closed, idle threads exit, and stop() is prompt with connections open.
//
// No sleeps as synchronisation: a kept-alive connection is "parked" (holds its thread)
// once its answer has been read. Every wait has a generous limit that only guards
// against a hang; no test asserts a duration.
#include "role_endpoints.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <httplib.h>

#include <catch2/catch.hpp>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

using lease_agent::EndpointLimits;
using lease_agent::RoleEndpoints;
using lease_agent::RoleView;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// Hang guards only (see the top of the file).
constexpr auto kGuard = 5s;
constexpr auto kStopGuard = 10s;

// A view the test sets; the endpoints ask it at every request.
class FakeAgent {
 public:
  void set(const RoleView& v) {
    std::lock_guard<std::mutex> lock(mutex_);
    view_ = v;
  }
  RoleView view() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return view_;
  }

 private:
  mutable std::mutex mutex_;
  RoleView view_;
};

RoleView master_view() {
  RoleView v;
  v.master = true;
  v.healthy = true;
  v.role = "master";
  v.cluster = "c1";
  v.node = "n1";
  v.address = "10.0.0.1:8080";
  v.epoch = 7;
  v.master_node = "n1";
  v.master_address = "10.0.0.1:8080";
  v.lease_left_ms = 1500;
  v.last_round_trip_ago_ms = 12;
  v.last_round_trip_latency_ms = 3;
  v.may_acquire = true;
  return v;
}

RoleView standby_view() {
  RoleView v;
  v.connected_standby = true;
  v.healthy = true;
  v.role = "standby";
  v.cluster = "c1";
  v.node = "n2";
  v.address = "10.0.0.2:8080";
  v.epoch = 7;
  v.master_node = "n1";
  v.master_address = "10.0.0.1:8080";
  v.lease_left_ms = 0;
  v.last_round_trip_ago_ms = 20;
  v.last_round_trip_latency_ms = 4;
  return v;
}

// RoleEndpoints on 127.0.0.1, any free port, with the fake view.
struct Served {
  explicit Served(EndpointLimits limits = {})
      : endpoints([this] { return agent.view(); }, [] { return std::string("lease_agent_up 1\n"); },
                  limits) {
    agent.set(master_view());
    std::string error;
    REQUIRE(endpoints.start("127.0.0.1", 0, error));
    REQUIRE(error.empty());
    REQUIRE(endpoints.port() > 0);
  }

  std::unique_ptr<httplib::Client> client() const {
    auto c = std::make_unique<httplib::Client>("127.0.0.1", endpoints.port());
    c->set_connection_timeout(5, 0);
    c->set_read_timeout(5, 0);
    c->set_write_timeout(5, 0);
    return c;
  }

  // The status of a GET on a fresh connection; -1 when none came.
  int get(const std::string& path) const {
    auto r = client()->Get(path.c_str());
    return r ? r->status : -1;
  }

  FakeAgent agent;
  RoleEndpoints endpoints;
};

// A raw TCP connection, to hold it open as a kept-alive checker does.
class RawConnection {
 public:
  explicit RawConnection(int port) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
  }
  ~RawConnection() { close(); }
  RawConnection(const RawConnection&) = delete;
  RawConnection& operator=(const RawConnection&) = delete;

  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  // Sends `text`; false if the server has closed already (the refusal test).
  bool send(const std::string& text) {
    return ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(text.size());
  }
  bool send_get(const std::string& path) {
    return send("GET " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n");
  }

  struct Answer {
    int status = -1;        // -1: the connection closed (or the guard passed) without an answer
    bool keep_alive = false;
    std::string body;
  };

  // Reads one whole answer (headers and Content-Length body), at most until the guard.
  Answer read_answer() {
    Answer a;
    const auto deadline = Clock::now() + kGuard;
    std::size_t header_end;
    while ((header_end = got_.find("\r\n\r\n")) == std::string::npos)
      if (!fill(deadline)) return a;
    const std::string head = got_.substr(0, header_end + 2);
    std::string lower = head;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    std::size_t length = 0;
    const auto cl = lower.find("\r\ncontent-length:");
    if (cl != std::string::npos) length = std::strtoul(head.c_str() + cl + 17, nullptr, 10);
    while (got_.size() < header_end + 4 + length)
      if (!fill(deadline)) return a;
    const auto sp = head.find(' ');
    a.status = sp == std::string::npos ? -1 : std::atoi(head.c_str() + sp + 1);
    a.keep_alive = lower.find("\r\nconnection: close\r\n") == std::string::npos;
    a.body = got_.substr(header_end + 4, length);
    got_.erase(0, header_end + 4 + length);
    return a;
  }

  // True when the server closes the connection (EOF or reset) before the guard. What
  // came before the close is left in unread().
  bool closed_by_server() {
    const auto deadline = Clock::now() + kGuard;
    while (fill(deadline)) {
    }
    return eof_;
  }
  const std::string& unread() const { return got_; }

 private:
  // Reads what is there, waiting at most until `deadline`. False at EOF, on error or
  // when the deadline passed.
  bool fill(Clock::time_point deadline) {
    for (;;) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return false;
      pollfd p{fd_, POLLIN, 0};
      const int n = ::poll(&p, 1, static_cast<int>(left));
      if (n < 0 && errno != EINTR) return false;
      if (n <= 0) continue;
      char buf[4096];
      const ssize_t k = ::recv(fd_, buf, sizeof buf, 0);
      if (k > 0) {
        got_.append(buf, static_cast<std::size_t>(k));
        return true;
      }
      if (k < 0 && errno == EINTR) continue;
      eof_ = true;  // 0: EOF; < 0: reset
      return false;
    }
  }

  int fd_ = -1;
  std::string got_;
  bool eof_ = false;
};

// `n` connections that each got one answer and stay open, idle: each holds a thread.
std::vector<std::unique_ptr<RawConnection>> park(int port, int n) {
  std::vector<std::unique_ptr<RawConnection>> conns;
  for (int i = 0; i < n; ++i) {
    conns.push_back(std::make_unique<RawConnection>(port));
    REQUIRE(conns.back()->send_get("/master"));
  }
  for (auto& c : conns) {
    const RawConnection::Answer a = c->read_answer();
    REQUIRE(a.status == 200);
    REQUIRE(a.keep_alive);
  }
  return conns;
}

// Calls stop() on another thread; true if it returned within the guard. (If it hangs,
// the test fails, and the process then hangs in the future's destructor: a hang guard,
// not a recovery.)
bool stops_promptly(RoleEndpoints& endpoints) {
  auto done = std::async(std::launch::async, [&] { endpoints.stop(); });
  return done.wait_for(kStopGuard) == std::future_status::ready;
}

// The threads of this process now.
int thread_count() {
  int n = 0;
  DIR* d = ::opendir("/proc/self/task");
  if (!d) return -1;
  while (dirent* e = ::readdir(d))
    if (e->d_name[0] != '.') ++n;
  ::closedir(d);
  return n;
}

// Waits (bounded) until `ok()` holds; returns whether it did.
template <typename F>
bool eventually(F ok) {
  const auto deadline = Clock::now() + kGuard;
  for (int i = 0; i < 10000 && Clock::now() < deadline; ++i) {
    if (ok()) return true;
    std::this_thread::sleep_for(1ms);  // a polling interval, not a synchronisation
  }
  return ok();
}

// Limits whose idle kept-alive connections stay open for the whole test, so that parked
// connections surely hold their threads.
EndpointLimits long_keep_alive() {
  EndpointLimits l;
  l.keep_alive_idle = 60s;
  return l;
}

}  // namespace

// ---------------------------------------------------------------------------
// The answers.

TEST_CASE("/master answers 200 while the view says master, 503 otherwise; HEAD alike", "[endpoints]") {
  Served s;
  auto c = s.client();

  auto r = c->Get("/master");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "master\n");
  r = c->Head("/master");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body.empty());

  s.agent.set(standby_view());  // asked afresh at every request
  r = c->Get("/master");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body == "not master\n");
  r = c->Head("/master");
  REQUIRE(r);
  CHECK(r->status == 503);

  s.agent.set(master_view());
  CHECK(s.get("/master") == 200);
}

TEST_CASE("/standby and /health follow the view", "[endpoints]") {
  Served s;
  CHECK(s.get("/standby") == 503);
  CHECK(s.get("/health") == 200);

  s.agent.set(standby_view());
  CHECK(s.get("/standby") == 200);
  CHECK(s.get("/health") == 200);

  RoleView v = standby_view();
  v.connected_standby = false;
  v.healthy = false;
  v.role = "disconnected";
  s.agent.set(v);
  CHECK(s.get("/standby") == 503);
  auto r = s.client()->Get("/health");
  REQUIRE(r);
  CHECK(r->status == 503);
  CHECK(r->body == "no database round trip within ttl\n");
}

TEST_CASE("/status is JSON with every field of the view", "[endpoints]") {
  Served s;
  auto r = s.client()->Get("/status");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->get_header_value("Content-Type") == "application/json");
  const auto j = nlohmann::json::parse(r->body);
  CHECK(j.at("cluster") == "c1");
  CHECK(j.at("node") == "n1");
  CHECK(j.at("address") == "10.0.0.1:8080");
  CHECK(j.at("role") == "master");
  CHECK(j.at("epoch") == 7);
  CHECK(j.at("master") == "n1");
  CHECK(j.at("master_address") == "10.0.0.1:8080");
  CHECK(j.at("lease_left_ms") == 1500);
  CHECK(j.at("healthy") == true);
  CHECK(j.at("may_acquire") == true);
  CHECK(j.at("last_round_trip_ago_ms") == 12);
  CHECK(j.at("last_round_trip_latency_ms") == 3);

  // Unknown master and no round trip yet: nulls.
  RoleView v;
  v.role = "registering";
  v.cluster = "c1";
  v.node = "n3";
  s.agent.set(v);
  r = s.client()->Get("/status");
  REQUIRE(r);
  const auto k = nlohmann::json::parse(r->body);
  CHECK(k.at("role") == "registering");
  CHECK(k.at("master").is_null());
  CHECK(k.at("master_address").is_null());
  CHECK(k.at("last_round_trip_ago_ms").is_null());
  CHECK(k.at("last_round_trip_latency_ms").is_null());
  CHECK(k.at("healthy") == false);
  CHECK(k.at("may_acquire") == false);
}

TEST_CASE("/metrics answers what the metrics function returns; an unknown path 404", "[endpoints]") {
  Served s;
  auto c = s.client();
  auto r = c->Get("/metrics");
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(r->body == "lease_agent_up 1\n");
  CHECK(r->get_header_value("Content-Type") == "text/plain; version=0.0.4");
  CHECK(s.get("/nonsense") == 404);
  CHECK(s.get("/") == 404);
  r = c->Post("/master", "x", "text/plain");
  REQUIRE(r);
  CHECK(r->status != 200);
}

TEST_CASE("a kept-alive connection answers request after request, pipelined too", "[endpoints]") {
  Served s;
  RawConnection c(s.endpoints.port());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(c.send_get("/master"));
    const auto a = c.read_answer();
    CHECK(a.status == 200);
    CHECK(a.keep_alive);
    CHECK(a.body == "master\n");
  }
  // Two requests in one write: two answers, in order.
  REQUIRE(c.send("GET /master HTTP/1.1\r\nHost: x\r\n\r\nGET /nonsense HTTP/1.1\r\nHost: x\r\n\r\n"));
  CHECK(c.read_answer().status == 200);
  CHECK(c.read_answer().status == 404);
}

// ---------------------------------------------------------------------------
// Connections.

TEST_CASE("idle kept-alive connections beyond the old pool of 2 do not starve a new check", "[endpoints]") {
  // Production limits but for the idle timeout, so the parked connections surely hold
  // their threads throughout.
  Served s(long_keep_alive());
  auto parked = park(s.endpoints.port(), 8);

  // A fresh checker is answered at once (the client's 5 s timeout is only a hang guard).
  CHECK(s.get("/master") == 200);
  s.agent.set(standby_view());
  CHECK(s.get("/master") == 503);

  // And the parked ones were kept open: each answers again.
  for (auto& c : parked) {
    REQUIRE(c->send_get("/master"));
    CHECK(c->read_answer().status == 503);
  }
}

TEST_CASE("idle kept-alive connections with the default limits do not starve a new check", "[endpoints]") {
  Served s;
  auto parked = park(s.endpoints.port(), 8);
  CHECK(s.get("/master") == 200);
  CHECK(s.get("/health") == 200);
}

TEST_CASE("beyond max_connections a new connection is closed at once, and served once one is free",
          "[endpoints]") {
  EndpointLimits l = long_keep_alive();
  l.max_connections = 4;
  Served s(l);
  auto parked = park(s.endpoints.port(), 4);

  // The fifth: closed without an answer, not left waiting.
  RawConnection fifth(s.endpoints.port());
  fifth.send_get("/master");  // may fail: the server may have closed already
  CHECK(fifth.closed_by_server());
  CHECK(fifth.unread().empty());

  // One parked connection leaves: its thread is free as soon as it has seen the close.
  parked.back()->close();
  parked.pop_back();
  int status = -1;
  for (int i = 0; i < 1000 && status != 200; ++i) {
    RawConnection c(s.endpoints.port());
    if (!c.send_get("/master")) continue;
    status = c.read_answer().status;  // -1 while still refused
  }
  CHECK(status == 200);

  // The parked ones were never disturbed.
  for (auto& c : parked) {
    REQUIRE(c->send_get("/master"));
    CHECK(c->read_answer().status == 200);
  }
}

TEST_CASE("an idle kept-alive connection is closed after keep_alive_idle", "[endpoints]") {
  EndpointLimits l;
  l.keep_alive_idle = 200ms;
  Served s(l);
  auto parked = park(s.endpoints.port(), 1);
  CHECK(parked[0]->closed_by_server());
  CHECK(parked[0]->unread().empty());
}

TEST_CASE("a connection that never completes its request is closed after request_timeout", "[endpoints]") {
  EndpointLimits l = long_keep_alive();
  l.request_timeout = 300ms;
  Served s(l);
  RawConnection slow(s.endpoints.port());
  REQUIRE(slow.send("GET /master HTTP/1.1\r\nHost: 127.0.0.1\r\n"));  // no blank line
  CHECK(slow.closed_by_server());  // httplib answers 400 first: an incomplete request
  CHECK(slow.unread().find(" 200 ") == std::string::npos);
  CHECK(s.get("/master") == 200);
}

TEST_CASE("after keep_alive_max_requests answers the connection is closed", "[endpoints]") {
  EndpointLimits l = long_keep_alive();
  l.keep_alive_max_requests = 3;
  Served s(l);
  RawConnection c(s.endpoints.port());
  for (int i = 0; i < 3; ++i) {
    REQUIRE(c.send_get("/master"));
    const auto a = c.read_answer();
    CHECK(a.status == 200);
    CHECK(a.keep_alive == (i < 2));  // the last says "Connection: close"
  }
  CHECK(c.closed_by_server());
  CHECK(c.unread().empty());
}

TEST_CASE("threads are made on demand and idle ones exit", "[endpoints]") {
  EndpointLimits l = long_keep_alive();
  l.warm_threads = 2;
  l.idle_thread_linger = 50ms;
  const int before = thread_count();
  REQUIRE(before > 0);
  Served s(l);
  {
    auto parked = park(s.endpoints.port(), 10);
    // The listening thread and one per parked connection, at least.
    CHECK(thread_count() >= before + 1 + 10);
  }  // closed: their threads go idle, then all but the warm ones exit
  CHECK(eventually([&] { return thread_count() <= before + 1 + 2; }));
  // And it still serves.
  CHECK(s.get("/master") == 200);
}

TEST_CASE("stop() is prompt with idle kept-alive connections and a half-sent request open", "[endpoints]") {
  Served s(long_keep_alive());
  auto parked = park(s.endpoints.port(), 8);
  RawConnection slow(s.endpoints.port());
  REQUIRE(slow.send("GET /master HTTP/1.1\r\n"));

  REQUIRE(stops_promptly(s.endpoints));
  for (auto& c : parked) {
    CHECK(c->closed_by_server());
    CHECK(c->unread().empty());
  }
  CHECK(slow.closed_by_server());  // perhaps after a 400: its request was incomplete
  CHECK(s.get("/master") == -1);  // nothing listens any more
  s.endpoints.stop();             // idempotent
}

TEST_CASE("stop() right after start() returns, again and again", "[endpoints]") {
  FakeAgent agent;
  for (int i = 0; i < 20; ++i) {
    RoleEndpoints e([&] { return agent.view(); }, [] { return std::string(); });
    std::string error;
    REQUIRE(e.start("127.0.0.1", 0, error));
    REQUIRE(stops_promptly(e));
  }
}

TEST_CASE("start() on a port in use fails with a message; start() twice is refused", "[endpoints]") {
  Served s;
  FakeAgent agent;
  RoleEndpoints other([&] { return agent.view(); }, [] { return std::string(); });
  std::string error;
  CHECK_FALSE(other.start("127.0.0.1", s.endpoints.port(), error));
  CHECK(error.find("cannot listen on 127.0.0.1:" + std::to_string(s.endpoints.port())) == 0);

  error.clear();
  CHECK_FALSE(s.endpoints.start("127.0.0.1", 0, error));
  CHECK_FALSE(error.empty());
  CHECK(s.get("/master") == 200);
}
