// The lease-agent binary as processes on a database that fails over (issue 8): agents
// whose DSN names several hosts with target_session_attrs=read-write, so that libpq
// finds the primary wherever it is.
//
// 1. The first host of the list is down (a free port of 127.0.0.1 nothing listens
//    on), the second is the test database (LEASE_AGENT_TEST_DSN): the agents elect a
//    master as usual.
// 2. A replicated pair of its own (scripts/pg.sh start-pair, stopped at the end even
//    on failure), three agents on it, `pg.sh failover DIR immediate` (a crash of the
//    primary, the replica promoted, the old primary rebuilt as a replica): a master
//    appears in lease_agent.master on the new primary and on /master, never two 200s
//    in one sample, exactly one once it is there. The bound is generous (3 ttl + 5 s
//    from the promotion): whether the master keeps its term across the failover or
//    a new one starts ttl after the agents saw the new server life is the agent's
//    business; only that a master comes, and one at a time, is asserted here.
//
// No sleep synchronises anything: every wait polls for what it awaits with a bound
// (Cluster::wait_until), and FAILs naming it.
#include <time.h>

#include <catch2/catch.hpp>

#include "process_support.h"

#ifndef LEASE_AGENT_SOURCE_DIR
#error "LEASE_AGENT_SOURCE_DIR must name the source tree (for scripts/pg.sh)"
#endif

using namespace lease_agent_test;

namespace {

constexpr Ms kTtl{2000};

const std::string& pg_sh() {
  static const std::string path = std::string(LEASE_AGENT_SOURCE_DIR) + "/scripts/pg.sh";
  return path;
}

// `bash scripts/pg.sh ARGS...`, bounded; the exit status (-1: killed at the bound),
// stdout and stderr.
CommandResult run_pg_sh(const TempDir& logs, const std::vector<std::string>& args, Ms limit = Ms(120000)) {
  static int n = 0;
  const std::string base = logs.file("pg-sh" + std::to_string(++n));
  std::vector<std::string> argv{"/bin/bash", pg_sh()};
  argv.insert(argv.end(), args.begin(), args.end());
  const pid_t pid = spawn_process(argv, {}, base + ".out", base + ".err");
  CommandResult r;
  const std::optional<int> st = wait_pid(pid, limit);
  if (!st) {
    ::kill(pid, SIGKILL);
    wait_pid(pid, Ms(5000));
  }
  r.exit = st.value_or(-1);
  r.out = read_file(base + ".out");
  r.err = read_file(base + ".err");
  return r;
}

// A pair made by scripts/pg.sh start-pair in a temp dir; stopped (both servers) and
// removed when this goes out of scope, also when the test fails.
class Pair {
 public:
  Pair() : dir_(logs_.file("pair")) {
    // The servers run as postgres (when root): it must pass through the temp dir.
    REQUIRE(::chmod(logs_.path().c_str(), 0711) == 0);
  }
  // Separate from the constructor, so that a failed start is still stopped.
  void start() {
    const CommandResult r = run_pg_sh(logs_, {"start-pair", dir_, "async"});
    INFO("pg.sh start-pair: exit " << r.exit << "\nstdout: " << r.out << "\nstderr: " << r.err);
    REQUIRE(r.exit == 0);
    for (const std::string& line : lines_of(read_file(dir_ + "/env"))) {
      const std::string key = "export LEASE_AGENT_TEST_DSN=\"";
      if (line.compare(0, key.size(), key) == 0 && line.back() == '"')
        dsn_ = line.substr(key.size(), line.size() - key.size() - 1);
    }
    INFO("env: " << read_file(dir_ + "/env"));
    REQUIRE(contains(dsn_, "target_session_attrs=read-write"));
    REQUIRE(contains(dsn_, "host=127.0.0.1,127.0.0.1"));
  }
  ~Pair() {
    if (!std::filesystem::exists(dir_)) return;
    const CommandResult r = run_pg_sh(logs_, {"stop", dir_}, Ms(60000));
    if (r.exit != 0) std::fprintf(stderr, "dbfailover_test: pg.sh stop %s failed: %s\n", dir_.c_str(), r.err.c_str());
  }
  Pair(const Pair&) = delete;
  Pair& operator=(const Pair&) = delete;

  const std::string& dir() const { return dir_; }
  const std::string& dsn() const { return dsn_; }
  const TempDir& logs() const { return logs_; }
  std::string primary() const {
    const std::string p = read_file(dir_ + "/primary");
    return p.substr(0, p.find('\n'));
  }

