// The lease-agent binary as processes, against the real PostgreSQL of
// LEASE_AGENT_TEST_DSN: each test case in a cluster of its own, with its own
// loopback ports and a temp dir for the agents' logs. ttl=2s renew=500ms.
//
// No sleep synchronises anything: every wait polls for the event it awaits with a
// bounded deadline (Cluster::wait_until), and FAILs naming it. Cluster::hold_for
// is the only fixed-length window: an observation that something stays true.
#include <signal.h>
#include <sys/un.h>
#include <time.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <set>

#include "lease_store.h"
#include "process_support.h"

using namespace lease_agent_test;

namespace {

constexpr Ms kTtl{2000};

// Until the agent says its connection is ttl old (/status may_acquire): before that it
// starts no term (agent/election.h, on_connected).
void wait_may_acquire(Cluster& c, Agent& a) {
  c.wait_until(a.node() + " to be connected for ttl (/status may_acquire)", [&] {
    std::string body;
    return a.get("/status", &body) == 200 && nlohmann::json::parse(body).value("may_acquire", false);
  });
}

// n1, n2, n3 started in this order, each once the previous one answers; n1 master, and
// every agent's connection ttl old, so that a successor may take over at once.
struct Three {
  explicit Three(Cluster& c, const std::vector<AgentOptions>& opts = {})
      : n1(c.start_ready(opt(opts, 0, "n1"))),
        n2(c.start_ready(opt(opts, 1, "n2"))),
        n3(c.start_ready(opt(opts, 2, "n3"))) {
    c.wait_until("n1 to be master", [&] { return n1.get("/master") == 200; });
    for (Agent* a : {&n1, &n2, &n3}) wait_may_acquire(c, *a);
  }
  static AgentOptions opt(const std::vector<AgentOptions>& opts, std::size_t i, const char* node) {
    AgentOptions o = i < opts.size() ? opts[i] : AgentOptions{};
    if (o.node.empty()) o.node = node;
    return o;
  }
  Agent& n1;
  Agent& n2;
  Agent& n3;
};

// Waits until `who` is master both in lease_agent.master and on its /master, sampling
// every agent's /master in `order` at each step (never two 200s in one sample). An
// agent in `never` answering 200, or in the view, fails at once.
// `never_http` are only checked on /master (their node name may still be in the view
// from a previous life).
void wait_master(Cluster& c, Agent& who, const std::vector<Agent*>& order,
                 const std::vector<Agent*>& never = {}, const std::vector<Agent*>& never_http = {}) {
  c.wait_until(who.node() + " to be master (lease_agent.master and /master 200)", [&] {
    Agent* m = c.sample_masters(order);
    const Cluster::MasterRow row = c.master_row();
    for (Agent* a : never) {
      if (m == a) FAIL(a->node() << " answered 200 on /master\n" << c.logs());
      if (row.node == a->node()) FAIL("lease_agent.master shows " << a->node() << "\n" << c.logs());
    }
    for (Agent* a : never_http)
      if (m == a) FAIL(a->node() << " answered 200 on /master\n" << c.logs());
    return m == &who && row.node == who.node();
  });
}

nlohmann::json status_json(Cluster& c) {
  const CommandResult r =
      run_command(c.dir(), {"status", "--json", "--dsn", test_dsn(), "--cluster", c.name()});
  INFO("status --json stdout: " << r.out << "\nstderr: " << r.err);
  REQUIRE(r.exit == 0);
  return nlohmann::json::parse(r.out);
}

std::string role_in_status(const nlohmann::json& status, const std::string& node) {
  for (const auto& n : status.at("nodes"))
    if (n.at("node") == node) return n.at("role").get<std::string>();
  return "(absent)";
}

// The live nodes of the cluster in line order (registered_at, node): "n2,n3,n1".
std::string live_line(Cluster& c) {
  return c.query(
      "SELECT string_agg(node, ',' ORDER BY registered_at, node) FROM lease_agent.node WHERE cluster = " +
      sql_quote(c.name()) + " AND expires_at > clock_timestamp()");
}

// Exactly one line on stderr, and it contains `needle`.
void require_one_line_naming(const CommandResult& r, const std::string& needle) {
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(lines_of(r.err).size() == 1);
  CHECK((!r.err.empty() && r.err.back() == '\n'));
  CHECK(contains(r.err, needle));
}

// Seconds since the epoch of the first log line's "YYYY-MM-DDTHH:MM:SS" stamp, or -1.
long long first_log_stamp(const std::string& log) {
  std::tm tm{};
  if (log.size() < 19 || ::strptime(log.substr(0, 19).c_str(), "%Y-%m-%dT%H:%M:%S", &tm) == nullptr)
    return -1;
  return static_cast<long long>(::timegm(&tm));
}

}  // namespace

// ---------------------------------------------------------------------------
// 2. Order of start.

TEST_CASE("three agents started in order: the first is master, the others standby", "[process]") {
  Cluster c("proc-order");
  Three t(c);

  CHECK(t.n1.get("/master") == 200);
  CHECK(t.n2.get("/master") == 503);
  CHECK(t.n3.get("/master") == 503);
  CHECK(t.n1.get("/standby") == 503);
  CHECK(t.n2.get("/standby") == 200);
  CHECK(t.n3.get("/standby") == 200);
  CHECK(t.n1.get("/health") == 200);

  const Cluster::MasterRow m = c.master_row();
  CHECK(m.node == "n1");
  CHECK(m.address == t.n1.address());
  CHECK(m.epoch == 1);
}

// ---------------------------------------------------------------------------
// 3. Crash of the master.

TEST_CASE("kill -9 of the master: the second takes over, the third stays standby, never two 200s",
          "[process]") {
  Cluster c("proc-kill9");
  Three t(c);
  REQUIRE(c.master_row().epoch == 1);

  t.n1.signal(SIGKILL);
  CHECK(t.n1.wait_exit() == 128 + SIGKILL);

  const std::vector<Agent*> order{&t.n3, &t.n2, &t.n1};
  wait_master(c, t.n2, order, {&t.n3});

  const Cluster::MasterRow m = c.master_row();
  CHECK(m.node == "n2");
  CHECK(m.address == t.n2.address());
  CHECK(m.epoch == 2);
  // n3 stays a standby while n2 keeps the lease.
  c.hold_for("n2 master, n3 connected standby", kTtl,
             [&] { return c.sample_masters(order) == &t.n2 && t.n3.get("/standby") == 200; });
  CHECK(c.master_row().epoch == 2);
  CHECK(c.samples() > 10);
}

// ---------------------------------------------------------------------------
// 4. Clean stop of the master.

TEST_CASE("SIGTERM of the master: it hands the lease to the next in line, its registration is kept",
          "[process]") {
  Cluster c("proc-sigterm");
  Three t(c);

  t.n1.signal(SIGTERM);
  // Successor before predecessor in each sample (see Cluster::sample_masters).
  wait_master(c, t.n2, {&t.n3, &t.n2, &t.n1}, {&t.n3});
  CHECK(t.n1.wait_exit() == 0);
  CHECK(c.master_row().epoch == 2);

  const std::string old_log = t.n1.log();
  INFO("n1 log:\n" << old_log);
  CHECK(contains(old_log, "handed the lease to n2 (epoch 2) and left the cluster"));
  // n2 was handed the lease in n1's own transaction: master from the notification on.
  const std::string new_log = t.n2.log();
  INFO("n2 log:\n" << new_log);
  CHECK(contains(new_log, "acquired the lease at epoch 2 (handed to this node by the clean stop of the master"));
  // n3 did nothing but note the new version: its log has no line about it.
  CHECK_FALSE(contains(t.n3.log(), "released"));

  // The registration is kept, shown as gone.
  CHECK(c.query("SELECT count(*) FROM lease_agent.node WHERE cluster = " + sql_quote(c.name()) +
                " AND node = 'n1'") == "1");
  const nlohmann::json s = status_json(c);
  INFO("status: " << s.dump(2));
  CHECK(role_in_status(s, "n1") == "gone");
  CHECK(role_in_status(s, "n2") == "master");
  CHECK(role_in_status(s, "n3") == "standby");
  CHECK(s.at("master") == "n2");
}

