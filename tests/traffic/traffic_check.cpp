// Traffic follows the master through a real HAProxy: three lease-agents, each beside an
// app server (traffic_app) that answers its node's name, HAProxy in front with
// config/haproxy.cfg, and a client sending requests through it throughout, while the
// master is killed, paused past ttl, stopped cleanly and switched over. Then the history
// is checked (history.h; README.md here defines the checks and the gaps).
//
//   traffic_check [--demo] [--scenarios kill,pause,stop,switchover] [--dsn DSN]
//                 [--handover-delay 300ms] [--interval 1ms] [--keep]
//   traffic_check --record FILE     (the agents' on-promote/on-demote hook; internal)
//
// The database: --dsn, else LEASE_AGENT_TEST_DSN (scripts/test.sh, scripts/demo.sh); the
// schema is applied first (idempotent). Everything listens on 127.0.0.1, on free ports;
// the cluster name is new for each run. Exit status: 0 every check passed, 1 a check
// failed, 2 bad usage or a setup that did not come up.
#include <fcntl.h>
// Small answers at once: no Nagle wait behind a delayed ACK (40 ms per request otherwise).
#define CPPHTTPLIB_TCP_NODELAY true
#include <httplib.h>
#include <signal.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "history.h"
#include "proc_util.h"

#ifndef LEASE_AGENT_BINARY
#error "LEASE_AGENT_BINARY must name the lease-agent binary"
#endif

namespace {

using traffic::Answer;
using traffic::Fault;
using traffic::FaultKind;
using traffic::HookRecord;
using traffic::i64;

constexpr i64 kMs = 1000000;
constexpr i64 kTtlMs = 2000;
constexpr i64 kRenewMs = 500;
constexpr i64 kPromoteSlackMs = 50;

i64 mono_ns() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<i64>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}
void sleep_ms(i64 ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// "300ms", "2s": milliseconds, or -1.
i64 parse_ms(const std::string& s) {
  std::smatch m;
  if (!std::regex_match(s, m, std::regex(R"((\d+)\s*(ms|s))"))) return -1;
  return std::stoll(m[1]) * (m[2] == "s" ? 1000 : 1);
}

// ---------------------------------------------------------------------------
// The hook: `traffic_check --record FILE` appends "mono_ns node role epoch" with one
// write(2) on an O_APPEND file, so that lines of concurrent hooks never interleave.
int record_hook(const char* path) {
  const i64 now = mono_ns();
  const char* node = std::getenv("LEASE_AGENT_NODE");
  const char* role = std::getenv("LEASE_AGENT_ROLE");
  const char* epoch = std::getenv("LEASE_AGENT_EPOCH");
  if (!node || !role || !epoch) {
    std::fprintf(stderr, "traffic_check --record: LEASE_AGENT_NODE/ROLE/EPOCH not set\n");
    return 2;
  }
  char line[256];
  const int n = std::snprintf(line, sizeof line, "%lld %s %s %s\n", static_cast<long long>(now), node, role, epoch);
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0 || n <= 0 || ::write(fd, line, static_cast<size_t>(n)) != n) {
    std::fprintf(stderr, "traffic_check --record: cannot append to %s: %s\n", path, std::strerror(errno));
    return 1;
  }
  ::close(fd);
  return 0;
}

// CLOCK_REALTIME - CLOCK_MONOTONIC, the least of a few readings (the agents stamp their
// log lines with the wall clock; the history is on the monotonic one).
i64 wall_minus_mono() {
  i64 best = INT64_MAX, offset = 0;
  for (int i = 0; i < 20; ++i) {
    timespec a{}, w{}, b{};
    ::clock_gettime(CLOCK_MONOTONIC, &a);
    ::clock_gettime(CLOCK_REALTIME, &w);
    ::clock_gettime(CLOCK_MONOTONIC, &b);
    const i64 ma = static_cast<i64>(a.tv_sec) * 1000000000 + a.tv_nsec;
    const i64 mb = static_cast<i64>(b.tv_sec) * 1000000000 + b.tv_nsec;
    if (mb - ma < best) {
      best = mb - ma;
      offset = static_cast<i64>(w.tv_sec) * 1000000000 + w.tv_nsec - (ma + mb) / 2;
    }
  }
  return offset;
}