 private:
  TempDir logs_;  // first: the pair lives inside it and must be stopped before it goes
  std::string dir_;
  std::string dsn_;
};

// The lease row of `cluster` as the primary of a multi-host DSN shows it, over a
// fresh connection (a failover ends every connection): the master (empty if none),
// its epoch, when its lease was last written (expires_at - ttl, ms since the epoch on
// the database's clock) and the server's port. nullopt while no primary answers.
struct Seen {
  std::string node;
  long long epoch = 0;
  double written_ms = 0;
  int port = 0;
};
std::optional<Seen> master_on_primary(const std::string& dsn, const std::string& cluster) {
  try {
    pqxx::connection db(dsn + " connect_timeout=2");
    pqxx::nontransaction tx(db);
    const pqxx::result r = tx.exec(
        "SELECT coalesce((SELECT node FROM lease_agent.master WHERE cluster = " + tx.quote(cluster) +
        "), ''), coalesce((SELECT epoch FROM lease_agent.master WHERE cluster = " + tx.quote(cluster) +
        "), 0), coalesce((SELECT extract(epoch FROM expires_at) * 1000 - " + std::to_string(kTtl.count()) +
        " FROM lease_agent.master WHERE cluster = " + tx.quote(cluster) + "), 0), inet_server_port()");
    Seen s;
    s.node = r[0][0].as<std::string>();
    s.epoch = r[0][1].as<long long>();
    s.written_ms = r[0][2].as<double>();
    s.port = r[0][3].as<int>();
    return s;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

// A CLOCK_MONOTONIC time in ns (as pg.sh records it) on the wall clock, in ms since
// the epoch: the database runs on this machine, so its clock_timestamp() is this one.
double mono_ns_to_wall_ms(long long mono_ns) {
  timespec m{}, w{};
  ::clock_gettime(CLOCK_MONOTONIC, &m);
  ::clock_gettime(CLOCK_REALTIME, &w);
  const long long now_mono = static_cast<long long>(m.tv_sec) * 1000000000LL + m.tv_nsec;
  const double now_wall_ms = static_cast<double>(w.tv_sec) * 1000.0 + static_cast<double>(w.tv_nsec) / 1e6;
  return now_wall_ms - static_cast<double>(now_mono - mono_ns) / 1e6;
}

long long mono_now_ns() {
  timespec m{};
  ::clock_gettime(CLOCK_MONOTONIC, &m);
  return static_cast<long long>(m.tv_sec) * 1000000000LL + m.tv_nsec;
}

AgentOptions with_dsn(const std::string& node, const std::string& dsn) {
  AgentOptions o;
  o.node = node;
  o.dsn = dsn;
  o.ttl = "2s";
  o.renew = "500ms";
  return o;
}

// The hosts and ports of a DSN as lists ("127.0.0.1", "5432" when it names none).
std::pair<std::string, std::string> hosts_and_ports(const std::string& dsn) {
  const std::map<std::string, std::string> kv = dsn_keywords(dsn);
  const auto h = kv.find("host");
  const auto p = kv.find("port");
  return {h == kv.end() ? "127.0.0.1" : h->second, p == kv.end() ? "5432" : p->second};
}

}  // namespace

TEST_CASE("a multi-host DSN whose first host is down: the agents elect a master as usual", "[process][dbfailover]") {
  Cluster c("dbfo-firstdown");
  const int dead = free_port();
  // Nothing listens there: the first host of the list refuses, libpq tries the next.
  CHECK(http_status(dead, "/") == -1);
  const auto [hosts, ports] = hosts_and_ports(test_dsn());
  const std::string dsn = dsn_with({{"host", "127.0.0.1," + hosts},
                                    {"port", std::to_string(dead) + "," + ports},
                                    {"target_session_attrs", "read-write"}});
  INFO("dsn: " << dsn);
  REQUIRE(contains(dsn, "port=" + std::to_string(dead) + ","));

  Agent& n1 = c.start_ready(with_dsn("n1", dsn));
  Agent& n2 = c.start_ready(with_dsn("n2", dsn));
  Agent& n3 = c.start_ready(with_dsn("n3", dsn));
  const std::vector<Agent*> order{&n3, &n2, &n1};
  c.wait_until(
      "n1 to be master (lease_agent.master and /master 200)",
      [&] { return c.sample_masters(order) == &n1 && c.master_row().node == "n1"; }, 3 * kTtl + Ms(5000));
  CHECK(c.master_row().epoch == 1);
  CHECK(c.master_row().address == n1.address());
  CHECK(n2.get("/standby") == 200);
  CHECK(n3.get("/standby") == 200);
  // And it stays so: one master, the others standby.
  c.hold_for("n1 the only master, n2 and n3 standby", kTtl,
             [&] { return c.sample_masters(order) == &n1 && n2.get("/standby") == 200; });
  CHECK(c.master_row().epoch == 1);
}

TEST_CASE("a replicated pair fails over (immediate stop, promotion): a master appears on the new primary, never two",
          "[process][dbfailover]") {
  Pair pair;
  pair.start();
  REQUIRE(pair.primary() == "a");
  {
    const CommandResult r = run_command(pair.logs(), {"schema", "apply", "--dsn", pair.dsn()});
    INFO("schema apply: stdout " << r.out << "\nstderr " << r.err);
    REQUIRE(r.exit == 0);
  }
  // (Cluster also opens the test database of LEASE_AGENT_TEST_DSN, unused here: every
  // query of this test goes to the pair over a fresh connection.)
  Cluster c("dbfo-pair");
  Agent& n1 = c.start_ready(with_dsn("n1", pair.dsn()));
  Agent& n2 = c.start_ready(with_dsn("n2", pair.dsn()));
  Agent& n3 = c.start_ready(with_dsn("n3", pair.dsn()));
  const std::vector<Agent*> order{&n3, &n2, &n1};
  c.wait_until(
      "n1 to be master on the pair",
      [&] {
        const std::optional<Seen> s = master_on_primary(pair.dsn(), c.name());
        return c.sample_masters(order) == &n1 && s && s->node == "n1";
      },
      3 * kTtl + Ms(5000));
  const std::optional<Seen> before = master_on_primary(pair.dsn(), c.name());
  REQUIRE(before);
  const int old_port = before->port;

  // The failover runs in the background; every agent is sampled meanwhile.
  const std::string out = pair.logs().file("failover.out"), err = pair.logs().file("failover.err");
  const pid_t fo = spawn_process({"/bin/bash", pg_sh(), "failover", pair.dir(), "immediate"}, {}, out, err);
  std::optional<int> fo_exit;
  c.wait_until(
      "pg.sh failover to end",
      [&] {
        c.sample_masters(order);
        fo_exit = wait_pid(fo, Ms(0));
        return fo_exit.has_value();
      },
      Ms(120000));
  INFO("pg.sh failover: stdout " << read_file(out) << "\nstderr " << read_file(err));
  REQUIRE(*fo_exit == 0);
  REQUIRE(pair.primary() == "b");
  const long long promoted_ns = std::stoll(read_file(pair.dir() + "/promoted_at"));
  CHECK(contains(read_file(out), "promoted_at=" + std::to_string(promoted_ns)));
  CHECK(promoted_ns <= mono_now_ns());
  const double promoted_wall_ms = mono_ns_to_wall_ms(promoted_ns);

  // A master whose lease was written on the new primary (after the promotion: what was
  // written on the old one expires before promotion + ttl), answering 200, alone.
  const Ms bound = 3 * kTtl + Ms(5000);
  const Ms left = bound - Ms((mono_now_ns() - promoted_ns) / 1000000);
  Agent* master = nullptr;
  Seen after;
  c.wait_until(
      "a master on the new primary (lease_agent.master written after the promotion, and its /master 200)",
      [&] {
        Agent* m = c.sample_masters(order);
        const std::optional<Seen> s = master_on_primary(pair.dsn(), c.name());
        if (m == nullptr || !s || s->node != m->node() || s->written_ms <= promoted_wall_ms) return false;
        master = m;
        after = *s;
        return true;
      },
      std::max(left, Ms(1)));
  REQUIRE(master != nullptr);
  CHECK(after.port != old_port);
  CHECK(after.epoch >= 1);
  INFO("after the failover: " << after.node << " at epoch " << after.epoch << " (before: " << before->node
                              << " at epoch " << before->epoch << ")");
  // From then on exactly one 200 in every sample, and the row on the new primary agrees.
  c.hold_for("exactly one master, " + master->node() + ", after the failover", kTtl, [&] {
    return c.sample_masters(order) == master;
  });
  const std::optional<Seen> last = master_on_primary(pair.dsn(), c.name());
  REQUIRE(last);
  CHECK(last->node == master->node());
  CHECK(last->port == after.port);
  CHECK(c.samples() > 50);

  // The old primary was rebuilt as a replica of the new one: the pair can fail over again.
  const CommandResult st = run_pg_sh(pair.logs(), {"status", pair.dir()}, Ms(30000));
  INFO("pg.sh status: " << st.err);
  CHECK(st.exit == 0);
  CHECK(contains(st.err, "primary b running"));
  CHECK(contains(st.err, "replica a on 127.0.0.1:" + std::to_string(old_port) + ": streaming"));
}