// ---------------------------------------------------------------------------
// 5. A paused master.

TEST_CASE("SIGSTOP of the master past ttl, then SIGCONT: 503 at once on resume, no taking back",
          "[process]") {
  Cluster c("proc-sigstop");
  Three t(c);

  t.n1.signal(SIGSTOP);
  // n1 cannot answer while stopped: sample the others.
  wait_master(c, t.n2, {&t.n3, &t.n2}, {&t.n3});
  const long long epoch = c.master_row().epoch;
  CHECK(epoch == 2);

  // A request that is in n1's socket while it is stopped is answered after the resume.
  PendingRequest queued(t.n1.port(), "/master");

  t.n1.signal(SIGCONT);
  const int first = t.n1.get("/master");
  CHECK(first == 503);
  CHECK(queued.status(Ms(5000)) == 503);

  // n1 never answers 200 again, n2 stays master, never two 200s: for 2 * ttl.
  const std::vector<Agent*> order{&t.n3, &t.n2, &t.n1};
  c.hold_for("n2 master, n1 and n3 not", 2 * kTtl, [&] { return c.sample_masters(order) == &t.n2; });
  const Cluster::MasterRow m = c.master_row();
  CHECK(m.node == "n2");
  CHECK(m.epoch == epoch);
  // And n1 is back as a connected standby.
  c.wait_until("n1 to answer 200 on /standby after the resume", [&] { return t.n1.get("/standby") == 200; });
  CHECK(t.n1.running());
}

// ---------------------------------------------------------------------------
// 6. A restart joins the back of the line.

TEST_CASE("a restarted node registers again as the last in line", "[process]") {
  Cluster c("proc-restart");
  Three t(c);

  t.n1.signal(SIGTERM);
  wait_master(c, t.n2, {&t.n3, &t.n2, &t.n1}, {&t.n3});
  REQUIRE(t.n1.wait_exit() == 0);

  Agent& n1b = c.restart(t.n1);
  c.wait_until("the restarted n1 to answer 200 on /standby", [&] { return n1b.get("/standby") == 200; });
  CHECK(live_line(c) == "n2,n3,n1");

  t.n2.signal(SIGTERM);
  wait_master(c, t.n3, {&n1b, &t.n3, &t.n2}, {&n1b});
  CHECK(t.n2.wait_exit() == 0);
  CHECK(c.master_row().epoch == 3);
  CHECK(n1b.get("/master") == 503);
  CHECK(n1b.get("/standby") == 200);
}

// ---------------------------------------------------------------------------
// 7. Wall clocks far off.

TEST_CASE("agents whose wall clock is far off (libfaketime) elect and fail over like the others",
          "[process]") {
  const std::string lib = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";
  REQUIRE(::access(lib.c_str(), R_OK) == 0);
  const std::string faketime = GENERATE(as<std::string>{}, "-3d", "+2h");
  const long long offset_s = faketime == "-3d" ? -3 * 86400 : 2 * 3600;
  CAPTURE(faketime);

  Cluster c("proc-faketime");
  const std::vector<std::pair<std::string, std::string>> fake{
      {"LD_PRELOAD", lib}, {"FAKETIME", faketime}, {"DONT_FAKE_MONOTONIC", "1"}};
  AgentOptions faked;
  faked.env = fake;
  // n1 and n3 run with the wall clock off, n2 with the true one.
  const long long real_start = static_cast<long long>(::time(nullptr));
  Three t(c, {faked, AgentOptions{}, faked});
  REQUIRE(c.master_row().node == "n1");
  REQUIRE(c.master_row().epoch == 1);

  // The fake is in effect: n1 logs its wall clock, offset by the fake.
  const long long stamp = first_log_stamp(t.n1.log());
  INFO("n1 log:\n" << t.n1.log());
  CHECK(std::llabs(stamp - (real_start + offset_s)) < 120);
  CHECK(std::llabs(first_log_stamp(t.n2.log()) - real_start) < 120);

  // The faked master dies: the true-clock n2 takes over, the faked n3 waits.
  t.n1.signal(SIGKILL);
  CHECK(t.n1.wait_exit() == 128 + SIGKILL);
  wait_master(c, t.n2, {&t.n3, &t.n2, &t.n1}, {&t.n3});
  CHECK(c.master_row().epoch == 2);

  // The true-clock master dies: the faked n3 takes over.
  t.n2.signal(SIGKILL);
  CHECK(t.n2.wait_exit() == 128 + SIGKILL);
  wait_master(c, t.n3, {&t.n3, &t.n2});
  CHECK(c.master_row().epoch == 3);
  CHECK(c.master_row().address == t.n3.address());
  // The wall clock is no input: no clock-drift warning (that compares the database's
  // clock with the monotonic one) in the faked agents' logs.
  CHECK_FALSE(contains(t.n1.log(), "clock-drift"));
  CHECK_FALSE(contains(t.n3.log(), "clock-drift"));
}

// ---------------------------------------------------------------------------
// 8. Duplicate node name.

TEST_CASE("a second live agent with the same node name exits 3 and the first stays master", "[process]") {
  Cluster c("proc-dup");
  AgentOptions o;
  o.node = "dup-node";
  Agent& first = c.start_ready(o);
  c.wait_until("the first to be master", [&] { return first.get("/master") == 200; });

  Agent& second = c.spawn(o);
  CHECK(second.wait_exit() == 3);
  const std::string log = second.log();
  INFO("second's log:\n" << log);
  std::string line;
  for (const std::string& l : lines_of(log))
    if (contains(l, "held by another live agent")) line = l;
  CHECK(!line.empty());
  CHECK(contains(line, "dup-node"));

  CHECK(first.running());
  CHECK(first.get("/master") == 200);
  const Cluster::MasterRow m = c.master_row();
  CHECK(m.node == "dup-node");
  CHECK(m.epoch == 1);
  CHECK(m.address == first.address());
}

// ---------------------------------------------------------------------------
// 9. Bad input and the exit status table.

TEST_CASE("bad flag values exit 2 with one line naming the flag", "[process]") {
  TempDir dir;
  const std::string http = "127.0.0.1:" + std::to_string(free_port());
  const std::vector<std::string> base{
      "run",    "--dsn", test_dsn(), "--cluster", unique_cluster("proc-badflag"),
      "--node", "n1",    "--http",   http};
  struct Case {
    std::vector<std::string> args;
    std::string flag;
  };
  const std::vector<Case> cases{
      {{"--ttl", "5"}, "--ttl"},
      {{"--ttl", "10s", "--renew", "6s"}, "--renew"},
      {{"--http", "nonsense"}, "--http"},
      {{"--log-format", "xml"}, "--log-format"},
  };
  for (const Case& k : cases) {
    std::vector<std::string> args = base;
    args.insert(args.end(), k.args.begin(), k.args.end());
    const CommandResult r = run_command(dir, args);
    CAPTURE(k.flag);
    CHECK(r.exit == 2);
    require_one_line_naming(r, k.flag);
  }
}