// The moment each term began, from the agents' log lines "promoted: acquired the lease at
// epoch N" (UTC, ms), on the monotonic clock: by node and epoch. The on-promote hook's own
// record comes later, by the hook's start-up, which a loaded machine stretches past any
// fixed slack; the log line is written as the term begins.
std::map<std::pair<std::string, i64>, i64> promotions_from_logs(const std::string& dir,
                                                               const std::vector<std::string>& nodes, i64 offset) {
  std::map<std::pair<std::string, i64>, i64> out;
  const std::regex line_re(R"(^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z .*promoted: acquired the lease at epoch (\d+))");
  for (const std::string& node : nodes) {
    std::ifstream in(dir + "/" + node + ".agent.log");
    for (std::string line; std::getline(in, line);) {
      std::smatch m;
      if (!std::regex_search(line, m, line_re)) continue;
      std::tm tm{};
      tm.tm_year = std::stoi(m[1]) - 1900;
      tm.tm_mon = std::stoi(m[2]) - 1;
      tm.tm_mday = std::stoi(m[3]);
      tm.tm_hour = std::stoi(m[4]);
      tm.tm_min = std::stoi(m[5]);
      tm.tm_sec = std::stoi(m[6]);
      const i64 wall = static_cast<i64>(::timegm(&tm)) * 1000000000 + std::stoll(m[7]) * kMs;
      out[{node, std::stoll(m[8])}] = wall - offset;
    }
  }
  return out;
}

std::vector<HookRecord> read_hooks(const std::string& path) {
  std::vector<HookRecord> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ls(line);
    HookRecord r;
    if (ls >> r.t >> r.node >> r.role >> r.epoch) out.push_back(r);
  }
  return out;
}

// A command run to its end, bounded; its output appended to log_path. The exit status,
// or -1 if it had to be killed.
int run_bounded(const std::vector<std::string>& args, const std::string& log_path, i64 limit_ms) {
  const pid_t pid = lease_agent_proc::spawn_process(args, {}, log_path, log_path);
  if (auto rc = lease_agent_proc::wait_pid(pid, std::chrono::milliseconds(limit_ms))) return *rc;
  ::kill(pid, SIGKILL);
  lease_agent_proc::wait_pid(pid, std::chrono::milliseconds(2000));
  return -1;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s;
}

// The check timing of config/haproxy.cfg (`inter` on the default-server line and
// `timeout check`), read from the file so that the bounds follow it.
struct CheckTiming {
  i64 inter_ms = -1, timeout_ms = -1;
};
CheckTiming read_check_timing(const std::string& cfg) {
  CheckTiming t;
  std::ifstream in(cfg);
  std::string line;
  std::smatch m;
  while (std::getline(in, line)) {
    line = line.substr(0, line.find('#'));
    if (std::regex_search(line, m, std::regex(R"(^\s*default-server\s.*\binter\s+(\d+(ms|s)))")))
      t.inter_ms = parse_ms(m[1]);
    if (std::regex_search(line, m, std::regex(R"(^\s*timeout\s+check\s+(\d+(ms|s)))"))) t.timeout_ms = parse_ms(m[1]);
  }
  return t;
}

