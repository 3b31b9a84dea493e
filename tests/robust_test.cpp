// Robustness of the binary against what the machine does to it: a suspend (the clock),
// a stalled stderr (the log), a server that speaks another language (connection
// errors by SQLSTATE). Real processes against a real PostgreSQL (process_support.h).
#include <sys/ioctl.h>
#include <time.h>

#include <cstdio>

#include "election.h"  // lease_agent::Clock
#include "fault/fault_proxy.h"
#include "process_support.h"

using namespace lease_agent_test;
using lease_agent_fault::FaultProxy;

#ifndef LEASE_AGENT_BOOTTIME_SHIM
#error "LEASE_AGENT_BOOTTIME_SHIM must name the CLOCK_BOOTTIME shim (tests/clock)"
#endif
#ifndef LEASE_AGENT_SOURCE_DIR
#error "LEASE_AGENT_SOURCE_DIR must name the source tree"
#endif

namespace {

long long boottime_ns() {
  timespec ts{};
  REQUIRE(::clock_gettime(CLOCK_BOOTTIME, &ts) == 0);
  return static_cast<long long>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

// A proxy between an agent and the test database, and the DSN through it.
struct ProxiedDb {
  ProxiedDb() : proxy(host(), port()) {}
  static std::string host() {
    const auto kv = dsn_keywords(test_dsn());
    return kv.count("host") ? kv.at("host") : "127.0.0.1";
  }
  static int port() {
    const auto kv = dsn_keywords(test_dsn());
    return kv.count("port") ? std::stoi(kv.at("port")) : 5432;
  }
  std::string dsn() const { return dsn_with({{"host", "127.0.0.1"}, {"port", std::to_string(proxy.port())}}); }
  FaultProxy proxy;
};

// Writes `text` to `path` whole (rename), so that a reader never sees half of it.
void write_whole(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    REQUIRE(out.good());
  }
  REQUIRE(std::rename(tmp.c_str(), path.c_str()) == 0);
}

std::string hook_cmd(const std::string& out) {
  return "echo \"hook output of $LEASE_AGENT_ROLE\"; echo \"$LEASE_AGENT_ROLE $LEASE_AGENT_EPOCH\" >> '" + out + "'";
}

}  // namespace

// ---------------------------------------------------------------------------
// 1. The clock counts a suspend.

TEST_CASE("lease_agent::Clock reads CLOCK_BOOTTIME", "[clock]") {
  STATIC_REQUIRE(lease_agent::Clock::is_steady);
  for (int i = 0; i < 100; ++i) {
    const long long before = boottime_ns();
    const long long now = lease_agent::Clock::now().time_since_epoch().count();
    const long long after = boottime_ns();
    REQUIRE(before <= now);
    REQUIRE(now <= after);
  }
}

// The shim (tests/clock) moves CLOCK_BOOTTIME of the agent alone, as a suspend of the
// machine would, and nothing else: CLOCK_MONOTONIC, the database, the network stay as
// they are. The master is cut off from its database (a silent proxy), so nothing but
// its own clock can tell it that its deadline passed: its real deadline is still
// seconds ahead, and its hanging heartbeat is not cut off for seconds more
// (call_timeout: 2 x renew).
TEST_CASE("a master suspended past its deadline answers 503 on resuming and runs on-demote; without the "
          "suspend it stays master",
          "[clock][process]") {
  struct Run {
    Cluster cluster;
    ProxiedDb db;
    std::string offset_file, hooks_out;
    Agent* agent = nullptr;
    explicit Run(const std::string& name) : cluster(name) {
      offset_file = cluster.dir().file("boottime-offset-ms");
      hooks_out = cluster.dir().file("hooks.out");
      write_whole(offset_file, "0");
      AgentOptions o;
      o.node = "n1";
      o.dsn = db.dsn();
      o.ttl = "20s";  // renew 10s: the hanging heartbeat fails no sooner than 10 s after the cut
      o.renew = "10s";
      o.extra_args = {"--on-promote", hook_cmd(hooks_out), "--on-demote", hook_cmd(hooks_out)};
      o.env = {{"LD_PRELOAD", LEASE_AGENT_BOOTTIME_SHIM}, {"LEASE_AGENT_BOOTTIME_OFFSET_FILE", offset_file}};
      agent = &cluster.start_ready(o);
    }
  };
  // Both at once: each waits ttl for its first term.
  Run suspended("robust-suspend");
  Run control("robust-nosuspend");
  for (Run* r : {&suspended, &control})
    r->cluster.wait_until("n1 to be master (after ttl)", [&] { return r->agent->get("/master") == 200; },
                          Ms(40000));
  for (Run* r : {&suspended, &control}) {
    r->cluster.wait_until("on-promote", [&] { return read_file(r->hooks_out) == "master 1\n"; });
    r->db.proxy.set_mode(FaultProxy::Mode::drop);
  }

  // A minute of suspend. The first request after it is the first thing the agent sees.
  write_whole(suspended.offset_file, "60000");
  CHECK(suspended.agent->get("/master") == 503);
  suspended.cluster.wait_until("on-demote at the deadline", [&] {
    return read_file(suspended.hooks_out) == "master 1\nstandby 1\n";
  }, Ms(8000));
  // The deadline timer demoted it, before any round trip failed.
  suspended.cluster.wait_until("the demotion in the log",
                               [&] { return contains(suspended.agent->log(), "the lease deadline passed"); });
  const std::string log = suspended.agent->log();
  INFO("log:\n" << tail(log));
  const auto demoted = log.find("the lease deadline passed");
  REQUIRE(demoted != std::string::npos);
  CHECK(log.find("failed", 0) > demoted);
  CHECK(suspended.agent->get("/master") == 503);

  // Without the suspend: master on, with the same requests and the database as silent.
  control.cluster.hold_for("n1 to stay master without a suspend", Ms(3000),
                           [&] { return control.agent->get("/master") == 200; });
  CHECK(read_file(control.hooks_out) == "master 1\n");
}