TEST_CASE("config file errors exit 2 naming the file and line", "[process]") {
  TempDir dir;
  const std::string http = "127.0.0.1:" + std::to_string(free_port());

  SECTION("unknown setting") {
    const std::string path = dir.file("agent.xml");
    std::ofstream(path) << "<?xml version=\"1.0\"?>\n"
                           "<agent>\n"
                           "  <property name=\"cluster\">x</property>\n"
                           "  <property name=\"no-such-setting\">1</property>\n"
                           "</agent>\n";
    const CommandResult r =
        run_command(dir, {"run", "-c", path, "--dsn", test_dsn(), "--node", "n1", "--http", http});
    CHECK(r.exit == 2);
    require_one_line_naming(r, path + ":4");
    CHECK(contains(r.err, "no-such-setting"));
  }
  SECTION("missing file") {
    const std::string path = dir.file("missing.xml");
    const CommandResult r =
        run_command(dir, {"run", "-c", path, "--dsn", test_dsn(), "--node", "n1", "--http", http});
    CHECK(r.exit == 2);
    require_one_line_naming(r, path);
  }
}

TEST_CASE("unknown flag exits 2 with one line naming it", "[process]") {
  TempDir dir;
  const CommandResult r = run_command(dir, {"run", "--no-such-flag", "1"});
  CHECK(r.exit == 2);
  require_one_line_naming(r, "--no-such-flag");
}

TEST_CASE("unknown subcommand exits 2 with one line naming it", "[process]") {
  TempDir dir;
  const CommandResult r = run_command(dir, {"frobnicate"});
  CHECK(r.exit == 2);
  require_one_line_naming(r, "frobnicate");
}

TEST_CASE("authentication refused exits 3 with a line about authentication", "[process]") {
  Cluster c("proc-badpw");
  AgentOptions o;
  o.node = "n1";
  o.dsn = dsn_with({{"user", "lease_agent_pw"}, {"password", "wrong"}});
  Agent& a = c.spawn(o);
  CHECK(a.wait_exit() == 3);
  const std::string log = a.log();
  INFO("log:\n" << log);
  CHECK(contains(log, "authentication"));
  CHECK_FALSE(contains(log, "password=wrong"));
}

TEST_CASE("schema missing exits 3 with a line that says to run `lease-agent schema apply`", "[process]") {
  Cluster c("proc-noschema");
  const std::string db = "la_empty_" + std::to_string(::getpid());
  struct DropDb {
    std::string name;
    ~DropDb() {
      try {
        auto conn = connect_db();
        pqxx::nontransaction tx(*conn);
        tx.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
      } catch (...) {
      }
    }
  } drop{db};
  {
    auto conn = connect_db();
    pqxx::nontransaction tx(*conn);
    tx.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
    tx.exec("CREATE DATABASE " + db);
  }
  AgentOptions o;
  o.node = "n1";
  o.dsn = dsn_with({{"dbname", db}});
  Agent& a = c.spawn(o);
  CHECK(a.wait_exit() == 3);
  const std::string log = a.log();
  INFO("log:\n" << log);
  CHECK(contains(log, "run `lease-agent schema apply`"));
}

TEST_CASE("a database whose schema is newer than the agent's serves it, and the agent says so once",
          "[process]") {
  Cluster c("proc-newerschema");
  const std::string db = "la_newer_" + std::to_string(::getpid());
  struct DropDb {
    std::string name;
    ~DropDb() {
      try {
        auto conn = connect_db();
        pqxx::nontransaction tx(*conn);
        tx.exec("DROP DATABASE IF EXISTS " + name + " WITH (FORCE)");
      } catch (...) {
      }
    }
  } drop{db};
  {
    auto conn = connect_db();
    pqxx::nontransaction tx(*conn);
    tx.exec("DROP DATABASE IF EXISTS " + db + " WITH (FORCE)");
    tx.exec("CREATE DATABASE " + db);
  }
  const std::string dsn = dsn_with({{"dbname", db}});
  {
    lease_agent::StoreOptions so;
    so.dsn = dsn;
    so.cluster = "schema";
    so.node = "test";
    lease_agent::LeaseStore store(so);
    store.connect(false, false);
    store.apply_schema();
    pqxx::connection conn(dsn);
    pqxx::nontransaction tx(conn);
    // As a later release's `schema apply` leaves it: a higher version, this one's functions kept.
    tx.exec("UPDATE lease_agent.schema_info SET version = " + std::to_string(lease_agent::kSchemaVersion + 1));
  }
  AgentOptions o;
  o.node = "n1";
  o.dsn = dsn;
  Agent& a = c.start_ready(o);
  c.wait_until("n1 to be master", [&] { return a.get("/master") == 200; });
  const std::string log = a.log();
  INFO("log:\n" << log);
  const std::string line = "schema is version " + std::to_string(lease_agent::kSchemaVersion + 1) +
                           ", newer than this agent's " + std::to_string(lease_agent::kSchemaVersion);
  CHECK(contains(log, line));
  CHECK(log.find(line) == log.rfind(line));
  a.signal(SIGTERM);
  CHECK(a.wait_exit() == 0);
}

TEST_CASE("an unreachable database is waited out: no exit, /health 503, logged; SIGTERM exits 0",
          "[process]") {
  Cluster c("proc-unreach");
  AgentOptions o;
  o.node = "n1";
  o.dsn = dsn_with({{"host", "127.0.0.1"}, {"port", std::to_string(free_port())}});
  Agent& a = c.spawn(o);
  c.wait_until("the log to say the database is unreachable", [&] {
    if (a.poll_exit()) FAIL("the agent exited with status " << *a.exit_status() << "\n" << c.logs());
    return contains(a.log(), "unreachable");
  });
  c.wait_until("/health to answer 503", [&] { return a.get("/health") == 503; });
  // Still running, still unhealthy, never master, for more than ttl.
  c.hold_for("the agent keeps running with /health 503 and /master 503", kTtl + Ms(500),
             [&] { return !a.poll_exit() && a.get("/health") == 503 && a.get("/master") == 503; });
  a.signal(SIGTERM);
  CHECK(a.wait_exit() == 0);
}

// ---------------------------------------------------------------------------
// 10. Secrets.