// ---------------------------------------------------------------------------
// The client: one request at a time through HAProxy, `interval` apart, each recorded
// with its send and receive time.
class Client {
 public:
  Client(int port, i64 interval_ms) : port_(port), interval_ms_(interval_ms) {}
  ~Client() { stop(); }
  void start() { thread_ = std::thread([this] { loop(); }); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  std::vector<Answer> answers() const {
    std::lock_guard<std::mutex> l(mu_);
    return answers_;
  }
  // The first 200 received after `t` from a node other than `not_node`.
  std::optional<Answer> first_200_after(i64 t, const std::string& not_node) const {
    std::lock_guard<std::mutex> l(mu_);
    auto it = std::lower_bound(answers_.begin(), answers_.end(), t,
                               [](const Answer& a, i64 v) { return a.sent < v - 10000 * kMs; });
    for (; it != answers_.end(); ++it)
      if (it->status == 200 && it->recv > t && it->node != not_node) return *it;
    return std::nullopt;
  }
  // Answers received after `t`: how many, and how many were 200s from `node`.
  std::pair<int, int> since(i64 t, const std::string& node) const {
    std::lock_guard<std::mutex> l(mu_);
    int all = 0, from = 0;
    for (auto it = answers_.rbegin(); it != answers_.rend() && it->recv > t; ++it) {
      ++all;
      if (it->status == 200 && it->node == node) ++from;
    }
    return {all, from};
  }

 private:
  void loop() {
    httplib::Client cli("127.0.0.1", port_);
    cli.set_keep_alive(true);
    cli.set_connection_timeout(1, 0);
    cli.set_read_timeout(3, 0);
    cli.set_write_timeout(1, 0);
    while (!stop_) {
      Answer a;
      a.sent = mono_ns();
      auto res = cli.Get("/");
      a.recv = mono_ns();
      if (res) {
        a.status = res->status;
        if (res->status == 200) a.node = trim(res->body);
      }
      {
        std::lock_guard<std::mutex> l(mu_);
        answers_.push_back(a);
      }
      if (interval_ms_ > 0) sleep_ms(interval_ms_);
    }
  }
  int port_;
  i64 interval_ms_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<Answer> answers_;
};

std::optional<nlohmann::json> get_json(int port, const std::string& path) {
  httplib::Client cli("127.0.0.1", port);
  cli.set_connection_timeout(0, 300000);
  cli.set_read_timeout(0, 500000);
  auto res = cli.Get(path.c_str());
  if (!res || res->status != 200) return std::nullopt;
  try {
    return nlohmann::json::parse(res->body);
  } catch (...) {
    return std::nullopt;
  }
}

// HAProxy's view: the servers of backend `app` that are UP, from the stats page's CSV.
std::optional<std::vector<std::string>> haproxy_up(int stats_port) {
  httplib::Client cli("127.0.0.1", stats_port);
  cli.set_connection_timeout(0, 300000);
  cli.set_read_timeout(0, 500000);
  cli.set_url_encode(false);  // HAProxy wants ";csv" as it stands, not "%3Bcsv"
  auto res = cli.Get("/stats;csv");
  if (!res || res->status != 200) return std::nullopt;
  std::istringstream in(res->body);
  std::string line;
  int status_col = -1;
  std::vector<std::string> up;
  while (std::getline(in, line)) {
    std::vector<std::string> f;
    std::stringstream ls(line);
    std::string x;
    while (std::getline(ls, x, ',')) f.push_back(x);
    if (!line.empty() && line[0] == '#') {
      for (std::size_t i = 0; i < f.size(); ++i)
        if (f[i] == "status") status_col = static_cast<int>(i);
      continue;
    }
    if (status_col < 0 || f.size() <= static_cast<std::size_t>(status_col) || f[0] != "app") continue;
    if (f[1] == "FRONTEND" || f[1] == "BACKEND") continue;
    if (f[status_col].rfind("UP", 0) == 0) up.push_back(f[1]);
  }
  return up;
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
  return s.empty() ? "none" : s;
}

// ---------------------------------------------------------------------------

struct Options {
  bool demo = false, keep = false;
  std::vector<FaultKind> scenarios{FaultKind::kill, FaultKind::pause, FaultKind::stop, FaultKind::switchover};
  std::string dsn;
  i64 handover_delay_ms = 300;
  i64 interval_ms = 1;
  std::string self;
};

struct Node {
  std::string name;
  int app_port = 0, agent_port = 0;
  pid_t agent = -1, app = -1;
  i64 agent_started = 0;  // its place in the line of succession: first started, first served
};

class Run {
 public:
  explicit Run(Options o) : o_(std::move(o)) {}
  int main();

