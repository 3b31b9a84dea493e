// The database connection string (dsn): checked as libpq reads it, masked for display,
// and completed with the timeouts the agent needs. No connection is made here.
#pragma once

#include <chrono>
#include <string>

namespace lease_agent {

// The dsn with every secret replaced by "********" (keyword form password=... and
// sslpassword=..., URI user:password@, ?password=... and ?sslpassword=...), for
// check-config, logs and argv.
std::string mask_dsn(const std::string& dsn);

// Checks the dsn as libpq's own parser reads it (keyword=value or URI; every keyword
// known), then the values libpq would refuse only when it connects (integers such as
// port and connect_timeout, choices such as sslmode and target_session_attrs, numeric
// hostaddr, one port or one per host), taking libpq's environment variables (PGPORT,
// PGSSLMODE, ...) for what the dsn leaves out. Returns an empty string when it is good,
// otherwise one line of why, without anything of the dsn that could be a password.
std::string dsn_problem(const std::string& dsn);

// The libpq connection string the agent connects with: the dsn's own keywords plus,
// unless the dsn sets them, connect_timeout, keepalives, tcp_user_timeout (from ttl and
// renew), application_name, and gssencmode=disable (unless PGGSSENCMODE is set). Throws std::invalid_argument (the dsn_problem) when the
// dsn cannot be parsed.
std::string effective_conninfo(const std::string& dsn, std::chrono::milliseconds ttl,
                               std::chrono::milliseconds renew, const std::string& application_name);

}  // namespace lease_agent
