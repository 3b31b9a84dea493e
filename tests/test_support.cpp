// Test support for the tests that talk to a real PostgreSQL.
#include "test_support.h"

#include <libpq-fe.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <mutex>

#include "lease_store.h"

namespace lease_agent_test {

std::string test_dsn() {
  const char* dsn = std::getenv("LEASE_AGENT_TEST_DSN");
  if (dsn == nullptr || *dsn == '\0')
    FAIL("LEASE_AGENT_TEST_DSN is not set: run the tests with scripts/test.sh, which starts PostgreSQL");
  return dsn;
}

void ensure_schema() {
  static std::once_flag once;
  std::call_once(once, [] {
    lease_agent::StoreOptions o;
    o.dsn = test_dsn();
    o.cluster = "schema";
    o.node = "test";
    lease_agent::LeaseStore store(o);
    store.connect(false, false);
    store.apply_schema();
  });
}

std::string unique_cluster(const std::string& prefix) {
  static std::atomic<int> n{0};
  return prefix + "-" + std::to_string(::getpid()) + "-" + std::to_string(++n);
}

std::unique_ptr<pqxx::connection> connect_db() { return std::make_unique<pqxx::connection>(test_dsn()); }

std::string query_value(const std::string& sql) {
  auto c = connect_db();
  pqxx::nontransaction tx(*c);
  const pqxx::result r = tx.exec(sql);
  if (r.empty() || r[0][0].is_null()) return "";
  return r[0][0].as<std::string>();
}

std::map<std::string, std::string> dsn_keywords(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (opts == nullptr) {
    const std::string why = err ? err : "out of memory";
    if (err) PQfreemem(err);
    FAIL("cannot parse the DSN: " << why);
  }
  std::map<std::string, std::string> kv;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
    if (o->val != nullptr && *o->val != '\0') kv[o->keyword] = o->val;
  PQconninfoFree(opts);
  return kv;
}

}  // namespace lease_agent_test