 private:
  void say(const std::string& s) const { std::cout << s << std::endl; }
  std::string rel(i64 t) const {
    char b[32];
    std::snprintf(b, sizeof b, "+%.3fs", static_cast<double>(t - t0_) / 1e9);
    return b;
  }
  void setup();
  void start_app(Node& n);
  void start_agent(Node& n);
  void start_haproxy();
  std::optional<nlohmann::json> status(const Node& n) const { return get_json(n.agent_port, "/status"); }
  void await(const std::string& what, i64 limit_ms, const std::function<bool()>& done);
  int settle(const std::string& when);
  std::string await_new_master(const Node& old, i64 since, i64 limit_ms);
  void scenario(FaultKind k);
  void print_scenario(const traffic::Scenario& s) const;
  void shutdown();
  traffic::Params params() const {
    return {kTtlMs * kMs, timing_.inter_ms * kMs, o_.handover_delay_ms * kMs, kPromoteSlackMs * kMs};
  }

  Options o_;
  CheckTiming timing_;
  std::string dir_, hooks_, cluster_;
  std::vector<Node> nodes_;
  int lb_port_ = 0, stats_port_ = 0;
  pid_t haproxy_ = -1;
  std::unique_ptr<Client> client_;
  std::vector<Fault> faults_;
  i64 t0_ = 0;
  int step_ = 0;
};

void Run::await(const std::string& what, i64 limit_ms, const std::function<bool()>& done) {
  const i64 deadline = mono_ns() + limit_ms * kMs;
  while (!done()) {
    if (mono_ns() > deadline) throw std::runtime_error("timed out after " + std::to_string(limit_ms) + " ms waiting for " + what);
    sleep_ms(10);
  }
}

void Run::start_app(Node& n) {
  n.app = lease_agent_proc::spawn_process({TRAFFIC_APP_BINARY, n.name, "127.0.0.1:" + std::to_string(n.app_port)}, {},
                                          dir_ + "/" + n.name + ".app.log", dir_ + "/" + n.name + ".app.log");
  await(n.name + "'s app server on 127.0.0.1:" + std::to_string(n.app_port), 5000, [&] {
    httplib::Client cli("127.0.0.1", n.app_port);
    cli.set_connection_timeout(0, 200000);
    auto res = cli.Get("/");
    return res && res->status == 200;
  });
}

void Run::start_agent(Node& n) {
  const std::string hook = "'" + o_.self + "' --record '" + hooks_ + "'";
  std::vector<std::string> args{LEASE_AGENT_BINARY, "run", "--dsn", o_.dsn, "--cluster", cluster_, "--node", n.name,
                                "-b", "127.0.0.1:" + std::to_string(n.app_port), "--ttl", std::to_string(kTtlMs) + "ms",
                                "--renew", std::to_string(kRenewMs) + "ms", "--http",
                                "127.0.0.1:" + std::to_string(n.agent_port), "--on-promote", hook, "--on-demote", hook};
  if (o_.handover_delay_ms > 0) {
    args.push_back("--handover-delay");
    args.push_back(std::to_string(o_.handover_delay_ms) + "ms");
  }
  n.agent = lease_agent_proc::spawn_process(args, {}, dir_ + "/" + n.name + ".agent.log", dir_ + "/" + n.name + ".agent.log");
  n.agent_started = mono_ns();
}

void Run::start_haproxy() {
  std::vector<std::pair<std::string, std::string>> env{
      {"LB_BIND", "127.0.0.1:" + std::to_string(lb_port_)},
      {"LB_STATS_BIND", "127.0.0.1:" + std::to_string(stats_port_)}};
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    env.push_back({"NODE" + std::to_string(i + 1) + "_APP", "127.0.0.1:" + std::to_string(nodes_[i].app_port)});
    env.push_back({"NODE" + std::to_string(i + 1) + "_AGENT_PORT", std::to_string(nodes_[i].agent_port)});
  }
  haproxy_ = lease_agent_proc::spawn_process({HAPROXY_BINARY, "-db", "-f", HAPROXY_CONFIG}, env, dir_ + "/haproxy.log",
                                             dir_ + "/haproxy.log");
}

