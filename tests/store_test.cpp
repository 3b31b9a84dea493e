// The SQL protocol (sql/) through the lease store, against a real PostgreSQL.
#include "lease_store.h"

#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <future>
#include <sstream>
#include <memory>
#include <thread>

#include "fault/fault_proxy.h"

#include "test_support.h"

using namespace lease_agent;
using namespace lease_agent_test;
using std::chrono::milliseconds;

namespace {

std::unique_ptr<LeaseStore> make_store(const std::string& cluster, const std::string& node,
                                       const std::string& incarnation = "", bool listen = false) {
  ensure_schema();
  StoreOptions o;
  o.dsn = test_dsn();
  o.cluster = cluster;
  o.node = node;
  o.incarnation = incarnation.empty() ? node + "-inc" : incarnation;
  o.address = node + ".example:8080";
  o.ttl = milliseconds(2000);
  o.renew = milliseconds(500);
  auto s = std::make_unique<LeaseStore>(o);
  s->connect(listen);
  return s;
}

// Requests of an agent whose connection is old enough to start a term (may_acquire).
HeartbeatRequest standby() { return HeartbeatRequest{std::nullopt, std::nullopt, true}; }
HeartbeatRequest as_master(std::int64_t epoch) { return HeartbeatRequest{epoch, std::nullopt, true}; }
HeartbeatRequest watching(std::int64_t version) { return HeartbeatRequest{std::nullopt, version, true}; }

// Makes a node's registration expire now, as if it had stopped heartbeating ttl ago.
void expire_node(const std::string& cluster, const std::string& node) {
  auto c = connect_db();
  pqxx::nontransaction tx(*c);
  tx.exec("UPDATE lease_agent.node SET expires_at = clock_timestamp() - interval '1 ms' WHERE cluster = " +
          tx.quote(cluster) + " AND node = " + tx.quote(node));
}

// A file of tests/fixtures/.
std::string read_fixture(const std::string& name) {
  std::ifstream in(std::string(LEASE_AGENT_SOURCE_DIR) + "/tests/fixtures/" + name);
  REQUIRE(in.good());
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A new database `name` with the SQL of tests/fixtures/`fixture` applied; its dsn.
std::string fresh_database(const std::string& name, const std::string& fixture) {
  {
    auto c = connect_db();
    pqxx::nontransaction tx(*c);
    tx.exec("DROP DATABASE IF EXISTS " + name);
    tx.exec("CREATE DATABASE " + name);
  }
  std::map<std::string, std::string> kv = dsn_keywords(test_dsn());
  kv["dbname"] = name;
  std::string dsn;
  for (const auto& [k, v] : kv) dsn += k + "='" + v + "' ";
  pqxx::connection c(dsn);
  pqxx::nontransaction tx(c);
  tx.exec(read_fixture(fixture));
  return dsn;
}

// Applies today's schema to the database of `dsn` twice, as `schema apply` does (the second
// time changes nothing), and checks its version; the options of a new agent "n3" of
// cluster "c" with `incarnation`, for the test to go on with.
StoreOptions upgrade_in_place(const std::string& dsn, const std::string& incarnation) {
  StoreOptions o;
  o.dsn = dsn;
  o.cluster = "c";
  o.node = "n3";
  o.incarnation = incarnation;
  o.ttl = milliseconds(2000);
  o.renew = milliseconds(500);
  LeaseStore admin(o);
  admin.connect(false, false);
  admin.apply_schema();
  admin.apply_schema();
  pqxx::connection c(dsn);
  pqxx::nontransaction tx(c);
  CHECK(tx.exec("SELECT version FROM lease_agent.schema_info")[0][0].as<int>() == kSchemaVersion);
  return o;
}

// An agent of an earlier schema version, with its statements prepared as it prepared them
// (`heartbeat_function`: lease_agent.heartbeat for version 2, heartbeat_v3 for version 3).
struct OldAgent {
  OldAgent(const std::string& dsn, std::string node, const std::string& heartbeat_function, std::string version)
      : conn(dsn), node(std::move(node)), incarnation(this->node + "-" + version) {
    conn.prepare("heartbeat", "SELECT * FROM lease_agent." + heartbeat_function +
                                  "($1, $2, $3, $4, $5, NULLIF($6::bigint, -1), NULLIF($7::bigint, -1), $8)");
    conn.prepare("leave", "SELECT lease_agent.leave($1, $2, $3)");
  }
  pqxx::row beat(std::int64_t epoch) {
    pqxx::nontransaction tx(conn);
    return tx.exec_prepared("heartbeat", "c", node, incarnation, "", 2000, epoch, -1, true)[0];
  }
  void leave() {
    pqxx::nontransaction tx(conn);
    tx.exec_prepared("leave", "c", node, incarnation);
  }
  pqxx::connection conn;
  std::string node;
  std::string incarnation;
};

// Waits (bounded) for notices on a listening store.
std::vector<LeaseNotice> await_notices(LeaseStore& s, int timeout_ms = 5000) {
  pollfd p{s.socket(), POLLIN, 0};
  std::vector<LeaseNotice> got = s.take_notices();
  if (!got.empty()) return got;
  if (::poll(&p, 1, timeout_ms) <= 0) return {};
  return s.take_notices();
}

// Waits (bounded) until a notice that `wanted` accepts arrives; false if none did.
template <typename Pred>
bool await_notice(LeaseStore& s, Pred wanted, int timeout_ms = 5000) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (int round = 0; round < 1000; ++round) {
    for (const LeaseNotice& n : s.take_notices())
      if (wanted(n)) return true;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{s.socket(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(left.count()));
  }
  return false;
}

}  // namespace

TEST_CASE("the first of two contenders acquires, the second stands by", "[store]") {
  const std::string c = unique_cluster("two");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2");
  const HeartbeatAnswer a1 = n1->heartbeat(standby());
  CHECK(a1.holder_is_me);
  CHECK(a1.acquired);
  CHECK(a1.epoch == 1);
  const HeartbeatAnswer a2 = n2->heartbeat(standby());
  CHECK_FALSE(a2.holder_is_me);
  CHECK(a2.holder == "n1");
  CHECK(a2.holder_address == "n1.example:8080");
  CHECK(a2.version == a1.version);
  CHECK(a2.db_now_ms > 0);
  CHECK(query_value("SELECT node FROM lease_agent.master WHERE cluster = '" + c + "'") == "n1");
  CHECK(query_value("SELECT address FROM lease_agent.master WHERE cluster = '" + c + "'") == "n1.example:8080");
}

TEST_CASE("a renewal keeps the epoch and moves the version", "[store]") {
  const std::string c = unique_cluster("renew");
  auto n1 = make_store(c, "n1");
  const HeartbeatAnswer a = n1->heartbeat(standby());
  const HeartbeatAnswer b = n1->heartbeat(as_master(a.epoch));
  CHECK(b.holder_is_me);
  CHECK_FALSE(b.acquired);
  CHECK(b.epoch == a.epoch);
  CHECK(b.version > a.version);
  CHECK(b.lease_left_ms > 1500);
}

TEST_CASE("compare-and-set on the version: a renewal that slips in makes a takeover fail", "[store]") {
  const std::string c = unique_cluster("cas");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2");
  const HeartbeatAnswer a1 = n1->heartbeat(standby());
  const HeartbeatAnswer seen = n2->heartbeat(standby());
  // n1 renews before n2's takeover arrives.
  n1->heartbeat(as_master(a1.epoch));
  expire_node(c, "n1");  // even if n1 looked dead by the database's clock
  const HeartbeatAnswer t = n2->heartbeat(watching(seen.version));
  CHECK_FALSE(t.holder_is_me);
  CHECK(t.holder == "n1");
  CHECK(t.epoch == 1);
  // At the version it now watches, the takeover succeeds, at epoch + 1.
  const HeartbeatAnswer t2 = n2->heartbeat(watching(t.version));
  CHECK(t2.holder_is_me);
  CHECK(t2.acquired);
  CHECK(t2.epoch == 2);
  // The old master's next renewal finds the lease gone.
  const HeartbeatAnswer old = n1->heartbeat(as_master(1));
  CHECK_FALSE(old.holder_is_me);
  CHECK(old.holder == "n2");
}

TEST_CASE("succession goes to the first live node by registration, among three", "[store]") {
  const std::string c = unique_cluster("three");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2");
  auto n3 = make_store(c, "n3");
  n1->heartbeat(standby());
  n2->heartbeat(standby());
  const HeartbeatAnswer s3 = n3->heartbeat(standby());
  expire_node(c, "n1");
  // n3 watched the version for ttl, but n2 is first in line: no.
  const HeartbeatAnswer t3 = n3->heartbeat(watching(s3.version));
  CHECK_FALSE(t3.holder_is_me);
  CHECK(t3.first_in_line == "n2");
  const HeartbeatAnswer t2 = n2->heartbeat(watching(s3.version));
  CHECK(t2.holder_is_me);
  CHECK(t2.epoch == 2);
  // Then n2 dies: n3 is next.
  expire_node(c, "n2");
  const HeartbeatAnswer u3 = n3->heartbeat(watching(t2.version));
  CHECK(u3.holder_is_me);
  CHECK(u3.epoch == 3);
}

TEST_CASE("a clean stop hands the lease to the next in line and says so; renewals notify nobody", "[store][handoff]") {
  const std::string c = unique_cluster("handoff");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2", "", /*listen=*/true);
  auto n3 = make_store(c, "n3", "", /*listen=*/true);
  const HeartbeatAnswer a = n1->heartbeat(standby());
  REQUIRE(a.holder_is_me);
  n2->heartbeat(standby());
  const HeartbeatAnswer s3 = n3->heartbeat(standby());
  // The standbys' answers: who is next in line, and how long ago the master wrote the row.
  CHECK_FALSE(s3.next_in_line_is_me);
  const HeartbeatAnswer s2 = n2->heartbeat(standby());
  CHECK(s2.next_in_line_is_me);
  CHECK(s2.renewed_ago_ms >= 0);
  CHECK(s2.renewed_ago_ms < 2000);
  const HeartbeatAnswer r = n1->heartbeat(as_master(a.epoch));
  CHECK(n3->heartbeat(standby()).holder_renew_ms == 500);  // the master's renew
  // The clean stop: the lease goes to n2 in the leave's own transaction.
  const Leave l = n1->leave(true);
  CHECK(l.released);
  CHECK(l.handed_to == "n2");
  CHECK(l.epoch == a.epoch + 1);
  CHECK(query_value("SELECT node || ' ' || epoch FROM lease_agent.master WHERE cluster = '" + c + "'") ==
        "n2 " + std::to_string(a.epoch + 1));
  CHECK_NOTHROW(query_value("SELECT lease_agent.assert_master('" + c + "', 'n2', " + std::to_string(a.epoch + 1) + ")"));
  // Notifications come in commit order: the first n2 gets is the hand-off, so the renewal
  // and the acquisition before it notified nobody.
  std::vector<LeaseNotice> got2 = await_notices(*n2);
  REQUIRE(got2.size() == 1);
  CHECK(got2[0].kind == LeaseNotice::Kind::handed);
  CHECK(got2[0].to_me);
  CHECK(got2[0].epoch == a.epoch + 1);
  CHECK(got2[0].how == "handed");
  CHECK(got2[0].version == r.version + 1);
  // n2's first heartbeat, sent as if it had not heard: its term is the hand-off's.
  const HeartbeatAnswer t2 = n2->heartbeat(standby());
  CHECK(t2.holder_is_me);
  CHECK(t2.acquired);
  CHECK(t2.acquired_how == "handed");
  CHECK(t2.epoch == a.epoch + 1);
  const HeartbeatAnswer t3 = n3->heartbeat(standby());
  CHECK_FALSE(t3.holder_is_me);
  CHECK(t3.holder == "n2");
  // Leaving twice changes nothing; the registration is kept, marked gone.
  CHECK_FALSE(n1->leave(true).released);
  CHECK(query_value("SELECT expires_at <= clock_timestamp() FROM lease_agent.node WHERE cluster = '" + c +
                    "' AND node = 'n1'") == "t");
  // Schema 6: the hand-off woke n2 alone. n2's release, which is for every standby, is the
  // first notification n3 gets (they come in commit order): the hand-off was not sent to it.
  REQUIRE(n2->leave(false).released);
  std::vector<LeaseNotice> got3;
  CHECK(await_notice(*n3, [&](const LeaseNotice& n) {
    got3.push_back(n);
    return n.kind == LeaseNotice::Kind::free;
  }));
  REQUIRE(got3.size() == 1);
  CHECK(got3[0].kind == LeaseNotice::Kind::free);
}

TEST_CASE("a release without a hand-off notifies, and the first in line takes the free lease at once", "[store]") {
  const std::string c = unique_cluster("release");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2", "", /*listen=*/true);
  auto n3 = make_store(c, "n3");
  n1->heartbeat(standby());
  n2->heartbeat(standby());
  n3->heartbeat(standby());
  // Not allowed to hand off (its view of the server's life is younger than ttl): free.
  const Leave l = n1->leave(false);
  CHECK(l.released);
  CHECK(l.handed_to.empty());
  CHECK(await_notice(*n2, [](const LeaseNotice& n) { return n.kind == LeaseNotice::Kind::free; }));
  CHECK(query_value("SELECT count(*) FROM lease_agent.master WHERE cluster = '" + c + "'") == "0");
  // n3 asks first but n2 is first in line (n1 is gone).
  const HeartbeatAnswer t3 = n3->heartbeat(standby());
  CHECK_FALSE(t3.holder_is_me);
  CHECK(t3.first_in_line == "n2");
  const HeartbeatAnswer t2 = n2->heartbeat(standby());
  CHECK(t2.holder_is_me);
  CHECK(t2.acquired_how == "free");
  CHECK(t2.epoch == 2);
  // With nobody left in line, a clean stop that may hand off sets the lease free too.
  n3->leave(true);
  const Leave last = n2->leave(true);
  CHECK(last.released);
  CHECK(last.handed_to.empty());
}

TEST_CASE("a notification of another cluster is not ours", "[store]") {
  const std::string c = unique_cluster("mine");
  const std::string other = unique_cluster("other");
  auto listener = make_store(c, "n1", "", true);
  auto o = make_store(other, "x");
  o->heartbeat(standby());
  o->leave(true);  // a release in the other cluster
  auto m = make_store(c, "n2");
  m->heartbeat(standby());
  listener->heartbeat(standby());  // in line: a release is announced to it
  m->leave(false);  // and one in this cluster: one notice
  const std::vector<LeaseNotice> got = await_notices(*listener);
  REQUIRE(got.size() == 1);
  CHECK(got[0].kind == LeaseNotice::Kind::free);
  CHECK(got[0].version == 2);
  CHECK(query_value("SELECT lease_agent.channel('" + c + "') <> lease_agent.channel('" + other + "')") == "t");
  CHECK(query_value("SELECT lease_agent.channel('" + c + "', 'i') <> lease_agent.channel('" + c + "', 'j')") == "t");
}

TEST_CASE("epochs grow by one at every acquisition", "[store]") {
  const std::string c = unique_cluster("epochs");
  std::vector<std::int64_t> epochs;
  for (int i = 0; i < 4; ++i) {
    auto n = make_store(c, "n" + std::to_string(i));
    const HeartbeatAnswer a = n->heartbeat(standby());
    REQUIRE(a.holder_is_me);
    epochs.push_back(a.epoch);
    n->leave(true);
  }
  CHECK(epochs == std::vector<std::int64_t>{1, 2, 3, 4});
}

TEST_CASE("an incarnation: a live one is refused, a restart joins the back of the line", "[store]") {
  const std::string c = unique_cluster("incarnation");
  auto n1 = make_store(c, "n1", "first-life");
  auto n2 = make_store(c, "n2");
  n1->heartbeat(standby());
  const HeartbeatAnswer s2 = n2->heartbeat(standby());
  auto again = make_store(c, "n1", "second-life");
  const HeartbeatAnswer d = again->heartbeat(standby());
  CHECK(d.duplicate);
  CHECK(d.duplicate_detail.find("first-life") != std::string::npos);
  CHECK(query_value("SELECT incarnation FROM lease_agent.node WHERE cluster = '" + c + "' AND node = 'n1'") ==
        "first-life");
  // The first life dies. The second registers behind n2 and does not inherit the lease.
  expire_node(c, "n1");
  const HeartbeatAnswer r = again->heartbeat(standby());
  CHECK_FALSE(r.duplicate);
  CHECK_FALSE(r.holder_is_me);
  CHECK(r.holder == "n1");
  CHECK(query_value("SELECT string_agg(node, ',' ORDER BY registered_at, node) FROM lease_agent.node "
                    "WHERE cluster = '" + c + "' AND expires_at > clock_timestamp()") == "n2,n1");
  const HeartbeatAnswer t = n2->heartbeat(watching(s2.version));
  CHECK(t.holder_is_me);
}

TEST_CASE("a lease of ours at an epoch we did not claim starts a new term", "[store]") {
  const std::string c = unique_cluster("indoubt");
  auto n1 = make_store(c, "n1");
  const HeartbeatAnswer a = n1->heartbeat(standby());  // say this answer was lost
  const HeartbeatAnswer b = n1->heartbeat(standby());
  CHECK(b.holder_is_me);
  CHECK(b.acquired);
  CHECK(b.epoch == a.epoch + 1);
}

TEST_CASE("assert_master fences a stale master in the caller's transaction", "[store]") {
  const std::string c = unique_cluster("fence");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2");
  const HeartbeatAnswer a = n1->heartbeat(standby());
  const HeartbeatAnswer s = n2->heartbeat(standby());
  auto conn = connect_db();
  {
    pqxx::work tx(*conn);
    CHECK_NOTHROW(tx.exec("SELECT lease_agent.assert_master(" + tx.quote(c) + ", 'n1', " +
                          std::to_string(a.epoch) + ")"));
    tx.commit();
  }
  expire_node(c, "n1");
  REQUIRE(n2->heartbeat(watching(s.version)).holder_is_me);
  {
    pqxx::work tx(*conn);
    tx.exec("CREATE TEMP TABLE IF NOT EXISTS app_write (v int)");
    tx.exec("INSERT INTO app_write VALUES (1)");
    try {
      tx.exec("SELECT lease_agent.assert_master(" + tx.quote(c) + ", 'n1', " + std::to_string(a.epoch) + ")");
      FAIL("assert_master accepted a stale master");
    } catch (const pqxx::sql_error& e) {
      CHECK(e.sqlstate() == "LA001");
      CHECK(std::string(e.what()).find("not the master") != std::string::npos);
    }
  }
  {
    pqxx::work tx(*conn);
    CHECK_THROWS(tx.exec("SELECT lease_agent.assert_master(" + tx.quote(c) + ", 'n2', 99)"));
  }
  {
    pqxx::work tx(*conn);
    CHECK_NOTHROW(tx.exec("SELECT lease_agent.assert_master(" + tx.quote(c) + ", 'n2', 2)"));
  }
}

TEST_CASE("applying the schema twice changes nothing", "[store]") {
  ensure_schema();
  const std::string before = query_value(
      "SELECT md5(string_agg(p.proname || pg_get_functiondef(p.oid), '' ORDER BY p.proname, pg_get_function_identity_arguments(p.oid))) "
      "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'lease_agent'");
  StoreOptions o;
  o.dsn = test_dsn();
  LeaseStore s(o);
  s.connect(false, false);
  s.apply_schema();
  s.apply_schema();
  const std::string after = query_value(
      "SELECT md5(string_agg(p.proname || pg_get_functiondef(p.oid), '' ORDER BY p.proname, pg_get_function_identity_arguments(p.oid))) "
      "FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'lease_agent'");
  CHECK(before == after);
  CHECK(query_value("SELECT version FROM lease_agent.schema_info") == std::to_string(kSchemaVersion));
  CHECK(query_value("SELECT count(*) FROM lease_agent.schema_info") == "1");
}

TEST_CASE("the agent's connection options: timeouts added, the user's own kept", "[store]") {
  const std::string info = effective_conninfo("host=db port=5433 connect_timeout=7", milliseconds(2000),
                                              milliseconds(500), "lease-agent n1");
  CHECK(info.find("connect_timeout='7'") != std::string::npos);
  CHECK(info.find("tcp_user_timeout='1000'") != std::string::npos);
  CHECK(info.find("keepalives='1'") != std::string::npos);
  CHECK(info.find("host='db'") != std::string::npos);
  const std::string uri = effective_conninfo("postgresql://u@h:5/d?application_name=x", milliseconds(10000),
                                             milliseconds(2000), "lease-agent n1");
  CHECK(uri.find("application_name='x'") != std::string::npos);
  CHECK(uri.find("connect_timeout='10'") != std::string::npos);
  CHECK_THROWS_AS(effective_conninfo("host='unterminated", milliseconds(2000), milliseconds(500), "x"), std::invalid_argument);
  // No GSSAPI encryption unless the dsn (or PGGSSENCMODE) asks for it.
  CHECK(info.find("gssencmode='disable'") != std::string::npos);
  CHECK(effective_conninfo("host=db gssencmode=prefer", milliseconds(2000), milliseconds(500), "x")
            .find("gssencmode='prefer'") != std::string::npos);
}

TEST_CASE("cluster status lists every node in registration order", "[store]") {
  const std::string c = unique_cluster("status");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2");
  n1->heartbeat(standby());
  n2->heartbeat(standby());
  n1->leave(true);
  const HeartbeatAnswer a = n2->heartbeat(standby());
  REQUIRE(a.holder_is_me);
  const ClusterStatus cs = n2->cluster_status();
  CHECK(cs.holder == "n2");
  CHECK(cs.epoch == 2);
  REQUIRE(cs.nodes.size() == 2);
  CHECK(cs.nodes[0].node == "n1");
  CHECK(cs.nodes[0].role == "gone");
  CHECK(cs.nodes[1].role == "master");
  CHECK(cs.nodes[1].address == "n2.example:8080");
}

// Found by the fault suite (net-drop): a database that stops answering while the TCP
// connection stays up (here a proxy that swallows the bytes) hung the heartbeat call
// forever; the agent never came back. The call is now cut off at call_timeout().
TEST_CASE("a heartbeat that gets no answer is cut off, and the store reconnects", "[store][fault]") {
  ensure_schema();
  auto kv = dsn_keywords(test_dsn());
  lease_agent_fault::FaultProxy proxy(kv.count("host") ? kv.at("host") : "127.0.0.1",
                                      kv.count("port") ? std::stoi(kv.at("port")) : 5432);
  kv["host"] = "127.0.0.1";
  kv["port"] = std::to_string(proxy.port());
  kv.erase("hostaddr");
  StoreOptions o;
  for (const auto& [k, v] : kv) o.dsn += k + "='" + v + "' ";  // test values: no quotes inside
  o.cluster = unique_cluster("silent");
  o.node = "n1";
  o.incarnation = "n1-inc";
  o.ttl = milliseconds(1000);
  o.renew = milliseconds(250);
  auto store = std::make_shared<LeaseStore>(o);
  store->connect();
  REQUIRE(store->heartbeat(standby()).holder_is_me);

  proxy.set_mode(lease_agent_fault::FaultProxy::Mode::drop);
  // On a thread of its own, so that the test stays bounded if the call never returns.
  auto outcome = std::make_shared<std::promise<std::string>>();
  std::future<std::string> result = outcome->get_future();
  std::thread([store, outcome] {
    try {
      store->heartbeat(as_master(1));
      outcome->set_value("answered");
    } catch (const StoreError& e) {
      outcome->set_value(std::string(e.fatal() ? "fatal: " : "") + e.what());
    }
  }).detach();
  if (result.wait_for(std::chrono::seconds(30)) != std::future_status::ready)
    FAIL("the heartbeat through a silent network did not return within 30 s");
  CHECK(result.get() == "heartbeat: no answer from the database within " +
                            std::to_string(store->call_timeout().count()) + "ms; dropped the connection");
  CHECK_FALSE(store->connected());

  proxy.set_mode(lease_agent_fault::FaultProxy::Mode::pass);
  store->connect();
  const HeartbeatAnswer a = store->heartbeat(as_master(1));
  CHECK(a.holder_is_me);
  CHECK(a.epoch == 1);
}

TEST_CASE("p_may_acquire false: no acquisition, no new term; a renewal goes on", "[store]") {
  const std::string c = unique_cluster("young");
  auto n1 = make_store(c, "n1");
  HeartbeatRequest young;  // may_acquire false
  HeartbeatAnswer a = n1->heartbeat(young);
  CHECK_FALSE(a.holder_is_me);  // the lease is free, but not for a young connection
  CHECK(a.holder.empty());
  HeartbeatRequest old_enough;
  old_enough.may_acquire = true;
  a = n1->heartbeat(old_enough);
  REQUIRE(a.holder_is_me);
  REQUIRE(a.epoch == 1);
  // A renewal at the epoch held goes on over a young connection.
  HeartbeatRequest renew = as_master(1);
  renew.may_acquire = false;  // (a master that reconnected)
  a = n1->heartbeat(renew);
  CHECK(a.holder_is_me);
  CHECK(a.epoch == 1);
  // A lease of ours without the epoch (the master stopped counting on it): no new
  // term over a young connection, and the row stays as it was.
  const HeartbeatAnswer unchanged = n1->heartbeat(young);
  CHECK_FALSE(unchanged.holder_is_me);
  CHECK(unchanged.holder == "n1");
  CHECK(unchanged.epoch == 1);
  CHECK(unchanged.version == a.version);
  a = n1->heartbeat(old_enough);
  CHECK(a.holder_is_me);
  CHECK(a.epoch == 2);
}

// ---------------------------------------------------------------------------
// Switchover (sql/002_protocol.sql: lease_agent.switchover, lease_agent.hand_over).

namespace {

// n1 master, n2 and n3 standbys, all listening.
struct ThreeNodes {
  explicit ThreeNodes(const std::string& prefix) : c(unique_cluster(prefix)) {
    n1 = make_store(c, "n1", "", /*listen=*/true);
    n2 = make_store(c, "n2", "", /*listen=*/true);
    n3 = make_store(c, "n3", "", /*listen=*/true);
    const HeartbeatAnswer a = n1->heartbeat(standby());
    REQUIRE(a.holder_is_me);
    epoch = a.epoch;
    n2->heartbeat(standby());
    n3->heartbeat(standby());
  }
  std::string c;
  std::unique_ptr<LeaseStore> n1, n2, n3;
  std::int64_t epoch = 0;
};

std::string refusal(LeaseStore& s, const std::string& to, const std::string& from = "") {
  try {
    s.request_switchover(to, from);
  } catch (const SwitchoverRefused& e) {
    return e.what();
  }
  return "(not refused)";
}

}  // namespace

TEST_CASE("a switchover request: the master hears it and hands the lease directly to the target", "[store][switchover]") {
  ThreeNodes t("switchover-direct");
  auto op = make_store(t.c, "operator", "", /*listen=*/false);
  const SwitchoverRequest r = op->request_switchover("n3", "n1");
  REQUIRE(r.requested);
  // The notification, on the master's own channel, names the target and the master's epoch.
  std::vector<LeaseNotice> heard = await_notices(*t.n1);
  REQUIRE(heard.size() == 1);
  CHECK(heard[0].kind == LeaseNotice::Kind::switchover);
  CHECK(heard[0].target == "n3");
  CHECK(heard[0].epoch == t.epoch);
  const HandOver h = t.n1->hand_over(true);
  CHECK(h.handed_over);
  CHECK(h.direct);
  CHECK(h.target == "n3");
  CHECK(query_value("SELECT node FROM lease_agent.master WHERE cluster = '" + t.c + "'") == "n3");
  CHECK(await_notice(*t.n3, [&](const LeaseNotice& n) {
    return n.kind == LeaseNotice::Kind::handed && n.to_me && n.how == "switchover" && n.epoch == t.epoch + 1;
  }));
  const HeartbeatAnswer a3 = t.n3->heartbeat(as_master(t.epoch + 1));
  CHECK(a3.holder_is_me);
  CHECK_FALSE(a3.acquired);  // a renewal of the term it was handed
  CHECK(query_value("SELECT coalesce(reserved_for, '-') || coalesce(switchover_to, '-') || (handed_at IS NULL)::text "
                    "FROM lease_agent.lease WHERE cluster = '" + t.c + "'") == "--true");
  // The standby that was neither asked nor handed the lease heard neither: the first
  // notification it gets is n3's release, which is for every standby.
  REQUIRE(t.n3->leave(false).released);
  std::vector<LeaseNotice> got2;
  CHECK(await_notice(*t.n2, [&](const LeaseNotice& n) {
    got2.push_back(n);
    return n.kind == LeaseNotice::Kind::free;
  }));
  REQUIRE(got2.size() == 1);
  CHECK(got2[0].kind == LeaseNotice::Kind::free);
}

TEST_CASE("a switchover request: the master hears it, hands over, the target alone takes the free lease", "[store][switchover]") {
  ThreeNodes t("switchover");
  t.n1->take_notices();
  auto op = make_store(t.c, "operator", "", /*listen=*/false);
  const SwitchoverRequest r = op->request_switchover("n3", "n1");
  CHECK(r.requested);
  CHECK(r.target == "n3");
  CHECK(r.master == "n1");
  CHECK(r.epoch == t.epoch);
  // The master hears it, on its own channel.
  std::vector<LeaseNotice> heard = await_notices(*t.n1);
  REQUIRE_FALSE(heard.empty());
  CHECK(heard.back().kind == LeaseNotice::Kind::switchover);
  // The master's next heartbeat names the target; the standbys' do not.
  const HeartbeatAnswer m = t.n1->heartbeat(as_master(t.epoch));
  CHECK(m.holder_is_me);
  CHECK(m.switchover_to == "n3");
  CHECK(t.n2->heartbeat(standby()).switchover_to.empty());
  // The hand-over without a hand-off (a view of the server's life younger than ttl)
  // frees the lease reserved for n3.
  const HandOver h = t.n1->hand_over(false);
  CHECK(h.handed_over);
  CHECK_FALSE(h.direct);
  CHECK(h.target == "n3");
  CHECK(await_notice(*t.n3, [](const LeaseNotice& n) { return n.kind == LeaseNotice::Kind::free; }));
  CHECK(query_value("SELECT count(*) FROM lease_agent.master WHERE cluster = '" + t.c + "'") == "0");
  // n1 and n2 come before n3 in line, but the lease is n3's alone.
  const HeartbeatAnswer a1 = t.n1->heartbeat(standby());
  CHECK_FALSE(a1.holder_is_me);
  CHECK(a1.reserved_for == "n3");
  CHECK(a1.reserved_left_ms > 0);
  CHECK(a1.reserved_left_ms <= 2000);
  CHECK_FALSE(t.n2->heartbeat(standby()).holder_is_me);
  const HeartbeatAnswer a3 = t.n3->heartbeat(standby());
  CHECK(a3.holder_is_me);
  CHECK(a3.acquired);
  CHECK(a3.acquired_how == "switchover");
  CHECK(a3.epoch == t.epoch + 1);
  CHECK(query_value("SELECT node FROM lease_agent.master WHERE cluster = '" + t.c + "'") == "n3");
  // The reservation and the request are gone with the acquisition.
  CHECK(query_value("SELECT coalesce(reserved_for, '-') || coalesce(switchover_to, '-') FROM lease_agent.lease "
                    "WHERE cluster = '" + t.c + "'") == "--");
  // A second request to the master it now is changes nothing.
  const SwitchoverRequest again = op->request_switchover("n3", "");
  CHECK_FALSE(again.requested);
  CHECK(again.master == "n3");
}

TEST_CASE("a switchover without a target goes to the next in line", "[store][switchover]") {
  ThreeNodes t("switchover-next");
  auto op = make_store(t.c, "operator-x", "", false);
  const SwitchoverRequest r = op->request_switchover("", "");
  CHECK(r.requested);
  // The operator's own connection registered nothing: the next in line is n2.
  CHECK(r.target == "n2");
}

TEST_CASE("switchover refusals name which and who is master", "[store][switchover]") {
  ThreeNodes t("switchover-refused");
  auto op = make_store(t.c, "op", "", false);
  SECTION("an unknown node") {
    const std::string why = refusal(*op, "n9");
    CHECK(why.find("node n9 is unknown in cluster " + t.c) != std::string::npos);
    CHECK(why.find("the master is n1") != std::string::npos);
  }
  SECTION("a gone node") {
    expire_node(t.c, "n3");
    const std::string why = refusal(*op, "n3");
    CHECK(why.find("node n3 of cluster " + t.c + " is gone") != std::string::npos);
    CHECK(why.find("the master is n1") != std::string::npos);
  }
  SECTION("--from is not the master") {
    const std::string why = refusal(*op, "n3", "n2");
    CHECK(why.find("node n2 is not the master") != std::string::npos);
    CHECK(why.find("the master is n1") != std::string::npos);
  }
  SECTION("no master now") {
    REQUIRE(t.n1->leave(false).released);
    const std::string why = refusal(*op, "n3");
    CHECK(why.find("no master in cluster " + t.c) != std::string::npos);
  }
  SECTION("no live standby left") {
    expire_node(t.c, "n2");
    expire_node(t.c, "n3");
    const std::string why = refusal(*op, "");
    CHECK(why.find("no live standby") != std::string::npos);
  }
  // Nothing changed: n1 still holds its term.
  if (query_value("SELECT holder FROM lease_agent.lease WHERE cluster = '" + t.c + "'") == "n1")
    CHECK(t.n1->heartbeat(as_master(t.epoch)).switchover_to.empty());
}

TEST_CASE("a hand-over with no request standing, or whose target is gone, changes nothing", "[store][switchover]") {
  ThreeNodes t("handover-none");
  CHECK_FALSE(t.n1->hand_over(true).handed_over);
  auto op = make_store(t.c, "op", "", false);
  REQUIRE(op->request_switchover("n2", "").requested);
  expire_node(t.c, "n2");
  const HandOver h = t.n1->hand_over(true);
  CHECK_FALSE(h.handed_over);
  CHECK(query_value("SELECT holder FROM lease_agent.lease WHERE cluster = '" + t.c + "'") == "n1");
  // A standby cannot hand over what it does not hold.
  CHECK_FALSE(t.n3->hand_over(true).handed_over);
}

TEST_CASE("a reservation lapses after ttl: then the first in line takes the free lease", "[store][switchover]") {
  ThreeNodes t("reservation-lapse");
  auto op = make_store(t.c, "op", "", false);
  REQUIRE(op->request_switchover("n3", "").requested);
  REQUIRE(t.n1->hand_over(false).handed_over);
  // Until it lapses (ttl = 2 s from the hand-over, the database's clock), n2 may not.
  HeartbeatAnswer a = t.n2->heartbeat(standby());
  REQUIRE_FALSE(a.holder_is_me);
  REQUIRE(a.reserved_for == "n3");
  // Make it lapse now instead of waiting.
  {
    auto c = connect_db();
    pqxx::nontransaction tx(*c);
    tx.exec("UPDATE lease_agent.lease SET reserved_until = clock_timestamp() WHERE cluster = " + tx.quote(t.c));
  }
  a = t.n1->heartbeat(standby());  // n1 is first in line
  CHECK(a.holder_is_me);
  CHECK(a.acquired_how == "free");
  CHECK(a.epoch == t.epoch + 1);
}

TEST_CASE("schema apply upgrades a version-2 database in place while version-2 agents run", "[store][upgrade]") {
  // A database of its own, at schema version 2.
  const std::string db = "la_upgrade_" + std::to_string(::getpid());
  const std::string dsn = fresh_database(db, "schema_v2.sql");
  // Two agents of version 2: their statements, prepared as they prepare them.
  OldAgent o1(dsn, "o1", "heartbeat", "v2"), o2(dsn, "o2", "heartbeat", "v2");
  REQUIRE(o1.beat(-1)["o_role"].as<std::string>() == "master");
  REQUIRE(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  const std::int64_t epoch = o1.beat(1)["o_epoch"].as<std::int64_t>();
  REQUIRE(epoch == 1);

  // The upgrade, while they run.
  const StoreOptions o = upgrade_in_place(dsn, "n3-v3");

  // The version-2 agents go on over the statements they prepared before: the master
  // renews its term, the standby stays standby.
  const pqxx::row r1 = o1.beat(epoch);
  CHECK(r1["o_role"].as<std::string>() == "master");
  CHECK(r1["o_epoch"].as<std::int64_t>() == epoch);
  CHECK(o2.beat(-1)["o_role"].as<std::string>() == "standby");

  // A version-3 agent joins; a switchover of a version-2 master is refused, not lost.
  LeaseStore n3(o);
  n3.connect(true);
  CHECK_FALSE(n3.heartbeat(standby()).holder_is_me);
  try {
    n3.request_switchover("n3", "");
    FAIL("a switchover of a version-2 master was not refused");
  } catch (const SwitchoverRefused& e) {
    CHECK(std::string(e.what()).find("cannot hand over") != std::string::npos);
  }
  // Succession across versions: o1 leaves, o2 (first in line) takes over, then n3.
  o1.leave();
  const pqxx::row r2 = o2.beat(-1);
  CHECK(r2["o_role"].as<std::string>() == "master");
  CHECK(r2["o_epoch"].as<std::int64_t>() == epoch + 1);
  o2.leave();
  const HeartbeatAnswer a3 = n3.heartbeat(standby());
  CHECK(a3.holder_is_me);
  CHECK(a3.epoch == epoch + 2);
  n3.disconnect();
  o1.conn.disconnect();
  o2.conn.disconnect();
  auto c = connect_db();
  pqxx::nontransaction tx(*c);
  tx.exec("DROP DATABASE IF EXISTS " + db);
}

// ---------------------------------------------------------------------------
// Schema 4: strict fencing, server lives, the line kept across outages.

namespace {

// The pid of the backend of the session whose application_name is `app`, once it waits
// for a lock (bounded: 10 s); 0 if it never did.
int await_lock_wait(const std::string& app) {
  for (int i = 0; i < 1000; ++i) {
    const std::string pid = query_value(
        "SELECT pid FROM pg_stat_activity WHERE application_name = '" + app + "' AND wait_event_type = 'Lock'");
    if (!pid.empty()) return std::stoi(pid);
    std::this_thread::sleep_for(milliseconds(10));
  }
  return 0;
}

void exec_each(pqxx::connection& c, const std::string& sql) {
  pqxx::nontransaction tx(c);
  tx.exec(sql);
}

}  // namespace

TEST_CASE("strict fencing: a write that passed assert_master commits before the next term begins, or fails",
          "[store][fence]") {
  const std::string c = unique_cluster("strict");
  auto n1 = make_store(c, "strict-n1");
  auto n2 = make_store(c, "strict-n2");
  const HeartbeatAnswer a = n1->heartbeat(standby());
  REQUIRE(a.holder_is_me);
  const HeartbeatAnswer s = n2->heartbeat(standby());
  auto app = connect_db();
  exec_each(*app, "CREATE TABLE IF NOT EXISTS public.fence_test (cluster text, epoch bigint, note text)");
  const std::string assert_n1 =
      "SELECT lease_agent.assert_master('" + c + "', 'strict-n1', " + std::to_string(a.epoch) + ")";
  auto rows = [&](const std::string& note) {
    return query_value("SELECT count(*) FROM public.fence_test WHERE cluster = '" + c + "' AND note = '" + note + "'");
  };

  SECTION("a renewal does not wait behind a transaction that holds the fence") {
    pqxx::work tx(*app);
    tx.exec(assert_n1);
    const HeartbeatAnswer r = n1->heartbeat(as_master(a.epoch));  // would time out (55P03) if it waited
    CHECK(r.holder_is_me);
    CHECK(r.epoch == a.epoch);
    tx.exec("INSERT INTO public.fence_test VALUES ('" + c + "', " + std::to_string(a.epoch) + ", 'renewal')");
    tx.commit();
    CHECK(rows("renewal") == "1");
  }
  SECTION("the takeover waits for a transaction that passed the fence, and it commits first") {
    pqxx::work tx(*app);
    tx.exec(assert_n1);
    expire_node(c, "strict-n1");
    auto takeover = std::async(std::launch::async, [&] { return n2->heartbeat(watching(s.version)); });
    REQUIRE(await_lock_wait("lease-agent strict-n2") != 0);  // the acquisition waits for the fence
    tx.exec("INSERT INTO public.fence_test VALUES ('" + c + "', " + std::to_string(a.epoch) + ", 'waited')");
    tx.commit();
    const HeartbeatAnswer t = takeover.get();
    CHECK(t.holder_is_me);
    CHECK(t.epoch == a.epoch + 1);
    CHECK(t.fence_ended == 0);
    CHECK(rows("waited") == "1");
  }
  SECTION("a transaction that holds the fence past a tenth of ttl is ended, and its write fails") {
    pqxx::work tx(*app);
    tx.exec(assert_n1);
    tx.exec("INSERT INTO public.fence_test VALUES ('" + c + "', " + std::to_string(a.epoch) + ", 'ended')");
    expire_node(c, "strict-n1");
    const HeartbeatAnswer t = n2->heartbeat(watching(s.version));
    CHECK(t.holder_is_me);
    CHECK(t.epoch == a.epoch + 1);
    CHECK(t.fence_ended == 1);
    CHECK(t.fence_wait_ms >= 200);  // it waited its bound first (ttl 2s / 10)
    CHECK_THROWS(tx.commit());
    CHECK(rows("ended") == "0");
  }
  SECTION("after the next term began, assert_master of the old term fails, in every isolation level") {
    expire_node(c, "strict-n1");
    REQUIRE(n2->heartbeat(watching(s.version)).holder_is_me);
    {
      pqxx::work tx(*app);
      try {
        tx.exec(assert_n1);
        FAIL("assert_master accepted the ended term");
      } catch (const pqxx::sql_error& e) {
        CHECK(e.sqlstate() == "LA001");
      }
    }
  }
  SECTION("repeatable read: a snapshot taken before the takeover cannot pass the fence after it") {
    pqxx::transaction<pqxx::isolation_level::repeatable_read> tx(*app);
    tx.exec("SELECT epoch FROM lease_agent.lease WHERE cluster = '" + c + "'");  // the snapshot
    expire_node(c, "strict-n1");
    REQUIRE(n2->heartbeat(watching(s.version)).holder_is_me);
    try {
      tx.exec(assert_n1);
      FAIL("assert_master passed on a snapshot of the ended term");
    } catch (const pqxx::serialization_failure&) {
      SUCCEED("the transaction fails: could not serialize access (40001)");
    }
  }
}

TEST_CASE("the server's life: the same across reconnections and a clean restart, new after crash recovery",
          "[store][life]") {
  const char* pgdir = std::getenv("LEASE_AGENT_TEST_PGDIR");
  REQUIRE(pgdir != nullptr);  // scripts/pg.sh's directory: this test restarts the server
  const std::string pg = std::string(LEASE_AGENT_SOURCE_DIR) + "/scripts/pg.sh";
  const std::string c = unique_cluster("life");
  auto s = make_store(c, "n1");
  // Connects again, bounded, while the server recovers.
  auto reconnect = [&] {
    for (int i = 0; i < 300; ++i) {
      try {
        s->connect(false);
        return s->server_life();
      } catch (const StoreError&) {
        std::this_thread::sleep_for(milliseconds(100));
      }
    }
    FAIL("the database did not come back within 30 s");
    return std::string();
  };
  const std::string l1 = s->server_life();
  REQUIRE_FALSE(l1.empty());
  CHECK(reconnect() == l1);  // a reconnection
  REQUIRE(std::system((pg + " restart " + pgdir + " fast >/dev/null 2>&1").c_str()) == 0);
  CHECK(reconnect() == l1);  // a clean restart loses nothing
  // A crash of one backend: the postmaster ends every session and runs crash recovery.
  {
    auto victim = connect_db();
    pqxx::nontransaction tx(*victim);
    const int backend = tx.exec("SELECT pg_backend_pid()")[0][0].as<int>();
    REQUIRE(::kill(backend, SIGKILL) == 0);
  }
  const std::string l2 = reconnect();
  CHECK(l2 != l1);
  REQUIRE(std::system((pg + " restart " + pgdir + " immediate >/dev/null 2>&1").c_str()) == 0);
  const std::string l3 = reconnect();
  CHECK(l3 != l2);
  CHECK(l3 != l1);
}

TEST_CASE("the line of succession: a node keeps its place while its incarnation lives, across an outage",
          "[store]") {
  const std::string c = unique_cluster("line");
  auto n1 = make_store(c, "n1");
  auto n2 = make_store(c, "n2");
  auto n3 = make_store(c, "n3");
  const HeartbeatAnswer a = n1->heartbeat(standby());
  REQUIRE(a.holder_is_me);
  n2->heartbeat(standby());
  const HeartbeatAnswer s3 = n3->heartbeat(standby());
  const std::string line = "SELECT string_agg(node, ',' ORDER BY registered_at, node) FROM lease_agent.node "
                           "WHERE cluster = '" + c + "'";
  // An outage of the database longer than ttl: every registration and the lease lapsed.
  auto outage = [&] {
    auto db = connect_db();
    exec_each(*db, "UPDATE lease_agent.node SET heartbeat_at = clock_timestamp() - interval '5 s', "
                   "expires_at = clock_timestamp() - interval '3 s' WHERE cluster = '" + c + "'");
    exec_each(*db, "UPDATE lease_agent.lease SET expires_at = clock_timestamp() - interval '3 s' "
                   "WHERE cluster = '" + c + "'");
  };
  SECTION("the first to come back is not the first in line: it waits for those before it") {
    outage();
    const HeartbeatAnswer t3 = n3->heartbeat(watching(s3.version));
    CHECK_FALSE(t3.holder_is_me);
    CHECK(t3.first_in_line == "n1");
    const HeartbeatAnswer t2 = n2->heartbeat(watching(s3.version));
    CHECK_FALSE(t2.holder_is_me);
    CHECK(t2.first_in_line == "n1");
    const HeartbeatAnswer t1 = n1->heartbeat(standby());  // its own lease: a new term
    CHECK(t1.holder_is_me);
    CHECK(t1.epoch == a.epoch + 1);
    CHECK(query_value(line) == "n1,n2,n3");
  }
  SECTION("a node that does not come back within ttl of the resumption is passed over") {
    outage();
    CHECK_FALSE(n3->heartbeat(watching(s3.version)).holder_is_me);
    CHECK_FALSE(n2->heartbeat(watching(s3.version)).holder_is_me);
    auto db = connect_db();
    exec_each(*db, "UPDATE lease_agent.lease SET resumed_at = resumed_at - interval '3 s' WHERE cluster = '" + c + "'");
    const HeartbeatAnswer t2 = n2->heartbeat(watching(s3.version));
    CHECK(t2.holder_is_me);
    CHECK(t2.acquired_how == "expired");
  }
  SECTION("a node that left gives up its place") {
    n1->leave(true);
    const HeartbeatAnswer t2 = n2->heartbeat(standby());  // free: the first live in line
    CHECK(t2.holder_is_me);
    CHECK_FALSE(query_value("SELECT left_at FROM lease_agent.node WHERE cluster = '" + c + "' AND node = 'n1'").empty());
  }
  SECTION("a lapsed registration of the same incarnation keeps its place; a new incarnation joins the back") {
    expire_node(c, "n2");
    n2->heartbeat(standby());
    CHECK(query_value(line) == "n1,n2,n3");
    expire_node(c, "n2");
    auto n2b = make_store(c, "n2", "n2-second-life");
    n2b->heartbeat(standby());
    CHECK(query_value(line) == "n1,n3,n2");
  }
}

TEST_CASE("schema apply upgrades a version-3 database in place while version-3 agents run", "[store][upgrade]") {
  const std::string db = "la_upgrade3_" + std::to_string(::getpid());
  const std::string dsn = fresh_database(db, "schema_v3.sql");
  {
    pqxx::connection c(dsn);
    pqxx::nontransaction tx(c);
    // An agents' role granted as a version-3 deployment did (before lease_agent.term existed).
    tx.exec("GRANT USAGE ON SCHEMA lease_agent TO lease_agent_pw");
    tx.exec("GRANT SELECT, INSERT, UPDATE ON ALL TABLES IN SCHEMA lease_agent TO lease_agent_pw");
  }
  // Two agents of version 3: their statements, prepared as they prepare them.
  OldAgent o1(dsn, "o1", "heartbeat_v3", "v3"), o2(dsn, "o2", "heartbeat_v3", "v3");
  REQUIRE(o1.beat(-1)["o_role"].as<std::string>() == "master");
  REQUIRE(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  const std::int64_t epoch = o1.beat(1)["o_epoch"].as<std::int64_t>();
  REQUIRE(epoch == 1);

  const StoreOptions o = upgrade_in_place(dsn, "n3-v4");
  pqxx::connection app(dsn);
  {
    pqxx::nontransaction tx(app);
    // The term held across the upgrade is fenced strictly too.
    CHECK_NOTHROW(tx.exec("SELECT lease_agent.assert_master('c', 'o1', 1)"));
  }
  // The version-3 agents go on over the statements they prepared before.
  const pqxx::row r1 = o1.beat(epoch);
  CHECK(r1["o_role"].as<std::string>() == "master");
  CHECK(r1["o_epoch"].as<std::int64_t>() == epoch);
  CHECK(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  // A version-4 agent joins; succession across versions, with the fence at each term.
  LeaseStore n3(o);
  n3.connect(true);
  CHECK_FALSE(n3.server_life().empty());
  CHECK_FALSE(n3.heartbeat(standby()).holder_is_me);
  o1.leave();
  const pqxx::row r2 = o2.beat(-1);
  CHECK(r2["o_role"].as<std::string>() == "master");
  CHECK(r2["o_epoch"].as<std::int64_t>() == epoch + 1);
  {
    pqxx::nontransaction tx(app);
    CHECK_THROWS(tx.exec("SELECT lease_agent.assert_master('c', 'o1', 1)"));
    CHECK_NOTHROW(tx.exec("SELECT lease_agent.assert_master('c', 'o2', 2)"));
  }
  o2.leave();
  const HeartbeatAnswer a3 = n3.heartbeat(standby());
  CHECK(a3.holder_is_me);
  CHECK(a3.epoch == epoch + 2);
  // An agent of that role goes on after the upgrade without new GRANTs: it registers,
  // and takes the lease (a new term: lease_agent.term) when the master leaves.
  const char* pw_dsn = std::getenv("LEASE_AGENT_TEST_PW_DSN");
  REQUIRE(pw_dsn != nullptr);
  std::map<std::string, std::string> pkv = dsn_keywords(pw_dsn);
  pkv["dbname"] = db;
  StoreOptions po = o;
  po.dsn.clear();
  for (const auto& [k, v] : pkv) po.dsn += k + "='" + v + "' ";
  po.node = "n4";
  po.incarnation = "n4-v4";
  LeaseStore n4(po);
  n4.connect(true);
  CHECK_FALSE(n4.heartbeat(standby()).holder_is_me);
  n3.leave(true);
  const HeartbeatAnswer a4 = n4.heartbeat(standby());
  CHECK(a4.holder_is_me);
  CHECK(a4.epoch == epoch + 3);
  n4.disconnect();
  n3.disconnect();
  o1.conn.disconnect();
  o2.conn.disconnect();
  app.disconnect();
  auto c = connect_db();
  pqxx::nontransaction tx(*c);
  tx.exec("DROP DATABASE IF EXISTS " + db);
}

TEST_CASE("schema apply upgrades a version-4 database in place while version-4 agents run", "[store][upgrade]") {
  const std::string db = "la_upgrade4_" + std::to_string(::getpid());
  const std::string dsn = fresh_database(db, "schema_v4.sql");
  // Agents of version 4: their statements, prepared as they prepare them, and a listener
  // on the shared channel of version 4.
  OldAgent o1(dsn, "o1", "heartbeat_v4", "v4"), o2(dsn, "o2", "heartbeat_v4", "v4");
  pqxx::connection listener(dsn);
  struct Count : pqxx::notification_receiver {
    explicit Count(pqxx::connection_base& c) : pqxx::notification_receiver(c, "lease_agent") {}
    void operator()(const std::string&, int) override { ++n; }
    int n = 0;
  } heard(listener);
  REQUIRE(o1.beat(-1)["o_role"].as<std::string>() == "master");
  REQUIRE(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  const std::int64_t epoch = o1.beat(1)["o_epoch"].as<std::int64_t>();
  REQUIRE(epoch == 1);
  const StoreOptions o = upgrade_in_place(dsn, "n3-now");
  // The version-4 agents go on over the statements they prepared before, and their
  // renewals are still announced on the shared channel.
  const pqxx::row r1 = o1.beat(epoch);
  CHECK(r1["o_role"].as<std::string>() == "master");
  CHECK(r1["o_epoch"].as<std::int64_t>() == epoch);
  heard.n = 0;
  listener.await_notification(5, 0);  // at most 5 s; at once when one came
  CHECK(heard.n >= 1);
  CHECK(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  // An agent of today's version joins; a version-4 master's leave sets the lease free (no hand-off
  // to anyone), and the first in line takes it as before.
  LeaseStore n3(o);
  n3.connect(true);
  CHECK_FALSE(n3.heartbeat(standby()).holder_is_me);
  o1.leave();
  CHECK(await_notice(n3, [](const LeaseNotice& n) { return n.kind == LeaseNotice::Kind::free; }));
  const pqxx::row r2 = o2.beat(-1);
  CHECK(r2["o_role"].as<std::string>() == "master");
  CHECK(r2["o_epoch"].as<std::int64_t>() == epoch + 1);
  // Today's master does not hand off to a version-4 node: it sets the lease free.
  o2.leave();
  REQUIRE(n3.heartbeat(standby()).holder_is_me);
  OldAgent o4(dsn, "o4", "heartbeat_v4", "v4");
  CHECK(o4.beat(-1)["o_role"].as<std::string>() == "standby");
  const Leave l = n3.leave(true);
  CHECK(l.released);
  CHECK(l.handed_to.empty());
  CHECK(o4.beat(-1)["o_role"].as<std::string>() == "master");
  n3.disconnect();
  o1.conn.disconnect();
  o2.conn.disconnect();
  o4.conn.disconnect();
  listener.disconnect();
  auto c = connect_db();
  pqxx::nontransaction tx(*c);
  tx.exec("DROP DATABASE IF EXISTS " + db);
}

// An agent of version 5 as it runs: heartbeat_v5 and the leave of schema 5, prepared before
// the upgrade, and listening on its cluster's channel.
struct Agent5 {
  Agent5(const std::string& dsn, std::string node_name)
      : conn(dsn), node(std::move(node_name)), incarnation(node + "-v5") {
    conn.prepare("heartbeat",
                 "SELECT * FROM lease_agent.heartbeat_v5($1, $2, $3, $4, $5, "
                 "NULLIF($6::bigint, -1), NULLIF($7::bigint, -1), $8, $9)");
    conn.prepare("leave", "SELECT released, handed_to, epoch FROM lease_agent.leave($1, $2, $3, $4)");
    pqxx::nontransaction tx(conn);
    listener = std::make_unique<Heard>(conn, tx.exec("SELECT lease_agent.channel('c')")[0][0].as<std::string>());
  }
  pqxx::row beat(std::int64_t epoch) {
    pqxx::nontransaction tx(conn);
    return tx.exec_prepared("heartbeat", "c", node, incarnation, "", 2000, epoch, -1, true, 500)[0];
  }
  pqxx::row leave() {
    pqxx::nontransaction tx(conn);
    return tx.exec_prepared("leave", "c", node, incarnation, true)[0];
  }
  // Waits (bounded) for a notification whose payload has `part`.
  bool heard(const std::string& part) {
    for (int round = 0; round < 50; ++round) {
      for (const std::string& p : listener->payloads)
        if (p.find(part) != std::string::npos) return true;
      conn.await_notification(0, 100000);  // at most 100 ms; at once when one came
    }
    return false;
  }
  struct Heard : pqxx::notification_receiver {
    Heard(pqxx::connection_base& c, const std::string& channel) : pqxx::notification_receiver(c, channel) {}
    void operator()(const std::string& payload, int) override { payloads.push_back(payload); }
    std::vector<std::string> payloads;
  };
  pqxx::connection conn;
  std::string node;
  std::string incarnation;
  std::unique_ptr<Heard> listener;
};

TEST_CASE("schema apply upgrades a version-5 database in place while version-5 agents run", "[store][upgrade]") {
  const std::string db = "la_upgrade5_" + std::to_string(::getpid());
  const std::string dsn = fresh_database(db, "schema_v5.sql");
  Agent5 o1(dsn, "o1"), o2(dsn, "o2");
  REQUIRE(o1.beat(-1)["o_role"].as<std::string>() == "master");
  REQUIRE(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  const std::int64_t epoch = o1.beat(1)["o_epoch"].as<std::int64_t>();
  REQUIRE(epoch == 1);
  const StoreOptions o = upgrade_in_place(dsn, "n3-v6");
  // The version-5 agents go on over the statements they prepared before.
  CHECK(o1.beat(epoch)["o_epoch"].as<std::int64_t>() == epoch);
  CHECK(o2.beat(-1)["o_role"].as<std::string>() == "standby");
  LeaseStore n3(o);
  n3.connect(true);
  CHECK_FALSE(n3.heartbeat(standby()).holder_is_me);
  // A version-5 master hands off to the version-5 node next in line, on the cluster's
  // channel, which that node listens on.
  const pqxx::row l1 = o1.leave();
  CHECK(l1["handed_to"].as<std::string>() == "o2");
  CHECK(o2.heard("\nhanded\nc\n" + std::to_string(epoch + 1) + "\n" + o2.incarnation + "\n"));
  CHECK(o2.beat(epoch + 1)["o_role"].as<std::string>() == "master");
  // A version-5 master hands off to a version-6 node on that node's own channel as well;
  // the version-6 node heard nothing of the hand-off to o2 before it.
  const pqxx::row l2 = o2.leave();
  CHECK(l2["handed_to"].as<std::string>() == "n3");
  std::vector<LeaseNotice> got;
  CHECK(await_notice(n3, [&](const LeaseNotice& n) {
    got.push_back(n);
    return n.kind == LeaseNotice::Kind::handed;
  }));
  REQUIRE(got.size() == 1);
  CHECK(got[0].to_me);
  CHECK(got[0].epoch == epoch + 2);
  REQUIRE(n3.heartbeat(as_master(epoch + 2)).holder_is_me);
  // A switchover from the version-6 master to a version-5 node: the master hears the
  // request on its own channel, the target its hand-off on the cluster's.
  Agent5 o4(dsn, "o4");
  CHECK(o4.beat(-1)["o_role"].as<std::string>() == "standby");
  StoreOptions oo = o;
  oo.node = "operator";
  oo.incarnation = "operator-1";
  LeaseStore op(oo);
  op.connect(false);
  REQUIRE(op.request_switchover("o4", "n3").requested);
  CHECK(await_notice(n3, [](const LeaseNotice& n) { return n.kind == LeaseNotice::Kind::switchover && n.target == "o4"; }));
  const HandOver h = n3.hand_over(true);
  CHECK(h.handed_over);
  CHECK(h.direct);
  CHECK(o4.heard("\nhanded\nc\n" + std::to_string(epoch + 3) + "\n" + o4.incarnation + "\nswitchover"));
  CHECK(o4.beat(epoch + 3)["o_role"].as<std::string>() == "master");
  op.disconnect();
  n3.disconnect();
  o1.conn.disconnect();
  o2.conn.disconnect();
  o4.conn.disconnect();
  auto c = connect_db();
  pqxx::nontransaction tx(*c);
  tx.exec("DROP DATABASE IF EXISTS " + db);
}

TEST_CASE("the rehearsal of the clean stop at connect leaves no row behind", "[store][handoff]") {
  const std::string c = unique_cluster("rehearsal");
  auto s = make_store(c, "n1", "", /*listen=*/true);  // a daemon's connection rehearses
  for (const char* table : {"node", "lease", "term"})
    CHECK(query_value(std::string("SELECT count(*) FROM lease_agent.") + table +
                      " WHERE cluster LIKE 'lease-agent rehearsal %'") == "0");
  // And the connection still works as before.
  CHECK(s->heartbeat(standby()).holder_is_me);
}