TEST_CASE("the database password shows nowhere: cmdline, log, /status, check-config", "[process]") {
  Cluster c("proc-secret");
  {
    // Concurrent GRANTs on one object can fail ("tuple concurrently updated"): take turns.
    pqxx::work tx(c.db());
    tx.exec("SELECT pg_advisory_xact_lock(hashtext('lease-agent process_test grants'))");
    tx.exec("GRANT USAGE ON SCHEMA lease_agent TO lease_agent_pw");
    tx.exec("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA lease_agent TO lease_agent_pw");
    tx.commit();
  }
  const std::string secret = "pw-secret-42";
  AgentOptions o;
  o.node = "n1";
  o.dsn = dsn_with({{"user", "lease_agent_pw"}, {"password", secret}});
  REQUIRE(contains(o.dsn, secret));
  Agent& a = c.start_ready(o);
  c.wait_until("n1 to be master", [&] { return a.get("/master") == 200; });
  CHECK(c.master_row().node == "n1");

  std::string cmdline = read_file("/proc/" + std::to_string(a.pid()) + "/cmdline");
  std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
  INFO("cmdline: " << cmdline);
  CHECK(contains(cmdline, "--dsn"));
  CHECK_FALSE(contains(cmdline, secret));

  std::string status;
  CHECK(a.get("/status", &status) == 200);
  INFO("status: " << status);
  CHECK(contains(status, "\"n1\""));
  CHECK_FALSE(contains(status, secret));

  const CommandResult r = run_command(c.dir(), {"check-config", "--dsn", o.dsn, "--node", "n1"});
  INFO("check-config stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit == 0);
  CHECK_FALSE(contains(r.out + r.err, secret));
  CHECK(contains(r.out, "********"));

  a.signal(SIGTERM);
  CHECK(a.wait_exit() == 0);
  const std::string log = a.log();
  INFO("log:\n" << log);
  CHECK(contains(log, "released the lease"));
  CHECK_FALSE(contains(log, secret));
}

// ---------------------------------------------------------------------------
// 11. Hooks.

TEST_CASE("hooks: on-promote then on-demote, with the role, epoch and node", "[process]") {
  Cluster c("proc-hooks");
  const std::string out = c.dir().file("hooks.txt");
  const std::string cmd = "echo \"$LEASE_AGENT_ROLE $LEASE_AGENT_EPOCH $LEASE_AGENT_NODE\" >> '" + out + "'";
  AgentOptions o;
  o.node = "n1";
  o.extra_args = {"--on-promote", cmd, "--on-demote", cmd};
  Agent& a = c.start_ready(o);
  c.wait_until("the on-promote hook to write its line", [&] { return read_file(out) == "master 1 n1\n"; });

  a.signal(SIGTERM);
  CHECK(a.wait_exit() == 0);
  CHECK(read_file(out) == "master 1 n1\nstandby 1 n1\n");
  // on-demote ran before the lease was released.
  const std::string log = a.log();
  INFO("log:\n" << log);
  const auto demoted = log.find("hook on-demote exited");
  const auto released = log.find("released the lease");
  REQUIRE(demoted != std::string::npos);
  REQUIRE(released != std::string::npos);
  CHECK(demoted < released);
}

// A SIGTERM that arrives while a renewal is in flight: the answer of that renewal
// (this agent still holds the lease) must not promote the stopping agent again. To
// hold the renewal in flight, the test locks the cluster's lease row; the agent's
// lock_timeout (max(renew, ttl/4) = 2s here) is well above the time the test needs.
TEST_CASE("SIGTERM during an in-flight renewal: on-demote is the last hook, no promotion after it",
          "[process]") {
  Cluster c("proc-termrace");
  const std::string node = "race-" + std::to_string(::getpid());
  const std::string out = c.dir().file("hooks.txt");
  const std::string cmd = "echo \"$LEASE_AGENT_ROLE $LEASE_AGENT_EPOCH $LEASE_AGENT_NODE\" >> '" + out + "'";
  AgentOptions o;
  o.node = node;
  o.ttl = "8s";
  o.renew = "2s";
  o.extra_args = {"--on-promote", cmd, "--on-demote", cmd};
  Agent& a = c.start_ready(o);
  c.wait_until("the on-promote hook to write its line",
               [&] { return read_file(out) == "master 1 " + node + "\n"; });

  auto watcher = connect_db();
  auto blocked = [&] {
    pqxx::nontransaction tx(*watcher);
    return tx.exec("SELECT 1 FROM pg_stat_activity WHERE application_name = " +
                   tx.quote("lease-agent " + node) + " AND wait_event_type = 'Lock'")
               .size() == 1;
  };
  {
    pqxx::work lock(c.db());
    lock.exec("SELECT 1 FROM lease_agent.lease WHERE cluster = " + lock.quote(c.name()) + " FOR UPDATE");
    c.wait_until("the agent's renewal to wait for the lease row lock", blocked);
    a.signal(SIGTERM);
    c.wait_until("the on-demote hook to write its line",
                 [&] { return read_file(out) == "master 1 " + node + "\nstandby 1 " + node + "\n"; });
    CHECK(a.get("/master") == 503);
    REQUIRE(blocked());  // still in flight: the test did not wait past lock_timeout
    lock.commit();       // the renewal goes through: the agent still holds the lease
  }
  CHECK(a.wait_exit() == 0);
  const std::string log = a.log();
  INFO("log:\n" << log);
  CHECK(read_file(out) == "master 1 " + node + "\nstandby 1 " + node + "\n");
  std::size_t promotions = 0;
  for (const std::string& l : lines_of(log))
    if (contains(l, "event=promote")) ++promotions;
  CHECK(promotions == 1);
  CHECK(contains(log, "released the lease"));
}

TEST_CASE("a slow hook does not hold up the heartbeat and is killed at hook-timeout", "[process]") {
  // 500ms: killed soon after it starts; 4s: it runs for two ttl before it is killed.
  const std::string timeout = GENERATE(as<std::string>{}, "500ms", "4s");
  CAPTURE(timeout);
  Cluster c("proc-slowhook");
  AgentOptions o;
  o.node = "n1";
  o.extra_args = {"--on-promote", "sleep 30", "--hook-timeout", timeout};
  Agent& a = c.start_ready(o);
  c.wait_until("n1 to be master", [&] { return a.get("/master") == 200; });
  c.wait_until("the hook to start", [&] { return contains(a.log(), "hook on-promote started"); });

  // Master for 3 * ttl: the renewals go on while the hook runs and is killed.
  c.hold_for("n1 answers 200 on /master", 3 * kTtl, [&] { return a.get("/master") == 200; });
  CHECK(c.master_row().epoch == 1);
  c.wait_until("the log to say the hook was killed", [&] {
    const std::string log = a.log();
    return contains(log, "still running after hook-timeout " + timeout) &&
           contains(log, "hook on-promote exited with status");
  });
  const std::string log = a.log();
  INFO("log:\n" << log);
  CHECK(contains(log, "killed by signal"));
  a.signal(SIGTERM);
  CHECK(a.wait_exit() == 0);
}

// ---------------------------------------------------------------------------
// 12. HEAD.

TEST_CASE("HEAD /master answers like GET", "[process]") {
  Cluster c("proc-head");
  Agent& n1 = c.start_ready("n1");
  Agent& n2 = c.start_ready("n2");
  c.wait_until("n1 to be master", [&] { return n1.get("/master") == 200; });
  CHECK(n1.head("/master") == 200);
  CHECK(n2.get("/master") == 503);
  CHECK(n2.head("/master") == 503);
}

// ---------------------------------------------------------------------------
// 13. Standalone.

TEST_CASE("active=false runs without a database, always master, with a warning", "[process]") {
  Cluster c("proc-standalone");
  AgentOptions o;
  o.node = "solo";
  o.dsn = dsn_with({{"host", "127.0.0.1"}, {"port", std::to_string(free_port())}});
  o.extra_args = {"--active", "false"};
  Agent& a = c.spawn(o);
  c.wait_until("the standalone agent to answer 200 on /master", [&] {
    if (a.poll_exit()) FAIL("exited with status " << *a.exit_status() << "\n" << c.logs());
    return a.get("/master") == 200;
  });
  const std::string log = a.log();
  INFO("log:\n" << log);
  bool warned = false;
  for (const std::string& l : lines_of(log))
    if (contains(l, "warning") && contains(l, "active=false")) warned = true;
  CHECK(warned);
  CHECK(c.query("SELECT count(*) FROM lease_agent.node WHERE cluster = " + sql_quote(c.name())) == "0");
  a.signal(SIGTERM);
  CHECK(a.wait_exit() == 0);
}

// ---------------------------------------------------------------------------
// Beyond the brief's list: cases of INTERFACE.md / DESIGN.md met on the way.

TEST_CASE("a node restarted right after kill -9 waits for its previous life, then joins the back",
          "[process]") {
  Cluster c("proc-crashrestart");
  Three t(c);

  t.n1.signal(SIGKILL);
  REQUIRE(t.n1.wait_exit() == 128 + SIGKILL);
  // Its old registration is still live: the new process must neither exit 3 (that
  // process is dead, not a live duplicate) nor inherit the lease of its previous life.
  Agent& n1b = c.restart(t.n1);
  wait_master(c, t.n2, {&t.n3, &t.n2, &n1b}, {&t.n3}, {&n1b});
  CHECK(c.master_row().epoch == 2);  // the first acquisition after the crash went to n2
  c.wait_until("the restarted n1 to register at the back of the line", [&] {
    if (n1b.poll_exit())
      FAIL("the restarted n1 exited with status " << *n1b.exit_status() << "\n" << c.logs());
    return live_line(c) == "n2,n3,n1";
  });

  t.n2.signal(SIGTERM);
  wait_master(c, t.n3, {&n1b, &t.n3, &t.n2}, {&n1b});
  CHECK(t.n2.wait_exit() == 0);
  CHECK(n1b.running());
  CHECK(n1b.get("/standby") == 200);
}

TEST_CASE("GET /metrics answers in the Prometheus text format", "[process]") {
  Cluster c("proc-metrics");
  Agent& a = c.start_ready("n1");
  c.wait_until("n1 to be master", [&] { return a.get("/master") == 200; });
  std::string body;
  CHECK(a.get("/metrics", &body) == 200);
  INFO("body: " << body);
  CHECK(contains(body, "# TYPE "));
}

// ---------------------------------------------------------------------------
// 14. Switchover: every row of INTERFACE.md's outcome table.

namespace {

CommandResult switchover(Cluster& c, const std::vector<std::string>& args) {
  std::vector<std::string> all{"switchover", "--dsn", test_dsn(), "--cluster", c.name(), "--ttl", "2s",
                               "--renew", "500ms"};
  all.insert(all.end(), args.begin(), args.end());
  return run_command(c.dir(), all);
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  f << text;
  REQUIRE(f.good());
}

std::string join_messages(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& m : v) s += "[" + m + "] ";
  return s;
}

std::string hooks_cmd(const std::string& out) {
  return "echo \"$LEASE_AGENT_NODE $LEASE_AGENT_ROLE $LEASE_AGENT_EPOCH\" >> '" + out + "'";
}

}  // namespace