// Waits until the cluster is quiet: exactly one master, the two others standbys that may
// take the lease (their connection is ttl old), HAProxy showing only the master up, and
// the client's answers coming from it. The index of the master.
int Run::settle(const std::string& when) {
  int master = -1;
  std::string seen;
  try {
    await("the cluster to settle " + when, 20000, [&] {
      std::vector<std::string> roles;
      int masters = 0, ready = 0;
      master = -1;
      for (std::size_t i = 0; i < nodes_.size(); ++i) {
        const auto s = status(nodes_[i]);
        const std::string role = s ? s->value("role", "?") : "no answer";
        roles.push_back(nodes_[i].name + "=" + role);
        if (role == "master") {
          ++masters;
          master = static_cast<int>(i);
        } else if (role == "standby" && s->value("may_acquire", false)) {
          ++ready;
        }
      }
      const auto up = haproxy_up(stats_port_);
      seen = join(roles) + "; HAProxy up: " + (up ? join(*up) : "no stats");
      if (masters != 1 || ready != 2 || !up || up->size() != 1 || up->front() != nodes_[master].name) return false;
      if (!client_) return true;
      const i64 t = mono_ns();
      sleep_ms(300);
      const auto [all, from] = client_->since(t, nodes_[master].name);
      return all > 0 && all == from;
    });
  } catch (const std::runtime_error& e) {
    throw std::runtime_error(std::string(e.what()) + " (last seen: " + seen + ")");
  }
  return master;
}

// The node whose app server answered first after `since`, other than `old`.
std::string Run::await_new_master(const Node& old, i64 since, i64 limit_ms) {
  std::string who;
  await("a node other than " + old.name + " to answer through HAProxy", limit_ms, [&] {
    const auto a = client_->first_200_after(since, old.name);
    if (a) who = a->node;
    return a.has_value();
  });
  return who;
}

