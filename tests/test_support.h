// Test support for the tests that talk to a real PostgreSQL (LEASE_AGENT_TEST_DSN).
#pragma once

#include <map>
#include <pqxx/pqxx>
#include <string>

namespace lease_agent_test {

// The DSN of the test database, from LEASE_AGENT_TEST_DSN. Fails the test
// (not skips) when it is unset: these tests must run against a real database.
std::string test_dsn();

// Applies the embedded schema to the test database, once per process.
void ensure_schema();

// A cluster name no other test (or earlier run) uses: "<prefix>-<pid>-<n>".
std::string unique_cluster(const std::string& prefix);

// A fresh connection to the test database.
std::unique_ptr<pqxx::connection> connect_db();

// The keywords of a libpq connection string (or URI) with their values.
std::map<std::string, std::string> dsn_keywords(const std::string& dsn);

// One value of a query, as text ("" for null or no row).
std::string query_value(const std::string& sql);

}  // namespace lease_agent_test