TEST_CASE("switchover --to NODE: the master stops first, NODE is master at once, the command says so",
          "[process][switchover]") {
  Cluster c("proc-switchover");
  const std::string out = c.dir().file("hooks.txt");
  AgentOptions o;
  o.extra_args = {"--on-promote", hooks_cmd(out), "--on-demote", hooks_cmd(out)};
  Three t(c, {o, o, o});
  c.wait_until("n1's on-promote", [&] { return read_file(out) == "n1 master 1\n"; });

  const CommandResult r = switchover(c, {"--to", "n3", "--from", "n1"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err << "\n" << c.logs());
  REQUIRE(r.exit == 0);
  CHECK(contains(r.out, "switchover: n3 is master of " + c.name() + " at epoch 2, "));
  CHECK(contains(r.out, " ms after the request"));
  CHECK(lines_of(r.out).size() == 1);
  wait_master(c, t.n3, {&t.n1, &t.n2, &t.n3}, {&t.n2});
  c.wait_until("n1 to be a standby again", [&] { return t.n1.get("/standby") == 200; });
  // The old master's on-demote (with the epoch it held) came before the new one's on-promote.
  c.wait_until("n3's on-promote", [&] { return contains(read_file(out), "n3 master 2"); });
  CHECK(read_file(out) == "n1 master 1\nn1 standby 1\nn3 master 2\n");
  for (Agent* a : {&t.n1, &t.n2, &t.n3}) CHECK(a->running());
  const std::string log = t.n1.log();
  CHECK(contains(log, "a switchover asks to hand the lease to n3"));
  CHECK(contains(log, "handed the lease over to n3"));
}

TEST_CASE("switchover without --to hands over to the next in line", "[process][switchover]") {
  Cluster c("proc-switchover-next");
  Three t(c);
  const CommandResult r = switchover(c, {});
  INFO("stdout: " << r.out << "\nstderr: " << r.err << "\n" << c.logs());
  REQUIRE(r.exit == 0);
  CHECK(contains(r.out, "switchover: n2 is master of " + c.name()));
  wait_master(c, t.n2, {&t.n1, &t.n2, &t.n3}, {&t.n3});
}

TEST_CASE("switchover to the node that already is master: exit 0, nothing changes", "[process][switchover]") {
  Cluster c("proc-switchover-same");
  Three t(c);
  const CommandResult r = switchover(c, {"--to", "n1"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit == 0);
  CHECK(contains(r.out, "n1 already is master of " + c.name() + " at epoch 1; nothing changes"));
  CHECK(c.master_row().epoch == 1);
  CHECK(t.n1.get("/master") == 200);
}

TEST_CASE("switchover refusals exit 3 with one line naming which and who is master", "[process][switchover]") {
  Cluster c("proc-switchover-refused");
  Three t(c);
  SECTION("an unknown node") {
    const CommandResult r = switchover(c, {"--to", "n9"});
    CHECK(r.exit == 3);
    require_one_line_naming(r, "node n9 is unknown in cluster " + c.name() + " (the master is n1 at epoch 1)");
  }
  SECTION("a gone node") {
    t.n3.signal(SIGTERM);
    REQUIRE(t.n3.wait_exit() == 0);
    const CommandResult r = switchover(c, {"--to", "n3"});
    CHECK(r.exit == 3);
    require_one_line_naming(r, "node n3 of cluster " + c.name() + " is gone, not a live standby");
    require_one_line_naming(r, "the master is n1 at epoch 1");
  }
  SECTION("--from is not the master") {
    const CommandResult r = switchover(c, {"--to", "n3", "--from", "n2"});
    CHECK(r.exit == 3);
    require_one_line_naming(r, "node n2 is not the master of cluster " + c.name() + " (the master is n1 at epoch 1)");
  }
  bool lease_ran_out = false;
  SECTION("no master now") {
    lease_ran_out = true;
    for (Agent* a : {&t.n1, &t.n2, &t.n3}) a->signal(SIGSTOP);  // the lease runs out, nobody takes it
    c.wait_until("no master in lease_agent.master", [&] { return c.master_row().node.empty(); });
    const CommandResult r = switchover(c, {"--to", "n3"});
    for (Agent* a : {&t.n1, &t.n2, &t.n3}) a->signal(SIGCONT);
    CHECK(r.exit == 3);
    require_one_line_naming(r, "no master in cluster " + c.name() + " now");
  }
  SECTION("bad usage") {
    const CommandResult r = switchover(c, {"--to", "n2", "--timeout", "soon"});
    CHECK(r.exit == 2);
    require_one_line_naming(r, "--timeout");
  }
  // A refusal changes nothing (where the lease did not run out on purpose).
  if (!lease_ran_out) {
    const Cluster::MasterRow m = c.master_row();
    CHECK(m.node == "n1");
    CHECK(m.epoch == 1);
  }
}

TEST_CASE("switchover to a node that froze: exit 3 at --timeout, and a master again within ttl", "[process][switchover]") {
  Cluster c("proc-switchover-frozen");
  Three t(c);
  t.n2.signal(SIGSTOP);  // still registered (live for ttl), but it will not take the lease
  const CommandResult r = switchover(c, {"--to", "n2", "--timeout", "1s"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err << "\n" << c.logs());
  CHECK(r.exit == 3);
  require_one_line_naming(r, "switchover: n2 did not take the lease of " + c.name() + " within 1s");
  // The lease was handed to n2 (epoch 2), which never renews it: ttl after the hand-off
  // the first in line (n1, whose process lives on) takes it over as after a crash
  // (epoch 3). n2 never answers 200.
  wait_master(c, t.n1, {&t.n1, &t.n3}, {}, {});
  CHECK(c.master_row().epoch == 3);
  t.n2.signal(SIGCONT);
  c.hold_for("n2 to stay a standby after it resumed", Ms(500), [&] { return t.n2.get("/master") != 200; });
}

TEST_CASE("handover-delay: on a clean stop the master answers 503 that long before it releases",
          "[process][switchover]") {
  Cluster c("proc-handover-delay");
  AgentOptions o;
  o.extra_args = {"--handover-delay", "400ms"};
  Three t(c, {o, o, o});
  t.n1.signal(SIGTERM);
  // A moment when neither n1 nor n2 answers 200: n1 has stopped serving, n2 not begun.
  c.wait_until("a moment with no master on /master, n1 still running", [&] {
    return t.n1.running() && t.n1.get("/master") == 503 && t.n2.get("/master") == 503 &&
           c.master_row().node == "n1";
  });
  wait_master(c, t.n2, {&t.n1, &t.n2, &t.n3}, {&t.n3});
  CHECK(t.n1.wait_exit() == 0);
  const std::string log = t.n1.log();
  INFO(log);
  CHECK(contains(log, "handed the lease to n2"));
}

TEST_CASE("a master that finds its node name taken by another live agent runs on-demote, then exits 3",
          "[process]") {
  Cluster c("proc-dup-master");
  const std::string out = c.dir().file("hooks.txt");
  AgentOptions o;
  o.node = "n1";
  o.extra_args = {"--on-promote", hooks_cmd(out), "--on-demote", hooks_cmd(out)};
  Agent& a = c.start_ready(o);
  c.wait_until("n1's on-promote", [&] { return read_file(out) == "n1 master 1\n"; });
  // Another process registers the name (as a second agent whose row moved would).
  c.query("UPDATE lease_agent.node SET incarnation = 'intruder', heartbeat_at = clock_timestamp(), "
          "expires_at = clock_timestamp() + interval '1 minute' WHERE cluster = " + sql_quote(c.name()) +
          " AND node = 'n1' RETURNING node");
  CHECK(a.wait_exit() == 3);
  CHECK(read_file(out) == "n1 master 1\nn1 standby 1\n");
  CHECK(contains(a.log(), "held by another live agent"));
}

TEST_CASE("a master frozen past ttl runs on-demote with the epoch it held, not the successor's", "[process]") {
  Cluster c("proc-demote-epoch");
  const std::string out = c.dir().file("hooks.txt");
  AgentOptions o;
  o.node = "n1";
  o.extra_args = {"--on-promote", hooks_cmd(out), "--on-demote", hooks_cmd(out)};
  Agent& n1 = c.start_ready(o);
  Agent& n2 = c.start_ready("n2");
  wait_may_acquire(c, n2);
  c.wait_until("n1's on-promote", [&] { return read_file(out) == "n1 master 1\n"; });
  n1.signal(SIGSTOP);
  c.wait_until("n2 master at epoch 2", [&] {
    const Cluster::MasterRow m = c.master_row();
    return m.node == "n2" && m.epoch == 2;
  });
  n1.signal(SIGCONT);
  c.wait_until("n1's on-demote", [&] { return read_file(out) == "n1 master 1\nn1 standby 1\n"; });
  CHECK(n1.running());
}

TEST_CASE("a malformed dsn or one with an unknown keyword exits 2 before anything starts", "[process]") {
  TempDir dir;
  const std::string http = "127.0.0.1:" + std::to_string(free_port());
  // Malformed, an unknown keyword, then values that libpq itself refuses only when it
  // connects (which would be retried for ever).
  for (const std::string& dsn :
       {std::string("host='unterminated"), std::string("host=127.0.0.1 colour=blue"), std::string("postgresql://[::1"),
        std::string("host=127.0.0.1 port=abc"), std::string("host=127.0.0.1 sslmode=bogus"),
        std::string("host=127.0.0.1 connect_timeout=abc"), std::string("host=127.0.0.1 target_session_attrs=bogus"),
        std::string("host=127.0.0.1,127.0.0.2 port=1,2,3"), std::string("hostaddr=localhost")}) {
    CAPTURE(dsn);
    for (const std::string& command : {std::string("check-config"), std::string("run")}) {
      CAPTURE(command);
      const CommandResult r =
          run_command(dir, {command, "--dsn", dsn, "--cluster", unique_cluster("proc-baddsn"), "--node", "n1",
                            "--http", http});
      CHECK(r.exit == 2);
      require_one_line_naming(r, "--dsn");
    }
  }
}

TEST_CASE("a bad connection option from libpq's environment (PGPORT, PGSSLMODE) exits 2 naming the variable",
          "[process]") {
  TempDir dir;
  const std::string http = "127.0.0.1:" + std::to_string(free_port());
  for (const auto& [variable, value] : {std::pair<std::string, std::string>{"PGPORT", "abc"}, {"PGSSLMODE", "bogus"}}) {
    CAPTURE(variable);
    for (const std::string& command : {std::string("check-config"), std::string("run")}) {
      CAPTURE(command);
      const CommandResult r = run_command(
          dir, {command, "--dsn", "host=127.0.0.1", "--cluster", unique_cluster("proc-badenv"), "--node", "n1", "--http", http},
          Ms(15000), {{variable, value}});
      CHECK(r.exit == 2);
      require_one_line_naming(r, "(from " + variable + ")");
    }
  }
}

TEST_CASE("a role without access to schema lease_agent exits 3 with a line saying what to grant", "[process]") {
  Cluster c("proc-noaccess");
  {
    // Concurrent role changes can fail ("tuple concurrently updated"): take turns.
    pqxx::work tx(c.db());
    tx.exec("SELECT pg_advisory_xact_lock(hashtext('lease-agent process_test grants'))");
    tx.exec("DO $$BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'lease_agent_noaccess') THEN "
            "CREATE ROLE lease_agent_noaccess LOGIN; END IF; END$$");
    tx.commit();
  }
  AgentOptions o;
  o.node = "n1";
  o.dsn = dsn_with({{"user", "lease_agent_noaccess"}});
  Agent& a = c.spawn(o);
  CHECK(a.wait_exit() == 3);
  const std::string log = a.log();
  INFO("log:\n" << log);
  CHECK(contains(log, "permission denied"));
  CHECK(contains(log, "grant the agent's role access to schema lease_agent"));
}

TEST_CASE("command-line errors never echo a password; check-config masks every form of it", "[process]") {
  TempDir dir;
  const std::string secret = "s3?cret-77";
  struct Case {
    std::vector<std::string> args;
    std::string names;
  };
  const std::vector<Case> cases{
      // CLI11 quotes arguments it did not expect, and the value of a flag it could not take.
      {{"run", "--dsn", "host=db password=" + secret, "extra", "password=" + secret}, "not expected"},
      {{"run", "--dsn=postgresql://app:" + secret + "@db/app", "--ttl"}, "--ttl"},
      {{"check-config", "--dsn", "postgresql://app:" + secret + "@db/app", "unexpected"}, "unexpected"},
      {{"check-config", "--dsn", "host=db sslpassword=" + secret, "--bogus", "sslpassword=" + secret}, "--bogus"},
  };
  for (const Case& k : cases) {
    CAPTURE(k.names);
    const CommandResult r = run_command(dir, k.args);
    CHECK(r.exit == 2);
    require_one_line_naming(r, k.names);
    CHECK_FALSE(contains(r.out + r.err, "cret-77"));
  }
  // check-config masks a URI password that holds '?' or '#', and an sslpassword.
  for (const std::string& dsn : {"postgresql://app:" + secret + "@db/app", std::string("postgresql://app:s3#cret-77@db/app"),
                                 "host=db sslpassword=" + secret, "postgresql://db/app?sslpassword=" + secret}) {
    CAPTURE(dsn);
    const CommandResult r = run_command(dir, {"check-config", "--dsn", dsn, "--node", "n1"});
    CHECK(r.exit == 0);
    CHECK_FALSE(contains(r.out + r.err, "cret-77"));
    CHECK(contains(r.out, "********"));
  }
}

TEST_CASE("check-config prints one line per setting, a multi-line hook command escaped", "[process]") {
  TempDir dir;
  const std::string path = dir.file("agent.xml");
  std::ofstream(path) << "<lease-agent>\n  <property name=\"on-promote\">echo up\n    &amp;&amp; logger\tpromoted</property>\n"
                         "</lease-agent>\n";
  const CommandResult r = run_command(dir, {"check-config", "-c", path, "--node", "n1"});
  INFO("stdout: " << r.out << "\nstderr: " << r.err);
  CHECK(r.exit == 0);
  CHECK(lines_of(r.out).size() == 13);  // the settings of INTERFACE.md
  CHECK(contains(r.out, "on-promote = echo up\\n    && logger\\tpromoted\n"));
}

TEST_CASE("switchover --to or --from that cannot be a node name exits 2 naming the flag", "[process][switchover]") {
  TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases{
      {{"--to", ""}, "--to: must not be empty"},
      {{"--from", ""}, "--from: must not be empty"},
      {{"--to", "a\xff"}, "--to: is not valid UTF-8"},
      {{"--to", std::string(64, 'n')}, "--to: '" + std::string(64, 'n') + "' is longer than 63 bytes"},
  };
  for (const auto& [flags, message] : cases) {
    CAPTURE(message);
    std::vector<std::string> args{"switchover", "--dsn", test_dsn(), "--cluster", unique_cluster("proc-swbad")};
    args.insert(args.end(), flags.begin(), flags.end());
    const CommandResult r = run_command(dir, args);
    CHECK(r.exit == 2);
    require_one_line_naming(r, message);
  }
}

TEST_CASE("log-format json: every line is JSON, epochs and durations are numbers; errors before the start too",
          "[process]") {
  Cluster c("proc-json-log");
  AgentOptions o;
  o.node = "n1";
  o.extra_args = {"--log-format", "json"};
  Agent& a = c.start_ready(o);
  c.wait_until("n1 master", [&] { return a.get("/master") == 200; });
  a.signal(SIGTERM);
  REQUIRE(a.wait_exit() == 0);
  bool saw_promotion = false;
  for (const std::string& line : lines_of(a.log())) {
    CAPTURE(line);
    nlohmann::json j;
    REQUIRE_NOTHROW(j = nlohmann::json::parse(line));
    CHECK(j["ts"].is_string());
    CHECK(j["level"].is_string());
    if (j.contains("epoch")) CHECK(j["epoch"].is_number_integer());
    if (j.contains("ttl_ms")) CHECK(j["ttl_ms"].is_number());
    if (j.value("event", "") == "promote") {
      saw_promotion = true;
      CHECK(j["epoch"] == 1);
    }
  }
  CHECK(saw_promotion);

  // A bad setting, reported before the daemon starts: still one JSON line.
  const CommandResult r = run_command(c.dir(), {"run", "--log-format", "json", "--ttl", "5", "--dsn", test_dsn()});
  CHECK(r.exit == 2);
  REQUIRE(lines_of(r.err).size() == 1);
  nlohmann::json j;
  REQUIRE_NOTHROW(j = nlohmann::json::parse(r.err));
  CHECK(j["level"] == "error");
  CHECK(j["command"] == "run");
  CHECK(j["msg"].get<std::string>().find("--ttl") != std::string::npos);
  // A command line that does not parse (an unknown flag) follows --log-format json too.
  const CommandResult u = run_command(c.dir(), {"run", "--log-format", "json", "--no-such-flag", "1"});
  CHECK(u.exit == 2);
  REQUIRE(lines_of(u.err).size() == 1);
  REQUIRE_NOTHROW(j = nlohmann::json::parse(u.err));
  CHECK(j["command"] == "run");
  CHECK(j["msg"].get<std::string>().find("--no-such-flag") != std::string::npos);
  // The same from the config file's log-format.
  const std::string cfg = c.dir().file("json.xml");
  write_file(cfg, "<agent><property name=\"log-format\">json</property><property name=\"ttl\">5</property></agent>\n");
  const CommandResult f = run_command(c.dir(), {"run", "-c", cfg, "--dsn", test_dsn()});
  CHECK(f.exit == 2);
  REQUIRE(lines_of(f.err).size() == 1);
  REQUIRE_NOTHROW(j = nlohmann::json::parse(f.err));
  CHECK(j["msg"].get<std::string>().find("json.xml:1: ttl") != std::string::npos);
}

// systemd's notify protocol, with a socket of the test's own as NOTIFY_SOCKET.
TEST_CASE("under systemd: READY=1 once registered, STATUS with role and epoch, WATCHDOG=1, STOPPING=1", "[process]") {
  Cluster c("proc-systemd");
  const std::string path = c.dir().file("notify.sock");
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(path.size() < sizeof addr.sun_path);
  std::strcpy(addr.sun_path, path.c_str());
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  std::vector<std::string> got;
  // Reads datagrams until one contains `what` (bounded by time and count).
  auto await_message = [&](const std::string& what) {
    const auto until = SteadyClock::now() + Ms(10000);
    for (int i = 0; i < 10000 && SteadyClock::now() < until; ++i) {
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 100) <= 0) continue;
      char buf[4096];
      const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
      if (n <= 0) continue;
      got.emplace_back(buf, static_cast<size_t>(n));
      if (contains(got.back(), what)) return true;
    }
    return false;
  };
  AgentOptions o;
  o.node = "n1";
  o.env = {{"NOTIFY_SOCKET", path}, {"WATCHDOG_USEC", "1000000"}};
  Agent& a = c.spawn(o);
  INFO("messages so far: " << join_messages(got));
  REQUIRE(await_message("READY=1"));
  // READY=1 came once it was registered.
  CHECK(c.query("SELECT count(*) FROM lease_agent.node WHERE cluster = " + sql_quote(c.name()) + " AND node = 'n1'") == "1");
  REQUIRE(await_message("STATUS=master"));
  CHECK(contains(got.back(), "epoch 1"));
  CHECK(await_message("WATCHDOG=1"));
  CHECK(await_message("WATCHDOG=1"));  // again: a ping of the deadline timer, not a one-off
  a.signal(SIGTERM);
  CHECK(await_message("STOPPING=1"));
  CHECK(a.wait_exit() == 0);
  ::close(fd);
}

TEST_CASE("status: heartbeat age, stale and gone nodes flagged, lease time left, --watch, an empty cluster",
          "[process][status]") {
  Cluster c("proc-status");
  Agent& n1 = c.start_ready("n1");
  Agent& n2 = c.start_ready("n2");
  c.wait_until("n1 master", [&] { return n1.get("/master") == 200; });

  nlohmann::json s = status_json(c);
  INFO("status: " << s.dump(2));
  CHECK(s.at("master") == "n1");
  CHECK(s.at("epoch") == 1);
  CHECK(s.at("lease_left_ms").get<long long>() > 0);
  CHECK(s.at("lease_left_ms").get<long long>() <= kTtl.count());
  for (const auto& n : s.at("nodes")) {
    CHECK(n.at("state") == "ok");
    CHECK(n.at("heartbeat_age_ms").is_number_integer());
  }

  // A standby that stops heartbeating: stale after half its ttl, gone after its ttl.
  n2.signal(SIGSTOP);
  auto state_of_n2 = [&] {
    const nlohmann::json now = status_json(c);  // kept: the loop refers into it
    for (const auto& n : now.at("nodes"))
      if (n.at("node") == "n2") return n.at("state").get<std::string>();
    return std::string("missing");
  };
  c.wait_until("n2 flagged stale", [&] { return state_of_n2() == "stale"; });
  c.wait_until("n2 flagged gone", [&] { return state_of_n2() == "gone"; });
  const CommandResult text = run_command(c.dir(), {"status", "--dsn", test_dsn(), "--cluster", c.name()});
  CHECK(text.exit == 0);
  INFO("status text: " << text.out);
  CHECK(contains(text.out, "master n1, epoch 1, lease "));
  CHECK(contains(text.out, "gone"));
  n2.signal(SIGCONT);

  // --watch redraws until SIGINT, then exits 0.
  const std::string out = c.dir().file("watch.out");
  const pid_t w = spawn_process(
      {agent_binary(), "status", "--watch", "100ms", "--dsn", test_dsn(), "--cluster", c.name()}, {}, out,
      c.dir().file("watch.err"));
  c.wait_until("three redraws of status --watch", [&] {
    const std::string o = read_file(out);
    size_t count = 0;
    for (size_t p = o.find("cluster " + c.name()); p != std::string::npos; p = o.find("cluster " + c.name(), p + 1))
      ++count;
    return count >= 3;
  });
  REQUIRE(::kill(w, SIGINT) == 0);
  const std::optional<int> st = wait_pid(w, Ms(5000));
  REQUIRE(st.has_value());
  CHECK(*st == 0);

  // A cluster no agent registered in.
  const CommandResult empty = run_command(c.dir(), {"status", "--dsn", test_dsn(), "--cluster", c.name() + "-none"});
  CHECK(empty.exit == 0);
  CHECK(contains(empty.out, "has no node"));
  const CommandResult bad = run_command(c.dir(), {"status", "--watch", "often", "--dsn", test_dsn()});
  CHECK(bad.exit == 2);
  require_one_line_naming(bad, "--watch");
}

// ---------------------------------------------------------------------------
// Server lives and the line of succession across an outage (schema 4).

namespace {

bool may_acquire_of(Agent& a, bool* answered = nullptr) {
  std::string body;
  const bool ok = a.get("/status", &body) == 200;
  if (answered) *answered = ok;
  return ok && nlohmann::json::parse(body).value("may_acquire", false);
}

// The pids of the sessions of the cluster's agents (application_name 'lease-agent <node>').
std::set<std::string> agent_sessions(Cluster& c, const std::vector<Agent*>& agents) {
  std::string names;
  for (Agent* a : agents) names += (names.empty() ? "" : ",") + sql_quote("lease-agent " + a->node());
  const std::string pids =
      c.query("SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE application_name IN (" + names + ")");
  std::set<std::string> out;
  std::istringstream in(pids);
  for (std::string p; std::getline(in, p, ',');)
    if (!p.empty()) out.insert(p);
  return out;
}

// PostgreSQL's postmaster and its children, stopped (SIGSTOP) for as long as this
// lives: a frozen database host. Resumed in the destructor whatever happens.
class FrozenDatabase {
 public:
  FrozenDatabase() {
    const char* dir = std::getenv("LEASE_AGENT_TEST_PGDIR");
    REQUIRE(dir != nullptr);  // scripts/pg.sh's directory
    std::ifstream in(std::string(dir) + "/data/postmaster.pid");
    pid_t pm = 0;
    REQUIRE((in >> pm));
    pids_.push_back(pm);
    for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
      const std::string name = entry.path().filename();
      if (name.find_first_not_of("0123456789") != std::string::npos) continue;
      std::ifstream stat(entry.path() / "stat");
      std::string line;
      std::getline(stat, line);
      const auto close = line.rfind(')');
      if (close == std::string::npos) continue;
      std::istringstream rest(line.substr(close + 2));
      char state;
      pid_t ppid = 0;
      rest >> state >> ppid;
      if (ppid == pm) pids_.push_back(std::stoi(name));
    }
    for (pid_t p : pids_) ::kill(p, SIGSTOP);
  }
  ~FrozenDatabase() {
    for (pid_t p : pids_) ::kill(p, SIGCONT);
  }
  FrozenDatabase(const FrozenDatabase&) = delete;
  FrozenDatabase& operator=(const FrozenDatabase&) = delete;

 private:
  std::vector<pid_t> pids_;
};

}  // namespace