void Run::setup() {
  const auto timing = read_check_timing(HAPROXY_CONFIG);
  if (timing.inter_ms <= 0 || timing.timeout_ms <= 0)
    throw std::invalid_argument(std::string("cannot read `inter` and `timeout check` from ") + HAPROXY_CONFIG);
  timing_ = timing;
  const i64 margin = kTtlMs / 10;
  if (timing_.inter_ms + timing_.timeout_ms >= margin)
    throw std::invalid_argument("HAProxy's inter + timeout check (" + std::to_string(timing_.inter_ms + timing_.timeout_ms) +
                                " ms) must stay below the agents' margin ttl/10 (" + std::to_string(margin) + " ms)");
  if (o_.handover_delay_ms <= timing_.inter_ms + timing_.timeout_ms)
    say("note: handover-delay " + std::to_string(o_.handover_delay_ms) + " ms does not exceed inter + timeout check (" +
        std::to_string(timing_.inter_ms + timing_.timeout_ms) + " ms): HAProxy may not mark the old master down in time");

  char tmpl[] = "/tmp/lease-agent-traffic.XXXXXX";
  if (!::mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  hooks_ = dir_ + "/hooks.txt";
  std::mt19937_64 rng(std::random_device{}());
  cluster_ = "traffic-" + std::to_string(::getpid()) + "-" + std::to_string(rng() % 100000);


  say("== traffic through HAProxy follows the master");
  say("   3 nodes, each a lease-agent beside an app server that answers its name; ttl=" + std::to_string(kTtlMs) +
      "ms renew=" + std::to_string(kRenewMs) + "ms handover-delay=" + std::to_string(o_.handover_delay_ms) + "ms");
  say("   HAProxy (" + std::string(HAPROXY_CONFIG) + ") checks GET /master on each agent every " +
      std::to_string(timing_.inter_ms) + "ms (timeout " + std::to_string(timing_.timeout_ms) + "ms), fall 1 rise 1");
  say("   cluster " + cluster_ + ", logs in " + dir_);
  if (run_bounded({LEASE_AGENT_BINARY, "schema", "apply", "--dsn", o_.dsn}, dir_ + "/schema-apply.log", 30000) != 0)
    throw std::runtime_error("lease-agent schema apply failed: " + slurp(dir_ + "/schema-apply.log"));

  for (int i = 1; i <= 3; ++i) {
    Node n;
    n.name = "node" + std::to_string(i);
    n.app_port = lease_agent_proc::free_port();
    n.agent_port = lease_agent_proc::free_port();
    nodes_.push_back(n);
  }
  lb_port_ = lease_agent_proc::free_port();
  stats_port_ = lease_agent_proc::free_port();
  t0_ = mono_ns();
  for (Node& n : nodes_) {
    start_app(n);
    start_agent(n);
    // First started, first served: node1 is master (once its connection is ttl old).
    const std::string want = &n == &nodes_.front() ? "master" : "standby";
    await(n.name + " to be " + want, 4 * kTtlMs, [&] {
      const auto s = status(n);
      return s && s->value("role", "") == want;
    });
    say("   " + n.name + ": app server on 127.0.0.1:" + std::to_string(n.app_port) + ", agent on 127.0.0.1:" +
        std::to_string(n.agent_port) + " (" + want + ")");
  }
  start_haproxy();
  say("   HAProxy on 127.0.0.1:" + std::to_string(lb_port_) + " (stats: http://127.0.0.1:" +
      std::to_string(stats_port_) + "/stats)");
  // A fresh HAProxy counts every server up until its first check: no traffic before the
  // checks have marked the standbys down.
  settle("after HAProxy started");
  client_ = std::make_unique<Client>(lb_port_, o_.interval_ms);
  client_->start();
  const int m = settle("with the client running");
  say("   the client sends GET / through HAProxy, one request at a time, " + std::to_string(o_.interval_ms) +
      "ms apart; " + nodes_[m].name + " answers");
}

void Run::print_scenario(const traffic::Scenario& s) const {
  auto ms = [](i64 ns) { return std::to_string((ns + kMs / 2) / kMs); };
  std::string line = "   " + (s.before.empty() ? "?" : s.before) + " -> " + (s.after.empty() ? "nobody" : s.after);
  if (s.first_new >= 0)
    line += ": traffic resumed " + ms(s.resumed()) + " ms after the fault; gap " + ms(s.gap()) + " ms (last answer of " +
            s.before + " -> first of " + s.after + "); bound " + ms(s.bound) + " ms; " +
            std::to_string(s.errors_503) + " x 503 and " + std::to_string(s.errors_other) + " other errors in between";
  line += s.ok ? "   OK" : "   FAILED";
  say(line);
}

void Run::scenario(FaultKind k) {
  const int m = settle("before the next fault");
  Node& old = nodes_[m];
  Fault f;
  f.kind = k;
  f.node = old.name;
  ++step_;
  std::string who;
  switch (k) {
    case FaultKind::kill: {
      say("== " + std::to_string(step_) + ". kill -9 " + old.name + " (the master: agent and app server)");
      f.start = f.end = mono_ns();
      ::kill(old.agent, SIGKILL);
      ::kill(old.app, SIGKILL);
      lease_agent_proc::wait_pid(old.agent, std::chrono::milliseconds(5000));
      lease_agent_proc::wait_pid(old.app, std::chrono::milliseconds(5000));
      f.gone = mono_ns();  // (an answer the app server finished before it died is its own)
      faults_.push_back(f);
      who = await_new_master(old, f.start, kTtlMs + 5000);
      print_scenario(traffic::check_history(client_->answers(), read_hooks(hooks_), faults_, params(), mono_ns()).scenarios.back());
      say("   restarting " + old.name + " (app server and agent): it joins the back of the line");
      start_app(old);
      start_agent(old);
      break;
    }
    case FaultKind::pause: {
      say("== " + std::to_string(step_) + ". SIGSTOP " + old.name + "'s agent (the master) for ttl + 1 s, then SIGCONT; its app server runs on");
      f.start = mono_ns();
      ::kill(old.agent, SIGSTOP);
      sleep_ms(kTtlMs + 1000);
      f.end = mono_ns();
      ::kill(old.agent, SIGCONT);
      faults_.push_back(f);
      who = await_new_master(old, f.start, 5000);
      print_scenario(traffic::check_history(client_->answers(), read_hooks(hooks_), faults_, params(), mono_ns()).scenarios.back());
      break;
    }
    case FaultKind::stop: {
      say("== " + std::to_string(step_) + ". SIGTERM " + old.name + "'s agent (the master, a clean stop); its app server runs on");
      f.start = f.end = mono_ns();
      ::kill(old.agent, SIGTERM);
      faults_.push_back(f);
      who = await_new_master(old, f.start, 5000);
      const auto rc = lease_agent_proc::wait_pid(old.agent, std::chrono::milliseconds(10000));
      if (!rc) throw std::runtime_error(old.name + "'s agent did not exit within 10 s of SIGTERM");
      if (*rc != 0) say("   note: " + old.name + "'s agent exited with status " + std::to_string(*rc) + " (0 expected)");
      print_scenario(traffic::check_history(client_->answers(), read_hooks(hooks_), faults_, params(), mono_ns()).scenarios.back());
      say("   restarting " + old.name + "'s agent: it joins the back of the line");
      start_agent(old);
      break;
    }
    case FaultKind::switchover: {
      // To the back of the line (the standby started last), so that --to is what chooses it.
      const Node* target = nullptr;
      for (const Node& n : nodes_)
        if (&n != &old && (!target || n.agent_started > target->agent_started)) target = &n;
      f.target = target->name;
      say("== " + std::to_string(step_) + ". lease-agent switchover --to " + target->name + " (from " + old.name + ", the master)");
      const std::string log = dir_ + "/switchover.log";
      f.start = f.end = mono_ns();
      faults_.push_back(f);
      const int rc = run_bounded({LEASE_AGENT_BINARY, "switchover", "--dsn", o_.dsn, "--cluster", cluster_, "--to",
                                  target->name, "--timeout", "10s"},
                                 log, 15000);
      for (std::istringstream in(slurp(log)); std::getline(in, who);) say("   " + who);
      if (rc != 0) throw std::runtime_error("lease-agent switchover exited with status " + std::to_string(rc));
      who = await_new_master(old, f.start, 5000);
      print_scenario(traffic::check_history(client_->answers(), read_hooks(hooks_), faults_, params(), mono_ns()).scenarios.back());
      break;
    }
  }
}

void Run::shutdown() {
  if (client_) client_->stop();
  auto stop = [](pid_t& pid, int sig) {
    if (pid <= 0) return;
    ::kill(pid, SIGCONT);
    ::kill(pid, sig);
  };
  stop(haproxy_, SIGTERM);
  for (Node& n : nodes_) stop(n.agent, SIGTERM);
  for (Node& n : nodes_) stop(n.app, SIGTERM);
  for (pid_t* p : {&haproxy_}) {
    if (*p > 0 && !lease_agent_proc::wait_pid(*p, std::chrono::milliseconds(5000))) ::kill(*p, SIGKILL);
    *p = -1;
  }
  for (Node& n : nodes_)
    for (pid_t* p : {&n.agent, &n.app}) {
      if (*p > 0 && !lease_agent_proc::wait_pid(*p, std::chrono::milliseconds(5000))) {
        ::kill(*p, SIGKILL);
        lease_agent_proc::wait_pid(*p, std::chrono::milliseconds(2000));
      }
      *p = -1;
    }
}

int Run::main() {
  try {
    setup();
  } catch (const std::invalid_argument& e) {
    std::cerr << "traffic_check: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "traffic_check: setup failed: " << e.what() << " (logs in " << dir_ << ")\n";
    shutdown();
    return 2;
  }
  std::string failure;
  try {
    for (FaultKind k : o_.scenarios) scenario(k);
    settle("after the last fault");
    if (o_.demo) {
      // What an operator sees now: `lease-agent status` of the demo's cluster.
      say("== lease-agent status --cluster " + cluster_);
      const std::string out = dir_ + "/status.txt";
      run_bounded({LEASE_AGENT_BINARY, "status", "--dsn", o_.dsn, "--cluster", cluster_}, out, 10000);
      std::cout << slurp(out) << std::flush;
    }
  } catch (const std::exception& e) {
    failure = e.what();
  }
  if (client_) client_->stop();
  const i64 run_end = mono_ns();
  const auto answers = client_ ? client_->answers() : std::vector<Answer>{};
  shutdown();
  // A term begins at its "promoted" log line (less the ms the stamp drops), or at its
  // on-promote record if that came first.
  std::vector<HookRecord> hooks = read_hooks(hooks_);
  std::vector<std::string> names;
  for (const Node& n : nodes_) names.push_back(n.name);
  const auto promoted = promotions_from_logs(dir_, names, wall_minus_mono());
  for (HookRecord& h : hooks) {
    const auto it = promoted.find({h.node, h.epoch});
    if (h.role == "master" && it != promoted.end()) h.t = std::min(h.t, it->second - kMs);
  }
  const traffic::Report r = traffic::check_history(answers, hooks, faults_, params(), run_end);

  say("== the history: " + std::to_string(r.answers) + " requests through HAProxy");
  std::string served;
  for (const auto& [node, n] : r.served) served += " " + node + "=" + std::to_string(n);
  say("   200s by node:" + served + "; errors outside the faults' windows: " + std::to_string(r.steady_errors));
  say("   master periods (from the hooks): " + std::to_string(r.periods.size()) +
      (r.closest_promote != INT64_MAX
           ? "; a new master's first answer came " + std::to_string(r.closest_promote / 1000) +
                 " us after its promotion (log line) at the closest"
           : ""));
  for (const auto& s : r.scenarios) {
    say(std::string("   ") + traffic::to_string(s.fault.kind) + " of " + s.fault.node + " at " + rel(s.fault.start) + ":");
    print_scenario(s);
  }
  for (const auto& v : r.violations) say("   VIOLATION " + v);
  if (!failure.empty()) say("   FAILED: " + failure);
  const bool ok = r.ok() && failure.empty() && r.scenarios.size() == o_.scenarios.size();
  if (ok) {
    say("== OK: every answer came from the master of its time; the old master never served after the new one; traffic resumed within the bounds");
    if (!o_.keep) std::filesystem::remove_all(dir_);
  } else {
    say("== FAILED (logs and the hook record kept in " + dir_ + ")");
  }
  return ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.size() == 2 && args[0] == "--record") return record_hook(args[1].c_str());
  Options o;
  o.self = std::filesystem::canonical("/proc/self/exe").string();
  if (const char* d = std::getenv("LEASE_AGENT_TEST_DSN")) o.dsn = d;
  auto usage = [] {
    std::cerr << "usage: traffic_check [--demo] [--scenarios kill,pause,stop,switchover] [--dsn DSN]\n"
                 "                     [--handover-delay 300ms] [--interval 1ms] [--keep]\n";
    return 2;
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) throw std::invalid_argument(a + " needs a value");
      return args[++i];
    };
    try {
      if (a == "--demo") {
        o.demo = true;
      } else if (a == "--keep") {
        o.keep = true;
      } else if (a == "--dsn") {
        o.dsn = value();
      } else if (a == "--handover-delay") {
        o.handover_delay_ms = parse_ms(value());
        if (o.handover_delay_ms < 0) return usage();
      } else if (a == "--interval") {
        o.interval_ms = parse_ms(value());
        if (o.interval_ms < 0) return usage();
      } else if (a == "--scenarios") {
        o.scenarios.clear();
        std::stringstream ss(value());
        for (std::string k; std::getline(ss, k, ',');) {
          if (k == "kill") o.scenarios.push_back(FaultKind::kill);
          else if (k == "pause") o.scenarios.push_back(FaultKind::pause);
          else if (k == "stop") o.scenarios.push_back(FaultKind::stop);
          else if (k == "switchover") o.scenarios.push_back(FaultKind::switchover);
          else return usage();
        }
      } else {
        return usage();
      }
    } catch (const std::invalid_argument& e) {
      std::cerr << "traffic_check: " << e.what() << "\n";
      return usage();
    }
  }
  if (o.dsn.empty()) {
    std::cerr << "traffic_check: set LEASE_AGENT_TEST_DSN (or --dsn) to a PostgreSQL the agents may use\n";
    return 2;
  }
  ::signal(SIGPIPE, SIG_IGN);
  return Run(std::move(o)).main();
}