// ---------------------------------------------------------------------------
// 2. A stalled stderr holds nothing up.

namespace {

// `lease-agent run` with stderr on `stderr_fd`, stdout to a file.
pid_t spawn_with_stderr(const std::vector<std::string>& args, int stderr_fd, const std::string& stdout_path) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const char* out_path = stdout_path.c_str();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || ::getppid() != parent) ::_exit(127);
    const int in = ::open("/dev/null", O_RDONLY);
    const int out = ::open(out_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (in < 0 || out < 0 || ::dup2(in, 0) < 0 || ::dup2(out, 1) < 0 || ::dup2(stderr_fd, 2) < 0) ::_exit(127);
    ::close_range(3, ~0U, 0);
    sigset_t empty;
    sigemptyset(&empty);
    ::sigprocmask(SIG_SETMASK, &empty, nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return pid;
}

int bytes_in_pipe(int fd) {
  int n = -1;
  REQUIRE(::ioctl(fd, FIONREAD, &n) == 0);
  return n;
}

}  // namespace

TEST_CASE("with stderr a full pipe nobody reads, a master cut off from its database still answers 503 "
          "and runs on-demote at its deadline, and SIGTERM still exits",
          "[log][process]") {
  Cluster c("robust-stall");
  ProxiedDb db;
  const std::string hooks_out = c.dir().file("hooks.out");

  // A small pipe, filled to the brim before the agent starts: its first line blocks.
  int fds[2];
  REQUIRE(::pipe2(fds, O_CLOEXEC) == 0);
  struct Close {
    int fd;
    ~Close() { ::close(fd); }
  } read_end{fds[0]}, write_end{fds[1]};
  const int capacity = ::fcntl(fds[1], F_SETPIPE_SZ, 4096);
  REQUIRE(capacity > 0);
  const int flags = ::fcntl(fds[1], F_GETFL);
  REQUIRE(::fcntl(fds[1], F_SETFL, flags | O_NONBLOCK) == 0);
  // Writes of more than PIPE_BUF bytes fill what is free; then EAGAIN: full.
  const std::string filler(static_cast<std::size_t>(capacity) + 1, 'x');
  for (int i = 0; i < 100; ++i)
    if (::write(fds[1], filler.data(), filler.size()) < 0) break;
  REQUIRE(::fcntl(fds[1], F_SETFL, flags) == 0);  // the agent's writes block, as on a stalled journald
  REQUIRE(bytes_in_pipe(fds[0]) == capacity);

  const int port = free_port();
  const pid_t pid = spawn_with_stderr(
      {agent_binary(), "run", "--dsn", db.dsn(), "--cluster", c.name(), "--node", "n1", "--ttl", "1s", "--renew",
       "250ms", "--http", "127.0.0.1:" + std::to_string(port), "-b", "n1.example:5432", "--on-promote",
       hook_cmd(hooks_out), "--on-demote", hook_cmd(hooks_out)},
      fds[1], c.dir().file("n1.out"));
  struct Kill {
    pid_t pid;
    bool done = false;
    ~Kill() {
      if (!done) {
        ::kill(pid, SIGKILL);
        wait_pid(pid, Ms(5000));
      }
    }
  } kill_guard{pid};

  c.wait_until("n1 to be master", [&] { return http_status(port, "/master") == 200; }, Ms(20000));
  c.wait_until("on-promote", [&] { return read_file(hooks_out) == "master 1\n"; });

  db.proxy.set_mode(FaultProxy::Mode::drop);
  c.wait_until("n1 to answer 503", [&] { return http_status(port, "/master") == 503; });
  c.wait_until("on-demote", [&] { return read_file(hooks_out) == "master 1\nstandby 1\n"; });
  CHECK(bytes_in_pipe(fds[0]) == capacity);  // stderr was stalled all along

  REQUIRE(::kill(pid, SIGTERM) == 0);
  const std::optional<int> status = wait_pid(pid, Ms(15000));
  kill_guard.done = status.has_value();
  REQUIRE(status.has_value());
  CHECK(*status == 0);
}