TEST_CASE("a reconnection to the same server life waits for nothing; a crash recovery makes every agent wait ttl",
          "[process][life]") {
  Cluster c("proc-life");
  Three t(c);
  const std::vector<Agent*> all{&t.n1, &t.n2, &t.n3};
  const std::set<std::string> before = agent_sessions(c, all);
  REQUIRE(before.size() == 3);

  // Every agent's session terminated: the same life. No agent's /status ever says it may
  // not start a term, until all three have reconnected and made round trips again.
  c.query("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE pid IN (" + [&] {
    std::string l;
    for (const std::string& p : before) l += (l.empty() ? "" : ",") + p;
    return l;
  }() + ")");
  c.wait_until("every agent to reconnect (new sessions), may_acquire true throughout", [&] {
    for (Agent* a : all) {
      bool answered = false;
      if (!may_acquire_of(*a, &answered) && answered)
        FAIL(a->node() << " waited ttl after a reconnection to the same life\n" << c.logs());
    }
    const std::set<std::string> now = agent_sessions(c, all);
    if (now.size() != 3) return false;
    for (const std::string& p : now)
      if (before.count(p)) return false;
    return true;
  });
  c.hold_for("may_acquire true after the reconnection", Ms(1000), [&] {
    for (Agent* a : all)
      if (!may_acquire_of(*a)) return false;
    return true;
  });
  CHECK(t.n1.get("/master") == 200);

  // A crash of one backend: crash recovery under the same postmaster, a new life. Every
  // agent goes through may_acquire false, then the master takes a new term.
  {
    auto victim = connect_db();
    pqxx::nontransaction tx(*victim);
    const int backend = tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
    REQUIRE(::kill(backend, SIGKILL) == 0);
  }
  std::set<std::string> waited;
  c.wait_until("every agent to wait ttl in the new life (may_acquire false)", [&] {
    for (Agent* a : all) {
      bool answered = false;
      if (!may_acquire_of(*a, &answered) && answered) waited.insert(a->node());
    }
    return waited.size() == 3;
  });
  wait_master(c, t.n1, all, {&t.n2, &t.n3});
  for (Agent* a : all) CHECK(contains(a->log(), "new server life"));
}

