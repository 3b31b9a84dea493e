// Helpers of the runner and the faults (suite_support.h).
#include "suite_support.h"

#include <poll.h>
#include <signal.h>

#include <sstream>

namespace fault_suite {

std::map<std::string, std::string> parse_dsn(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (!opts) {
    const std::string why = err ? err : "out of memory";
    if (err) PQfreemem(err);
    throw std::runtime_error("cannot parse the dsn: " + why);
  }
  std::map<std::string, std::string> kv;
  for (PQconninfoOption* o = opts; o->keyword; ++o)
    if (o->val && *o->val) kv[o->keyword] = o->val;
  PQconninfoFree(opts);
  return kv;
}

std::string build_dsn(const std::map<std::string, std::string>& kv) {
  std::string out;
  for (const auto& [k, v] : kv) {
    std::string q;
    for (char c : v) {
      if (c == '\'' || c == '\\') q += '\\';
      q += c;
    }
    if (!out.empty()) out += ' ';
    out += k + "='" + q + "'";
  }
  return out;
}

std::string sql_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') out += '\'';
    out += c;
  }
  return out + "'";
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::istringstream in(s);
  std::string part;
  while (std::getline(in, part, sep)) out.push_back(part);
  return out;
}

std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

pid_t spawn(const std::vector<std::string>& args, const std::vector<std::pair<std::string, std::string>>& extra_env,
            const std::string& log_path) {
  return lease_agent_proc::spawn_process(args, extra_env, log_path, log_path);
}

std::optional<int> wait_exit(pid_t pid, i64 limit_ms) { return lease_agent_proc::wait_pid(pid, Ms(limit_ms)); }

int run_bounded(const std::vector<std::string>& args, const std::string& log_path, i64 limit_ms) {
  const pid_t pid = spawn(args, {}, log_path);
  const std::optional<int> st = wait_exit(pid, limit_ms);
  if (st) return *st;
  ::kill(pid, SIGKILL);
  wait_exit(pid, 5000);
  return -1;
}

Db::Db(const std::string& dsn, const std::string& application_name, i64 call_limit_ms) : limit_ms_(call_limit_ms) {
  auto kv = parse_dsn(dsn);
  if (!kv.count("connect_timeout")) kv["connect_timeout"] = "3";
  kv["application_name"] = application_name;
  conn_ = PQconnectdb(build_dsn(kv).c_str());
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string why = PQerrorMessage(conn_);
    PQfinish(conn_);
    conn_ = nullptr;
    throw std::runtime_error("cannot connect to the database: " + one_line(why));
  }
  // The server's notices (a crash of another backend, say) are not the suite's output.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  exec("SET statement_timeout = " + std::to_string(std::max<i64>(100, limit_ms_ - 1000)));
}

Db::~Db() {
  if (conn_) PQfinish(conn_);
}

Result Db::try_exec(const std::string& sql) {
  Result out;
  if (!conn_) {
    out.error = "no connection";
    return out;
  }
  if (!PQsendQuery(conn_, sql.c_str())) {
    out.error = one_line(PQerrorMessage(conn_));
    return out;
  }
  // Wait for the whole answer, bounded: on the limit the connection is closed (the
  // server ends the statement by its own statement_timeout).
  const i64 deadline = mono_ns() + ms_to_ns(limit_ms_);
  PGresult* last = nullptr;
  for (;;) {
    while (!PQisBusy(conn_)) {
      PGresult* r = PQgetResult(conn_);
      if (!r) goto done;
      if (last) PQclear(last);
      last = r;
    }
    const i64 left = (deadline - mono_ns()) / 1000000;
    if (left <= 0) {
      if (last) PQclear(last);
      PQfinish(conn_);
      conn_ = nullptr;
      out.error = "no answer within " + std::to_string(limit_ms_) + "ms";
      return out;
    }
    pollfd p{PQsocket(conn_), POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<i64>(left, 100))) < 0 && errno != EINTR) break;
    if (!PQconsumeInput(conn_)) break;
  }
  if (last) PQclear(last);
  out.error = one_line(PQerrorMessage(conn_));
  return out;
done:
  if (!last) {
    out.error = "no result";
    return out;
  }
  const ExecStatusType st = PQresultStatus(last);
  if (st == PGRES_TUPLES_OK || st == PGRES_COMMAND_OK) {
    out.ok = true;
    for (int i = 0; i < PQntuples(last); ++i) {
      std::vector<std::string> row;
      for (int j = 0; j < PQnfields(last); ++j) row.push_back(PQgetisnull(last, i, j) ? "" : PQgetvalue(last, i, j));
      out.rows.push_back(std::move(row));
    }
  } else {
    const char* state = PQresultErrorField(last, PG_DIAG_SQLSTATE);
    out.sqlstate = state ? state : "";
    out.error = one_line(PQresultErrorMessage(last));
  }
  PQclear(last);
  return out;
}

Rows Db::exec(const std::string& sql) {
  Result r = try_exec(sql);
  if (!r.ok) throw std::runtime_error("query failed: " + r.error);
  return std::move(r.rows);
}

}  // namespace fault_suite