// ---------------------------------------------------------------------------
// 3. A refused password is fatal in any language.

namespace {

bool has_locale(const std::string& name) {
  const std::string list = [] {
    std::string out;
    if (FILE* p = ::popen("locale -a 2>/dev/null", "r")) {
      char buf[256];
      while (std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
      ::pclose(p);
    }
    return out;
  }();
  for (const std::string& l : lines_of(list))
    if (l == name) return true;
  return false;
}

// de_DE.UTF-8: made from the `locales` package's sources when missing (as root; the
// CI image gets it from scripts/install-deps.sh).
void ensure_german_locale() {
  if (has_locale("de_DE.utf8")) return;
  if (::geteuid() == 0) std::system("localedef -i de_DE -f UTF-8 de_DE.UTF-8 >/dev/null 2>&1");
  if (!has_locale("de_DE.utf8"))
    FAIL("the locale de_DE.UTF-8 is missing and could not be made: install the Debian package `locales` "
         "and run `localedef -i de_DE -f UTF-8 de_DE.UTF-8` as root (scripts/install-deps.sh does both)");
}

// A PostgreSQL server of its own (scripts/pg.sh), stopped and removed at the end.
struct OwnServer {
  OwnServer() {
    std::string tmpl = "/tmp/la-pg-XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) FAIL("mkdtemp: " << std::strerror(errno));
    dir = tmpl;
    const std::string cmd = "bash " LEASE_AGENT_SOURCE_DIR "/scripts/pg.sh start " + dir + " >" + dir +
                            ".start.log 2>&1";
    if (std::system(cmd.c_str()) != 0) FAIL("scripts/pg.sh start failed:\n" << read_file(dir + ".start.log"));
    for (const std::string& l : lines_of(read_file(dir + "/env")))
      if (l.rfind("export PGPORT=", 0) == 0) port = l.substr(14);
    REQUIRE_FALSE(port.empty());
  }
  ~OwnServer() {
    std::system(("bash " LEASE_AGENT_SOURCE_DIR "/scripts/pg.sh stop " + dir + " >/dev/null 2>&1").c_str());
    std::remove((dir + ".start.log").c_str());
  }
  std::string dsn(const std::string& user, const std::string& password) const {
    return "host=127.0.0.1 port=" + port + " dbname=lease_agent_test user=" + user +
           (password.empty() ? "" : " password=" + password);
  }
  std::string dir, port;
};

// The message of a failed connect, or "" when it connected.
std::string connect_error(const std::string& dsn) {
  PGconn* conn = PQconnectdb(dsn.c_str());
  const std::string msg = PQstatus(conn) == CONNECTION_OK ? "" : PQerrorMessage(conn);
  PQfinish(conn);
  return msg;
}

}  // namespace

TEST_CASE("a wrong password against a server that answers in German exits 3 with a line about "
          "authentication",
          "[process][auth]") {
  ensure_german_locale();
  OwnServer server;
  {
    pqxx::connection admin(server.dsn("postgres", ""));
    pqxx::nontransaction tx(admin);
    tx.exec("ALTER SYSTEM SET lc_messages = 'de_DE.UTF-8'");
    tx.exec("SELECT pg_reload_conf()");
  }
  // The premise: the server's refusal really is not in English (new backends read the
  // setting once the postmaster has reloaded).
  TempDir dir;
  std::string refusal;
  const auto until = SteadyClock::now() + Ms(10000);
  for (int i = 0; i < 1000 && SteadyClock::now() < until; ++i) {
    refusal = connect_error(server.dsn("lease_agent_pw", "wrong"));
    if (contains(refusal, "Passwort")) break;
    std::this_thread::sleep_for(kStep);
  }
  INFO("the server's refusal: " << refusal);
  REQUIRE(contains(refusal, "Passwort-Authentifizierung"));
  REQUIRE_FALSE(contains(refusal, "password authentication failed"));
  REQUIRE_FALSE(contains(refusal, "authentication"));

  const CommandResult r =
      run_command(dir, {"run", "--dsn", server.dsn("lease_agent_pw", "wrong"), "--cluster", "robust-german",
                        "--node", "n1", "--ttl", "2s", "--renew", "500ms", "--http",
                        "127.0.0.1:" + std::to_string(free_port())});
  INFO("stderr:\n" << r.err);
  CHECK(r.exit == 3);
  CHECK(contains(r.err, "Passwort-Authentifizierung"));
  CHECK(contains(r.err, "authentication"));
  CHECK(contains(r.err, "28P01"));
  CHECK_FALSE(contains(r.err, "password=wrong"));
}