TEST_CASE("after a database outage longer than ttl the line of succession is kept, not the order of reconnection",
          "[process][life]") {
  Cluster c("proc-outage");
  AgentOptions o;
  o.ttl = "1s";
  o.renew = "250ms";
  Three t(c, {o, o, o});
  const std::vector<Agent*> all{&t.n1, &t.n2, &t.n3};
  // n3 master (a switchover), the line still n1, n2, n3.
  const CommandResult r = run_command(c.dir(), {"switchover", "--dsn", test_dsn(), "--cluster", c.name(), "--to", "n3"});
  INFO("switchover: " << r.out << r.err);
  REQUIRE(r.exit == 0);
  wait_master(c, t.n3, all, {&t.n2});
  for (Agent* a : all) wait_may_acquire(c, *a);
  {
    // The database freezes for 3 ttl; meanwhile the master dies.
    FrozenDatabase frozen;
    t.n3.signal(SIGKILL);
    t.n3.wait_exit();
    std::this_thread::sleep_for(Ms(3000));  // the outage's length, not a synchronisation
  }
  // Back: n1 and n2 come back in whatever order; n1, first in line, is the master.
  wait_master(c, t.n1, {&t.n1, &t.n2}, {&t.n2});
  CHECK(c.query("SELECT string_agg(node, ',' ORDER BY registered_at, node) FROM lease_agent.node WHERE cluster = " +
                sql_quote(c.name())) == "n1,n2,n3");
}
