// The lease store on PostgreSQL through libpqxx 6.4: every SQL statement the agent sends.
#include "lease_store.h"

#include <fcntl.h>
#include <libpq-fe.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <pqxx/pqxx>
#include <set>
#include <sstream>

namespace lease_agent {
namespace {

// Why a connection was refused. The server writes its messages in its own lc_messages
// (a refused password reads "Passwort-Authentifizierung ... fehlgeschlagen" under
// German), so only its SQLSTATE tells what it meant. libpqxx 6.4 gives nothing but that
// text for a failed connect, so a failed connect is tried once more with libpq alone,
// in verbose mode, where libpq puts the SQLSTATE before the server's message
// ("FATAL:  28P01: ..."). The second try is bounded by `limit`; one that connects, or
// learns nothing in time, leaves the failure one to wait out.
struct ConnectRefusal {
  std::vector<std::string> sqlstates;  // of the server's errors (one per host tried)
  bool needs_password = false;         // the server asked for a password the dsn lacks
  bool connected = false;              // the second try got through
};

ConnectRefusal diagnose_connect_failure(const std::string& conninfo, milliseconds limit) {
  ConnectRefusal r;
  PGconn* c = PQconnectStart(conninfo.c_str());
  if (c == nullptr) return r;
  PQsetErrorVerbosity(c, PQERRORS_VERBOSE);  // before the server's answer is read
  const TimePoint until = Clock::now() + limit;
  // As if PQconnectPoll had said "writing", as libpq's documentation has it.
  PostgresPollingStatusType st = PQstatus(c) == CONNECTION_BAD ? PGRES_POLLING_FAILED : PGRES_POLLING_WRITING;
  while (st == PGRES_POLLING_READING || st == PGRES_POLLING_WRITING) {
    const auto left = std::chrono::duration_cast<milliseconds>(until - Clock::now()).count();
    if (left <= 0 || PQsocket(c) < 0) break;
    pollfd p{PQsocket(c), static_cast<short>(st == PGRES_POLLING_READING ? POLLIN : POLLOUT), 0};
    const int ready = ::poll(&p, 1, static_cast<int>(left));
    if (ready < 0 && errno != EINTR) break;
    if (ready > 0) st = PQconnectPoll(c);
  }
  r.connected = st == PGRES_POLLING_OK;
  if (st == PGRES_POLLING_FAILED) {
    // "<severity>:  <SQLSTATE>: <message>" for each error the server sent.
    const std::string msg = PQerrorMessage(c);
    for (std::size_t i = msg.find(":  "); i != std::string::npos; i = msg.find(":  ", i + 1)) {
      const std::string code = msg.substr(i + 3, 5);
      const bool is_code = code.size() == 5 && std::all_of(code.begin(), code.end(), [](char ch) {
                             return (ch >= '0' && ch <= '9') || (ch >= 'A' && ch <= 'Z');
                           });
      if (is_code && msg.compare(i + 8, 2, ": ") == 0) r.sqlstates.push_back(code);
    }
    r.needs_password = PQconnectionNeedsPassword(c) == 1;
  }
  PQfinish(c);
  return r;
}

// What a SQLSTATE of a refused connection means when waiting will not cure it; empty
// when it may (53300 too many connections, 57P03 starting up or shutting down, ...).
std::string fatal_sqlstate_meaning(const std::string& state) {
  if (state.compare(0, 2, "28") == 0) return "the server refused the authentication";  // password, pg_hba, role
  if (state == "3D000") return "the database does not exist";
  if (state == "42501") return "permission denied (CONNECT on the database)";
  return "";
}

// Connection failures that waiting will not cure: by the server's SQLSTATE when it
// sent one; else by libpq's own message (a client-side failure such as a missing
// password, in this process's locale: the agent never calls setlocale, so English).
// Returns what to add to the error line ("" when there is nothing to add), or nullopt
// when the failure is one to wait out.
std::optional<std::string> connect_failure_is_fatal(const ConnectRefusal& r, const std::string& msg) {
  if (r.connected) return std::nullopt;
  if (!r.sqlstates.empty()) {
    for (const std::string& state : r.sqlstates) {
      const std::string meaning = fatal_sqlstate_meaning(state);
      if (!meaning.empty()) return " (" + meaning + ", SQLSTATE " + state + ")";
    }
    return std::nullopt;
  }
  if (r.needs_password) return std::string();
  static const char* fatal[] = {
      "password authentication failed", "authentication failed", "no pg_hba.conf entry",
      "no password supplied", "password is required", "does not exist",
      "permission denied", "invalid connection option", "SSL is not supported",
      // Option values libpq refuses before it connects (dsn_problem rejects them earlier,
      // unless the environment changed): "invalid integer value", "invalid sslmode value",
      // "invalid port number", "could not match 2 port numbers to 1 hosts", ...
      "invalid integer value", "invalid port number", "could not match", "could not parse network address",
      "invalid SSL protocol version range", " value: \"",
  };
  for (const char* f : fatal)
    if (msg.find(f) != std::string::npos) return std::string();
  return std::nullopt;
}

std::string one_line(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  // libpq indents its hints with a tab ("...failed: Connection refused\n\tIs the server ...").
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::replace(s.begin(), s.end(), '\t', ' ');
  // libpq and the server prefix with "FATAL:  " / "ERROR:  "; keep, but fold spaces.
  std::string out;
  for (char c : s)
    if (!(c == ' ' && !out.empty() && out.back() == ' ')) out += c;
  return out;
}

}  // namespace

// Collects the notifications of this agent's own channel (lease_agent.announce_to).
struct LeaseStore::Listener : pqxx::notification_receiver {
  Listener(pqxx::connection_base& c, const std::string& channel, std::string cluster, std::string incarnation)
      : pqxx::notification_receiver(c, channel), cluster_(std::move(cluster)),
        incarnation_(std::move(incarnation)) {}

  // Payload: "<version>\n<kind>\n<cluster>[\n<more>...]", newline-separated (names hold no
  // control characters). Another cluster's (a hash collision of channels) is dropped.
  void operator()(const std::string& payload, int) override {
    std::vector<std::string> f;
    std::istringstream in(payload);
    for (std::string line; std::getline(in, line, '\n');) f.push_back(line);
    if (f.size() < 3 || f[2] != cluster_) return;
    LeaseNotice n;
    try {
      n.version = std::stoll(f[0]);
      if (f[1] == "free") {
        n.kind = LeaseNotice::Kind::free;
      } else if (f[1] == "switchover" && f.size() >= 5) {
        n.kind = LeaseNotice::Kind::switchover;
        n.target = f[3];
        n.epoch = std::stoll(f[4]);
      } else if (f[1] == "handed" && f.size() >= 6) {
        n.kind = LeaseNotice::Kind::handed;
        n.epoch = std::stoll(f[3]);
        n.to_me = f[4] == incarnation_;
        n.how = f[5];
      } else {
        return;  // a kind of a later schema
      }
    } catch (const std::exception&) {
      return;  // not a number: not ours to act on
    }
    notices.push_back(n);
  }

  const std::string cluster_;
  const std::string incarnation_;
  std::vector<LeaseNotice> notices;
};

// A database call that gets no answer must not hang the agent. libpq waits for an
// answer as long as the TCP connection lives, and TCP cannot tell a silent peer that
// still acknowledges (a stopped server process, a proxy or middlebox that lost its
// upstream) from a slow one: keepalives and tcp_user_timeout only catch a peer that
// stops acknowledging. So every call of the store is guarded: when it has not
// returned by its limit, the watchdog shuts the connection's socket down, libpq sees
// the connection end and the call fails; the agent reconnects as after any lost
// connection. The watchdog works on a duplicate of libpq's descriptor, its own until
// disarm(): libpq may close its descriptor during the call (a lost connection), and
// the number may then be reused by another thread's socket or pipe, which a shutdown
// of the original number would hit.
class LeaseStore::Watchdog {
 public:
  Watchdog() : thread_([this] { loop(); }) {}
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

  void arm(int fd, Clock::time_point limit) {
    std::lock_guard<std::mutex> lock(mu_);
    close_fd();
    fd_ = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);  // -1 (no guard) only if out of descriptors
    limit_ = limit;
    fired_ = false;
    cv_.notify_all();
  }
  // True if the call was cut off.
  bool disarm() {
    std::lock_guard<std::mutex> lock(mu_);
    close_fd();
    return fired_;
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (fd_ < 0) {
        cv_.wait(lock);
      } else if (Clock::now() < limit_) {
        cv_.wait_until(lock, limit_);
      } else {
        ::shutdown(fd_, SHUT_RDWR);
        fired_ = true;
        close_fd();
      }
    }
    close_fd();
  }

  void close_fd() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  std::mutex mu_;
  std::condition_variable cv_;
  int fd_ = -1;
  Clock::time_point limit_{};
  bool fired_ = false;
  bool stop_ = false;
  std::thread thread_;
};

// Arms the watchdog for one call on the current connection; throw_if_cut() turns a
// cut-off call's error into one that says so.
class LeaseStore::Guard {
 public:
  Guard(LeaseStore& store, milliseconds limit) : store_(store), limit_(limit) {
    if (store.conn_ && store.conn_->sock() >= 0) {
      store.watchdog_->arm(store.conn_->sock(), Clock::now() + limit);
      armed_ = true;
    }
  }
  ~Guard() { release(); }
  Guard(const Guard&) = delete;
  Guard& operator=(const Guard&) = delete;

  bool release() {
    if (armed_) {
      armed_ = false;
      cut_ = store_.watchdog_->disarm();
    }
    return cut_;
  }
  // After a call that succeeded: if the watchdog cut the connection just as the
  // answer came, the answer stands but the connection is gone.
  void finish() {
    if (release()) store_.disconnect();
  }
  // In a catch block, or after a call: if the watchdog cut the call, a clear error.
  void throw_if_cut(const char* doing) {
    if (!release()) return;
    store_.disconnect();
    throw StoreError(std::string(doing) + ": no answer from the database within " +
                         std::to_string(limit_.count()) + "ms; dropped the connection",
                     false);
  }

 private:
  LeaseStore& store_;
  milliseconds limit_;
  bool armed_ = false;
  bool cut_ = false;
};

LeaseStore::LeaseStore(StoreOptions options)
    : opt_(std::move(options)), watchdog_(std::make_unique<Watchdog>()) {}

LeaseStore::~LeaseStore() { disconnect(); }

// At least 250 ms: a fresh backend (after a restart of the server its caches are cold)
// may need that long for its first heartbeat, and one cut off only makes way for
// another cold one (seen in the fault suite at ttl 500ms: a storm of reconnections).
milliseconds LeaseStore::statement_timeout() const {
  return std::max({opt_.renew, opt_.ttl / 4, milliseconds(250)});
}

milliseconds LeaseStore::call_timeout() const { return 2 * statement_timeout(); }

void LeaseStore::disconnect() {
  server_life_.clear();
  if (watchdog_) watchdog_->disarm();  // before the descriptor is closed
  listener_.reset();
  conn_.reset();
}

int LeaseStore::socket() const { return conn_ ? conn_->sock() : -1; }

std::string LeaseStore::describe_connection() const {
  if (!conn_) return "(not connected)";
  std::string host = conn_->hostname() ? conn_->hostname() : "";
  std::string port = conn_->port() ? conn_->port() : "";
  std::string db = conn_->dbname() ? conn_->dbname() : "";
  return host + ":" + port + "/" + db;
}

namespace {

// The SQLSTATE of an error. libpqxx 6.4 throws some of its sql_error subclasses without
// one (insufficient_privilege, undefined_table, undefined_function, ...): their type says it.
std::string sqlstate_of(const pqxx::sql_error& e) {
  if (!e.sqlstate().empty()) return e.sqlstate();
  if (dynamic_cast<const pqxx::insufficient_privilege*>(&e)) return "42501";
  if (dynamic_cast<const pqxx::undefined_table*>(&e)) return "42P01";
  if (dynamic_cast<const pqxx::undefined_function*>(&e)) return "42883";
  if (dynamic_cast<const pqxx::undefined_column*>(&e)) return "42703";
  return "";
}

}  // namespace

void LeaseStore::fail(const std::exception& e, const char* doing) {
  const std::string what = one_line(e.what());
  if (const auto* s = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string state = sqlstate_of(*s);
    // The schema vanished or is from another version: cannot be waited out.
    if (state == "42P01" || state == "3F000" || state == "42883") {
      disconnect();
      throw StoreError(std::string(doing) + ": the lease_agent schema is missing or too old (" + what +
                           "): run `lease-agent schema apply`",
                       true);
    }
    if (state == "42501") {
      disconnect();
      throw StoreError(std::string(doing) + ": " + what + " (grant the agent's role access to schema lease_agent)",
                       true);
    }
    // A hot standby: retried (it may be promoted), with what to do about it.
    if (state == "25006") {
      disconnect();
      throw StoreError(std::string(doing) + ": " + what +
                           " (the server is a read-only standby: list the primary in dsn, or every "
                           "server with target_session_attrs=read-write)",
                       false);
    }
    // A statement or lock timeout leaves the connection usable.
    if (state == "57014" || state == "55P03")
      throw StoreError(std::string(doing) + ": " + what, false);
  }
  // Anything else may have left the connection in an unknown state: start afresh.
  disconnect();
  throw StoreError(std::string(doing) + ": " + what, false);
}

void LeaseStore::connect(bool listen, bool check_schema) {
  disconnect();
  std::string info;
  try {
    info = effective_conninfo(opt_.dsn, opt_.ttl, opt_.renew, "lease-agent " + opt_.node);
  } catch (const std::invalid_argument& e) {
    throw StoreError(std::string("dsn: ") + e.what(), true);
  }
  try {
    conn_ = std::make_unique<pqxx::connection>(info);
  } catch (const std::exception& e) {
    conn_.reset();
    const std::string what = one_line(e.what());
    const std::optional<std::string> fatal =
        connect_failure_is_fatal(diagnose_connect_failure(info, statement_timeout()), what);
    throw StoreError("cannot connect to the database: " + what + fatal.value_or(""), fatal.has_value());
  }
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
  conn_->inhibit_reactivation(true);  // reconnection is ours to decide
#pragma GCC diagnostic pop
  // Up to five round trips (settings, schema version, two statements, LISTEN), each
  // allowed a call_timeout().
  Guard guard(*this, check_schema ? 5 * call_timeout() : milliseconds(30000));
  try {
    pqxx::nontransaction tx(*conn_);
    const auto statement_timeout = this->statement_timeout().count();
    tx.exec("SET statement_timeout = " + std::to_string(statement_timeout) +
            "; SET lock_timeout = " + std::to_string(statement_timeout) +
            "; SET idle_in_transaction_session_timeout = " + std::to_string(opt_.ttl.count()));
    if (!check_schema) return;
    pqxx::result v = tx.exec("SELECT version FROM lease_agent.schema_info");
    if (v.empty() || v[0][0].as<int>() < kSchemaVersion) {
      disconnect();
      throw StoreError("the lease_agent schema is too old (version " +
                           (v.empty() ? std::string("none") : v[0][0].as<std::string>()) + ", need " +
                           std::to_string(kSchemaVersion) + "): run `lease-agent schema apply`",
                       true);
    }
    schema_version_ = v[0][0].as<int>();
    // The server's life, before any heartbeat over this connection (sql/PROTOCOL.md,
    // "Lost commits").
    // And this incarnation's own channel (schema 6: what is for this agent, a hand-off to
    // it, a switchover request while it is master, a release, is announced there, so
    // that a hand-off wakes its target alone), in the same round trip; a listening
    // (daemon's) connection also rehearses the clean stop (lease_agent.rehearse), so that
    // its one real call runs warm.
    const pqxx::result life = tx.exec_params(
        listen ? "SELECT lease_agent.server_life(), lease_agent.channel($1, $2), lease_agent.rehearse()"
               : "SELECT lease_agent.server_life(), lease_agent.channel($1, $2)",
        opt_.cluster, opt_.incarnation);
    server_life_ = life[0][0].as<std::string>();
    channel_ = life[0][1].as<std::string>();
  } catch (const StoreError&) {
    throw;
  } catch (const std::exception& e) {
    guard.throw_if_cut("checking the schema");
    fail(e, "checking the schema");
  }
  try {
    conn_->prepare("heartbeat",
                   "SELECT * FROM lease_agent.heartbeat_v6($1, $2, $3, $4, $5, "
                   "NULLIF($6::bigint, -1), NULLIF($7::bigint, -1), $8, $9)");
    conn_->prepare("leave", "SELECT released, handed_to, epoch FROM lease_agent.leave($1, $2, $3, $4)");
    conn_->prepare("hand_over", "SELECT * FROM lease_agent.hand_over($1, $2, $3, $4, $5)");
    // Now, not at the first heartbeat (libpqxx prepares lazily): a heartbeat is then
    // one round trip, which its call_timeout() is for.
    if (check_schema) {
      conn_->prepare_now("heartbeat");
      conn_->prepare_now("leave");
    }
    if (listen && !channel_.empty())
      listener_ = std::make_unique<Listener>(*conn_, channel_, opt_.cluster, opt_.incarnation);
  } catch (const std::exception& e) {
    guard.throw_if_cut("preparing statements");
    fail(e, "preparing statements");
  }
  guard.throw_if_cut("connecting");
}

HeartbeatAnswer LeaseStore::heartbeat(const HeartbeatRequest& req) {
  if (!conn_) throw StoreError("not connected", false);
  Guard guard(*this, call_timeout());
  try {
    pqxx::nontransaction tx(*conn_);
    const pqxx::result r = tx.exec_prepared(
        "heartbeat", opt_.cluster, opt_.node, opt_.incarnation, opt_.address,
        static_cast<int>(opt_.ttl.count()), req.epoch.value_or(-1), req.watched_version.value_or(-1),
        req.may_acquire, static_cast<int>(opt_.renew.count()));
    if (r.size() != 1) throw StoreError("heartbeat returned " + std::to_string(r.size()) + " rows", false);
    const pqxx::row row = r[0];
    auto text = [&](const char* col) { return row[col].is_null() ? std::string() : row[col].as<std::string>(); };
    auto num = [&](const char* col) { return row[col].is_null() ? std::int64_t{0} : row[col].as<std::int64_t>(); };
    HeartbeatAnswer a;
    a.duplicate = text("o_status") == "duplicate";
    a.duplicate_detail = text("o_detail");
    a.holder_is_me = text("o_role") == "master";
    a.acquired = !row["o_acquired"].is_null() && row["o_acquired"].as<bool>();
    a.holder = text("o_holder");
    a.holder_address = text("o_holder_address");
    a.epoch = num("o_epoch");
    a.version = num("o_version");
    a.first_in_line = text("o_first_in_line");
    a.lease_left_ms = num("o_lease_left_ms");
    a.db_now_ms = row["o_db_now_ms"].is_null() ? 0.0 : row["o_db_now_ms"].as<double>();
    a.acquired_how = text("o_acquired_how");
    a.switchover_to = text("o_switchover_to");
    a.reserved_for = text("o_reserved_for");
    a.reserved_left_ms = num("o_reserved_left_ms");
    a.fence_wait_ms = num("o_fence_wait_ms");
    a.fence_ended = static_cast<int>(num("o_fence_ended"));
    a.next_in_line_is_me = text("o_next_in_line") == opt_.node;
    a.renewed_ago_ms = row["o_renewed_ago_ms"].is_null() ? -1 : row["o_renewed_ago_ms"].as<std::int64_t>();
    a.holder_renew_ms = num("o_holder_renew_ms");
    guard.finish();
    return a;
  } catch (const StoreError&) {
    throw;
  } catch (const std::exception& e) {
    guard.throw_if_cut("heartbeat");
    fail(e, "heartbeat");
  }
}

Leave LeaseStore::leave(bool may_hand_off) {
  if (!conn_) throw StoreError("not connected", false);
  Guard guard(*this, call_timeout());
  try {
    pqxx::nontransaction tx(*conn_);
    const pqxx::result r = tx.exec_prepared("leave", opt_.cluster, opt_.node, opt_.incarnation, may_hand_off);
    Leave l;
    if (r.size() == 1) {
      l.released = !r[0][0].is_null() && r[0][0].as<bool>();
      l.handed_to = r[0][1].is_null() ? std::string() : r[0][1].as<std::string>();
      l.epoch = r[0][2].is_null() ? 0 : r[0][2].as<std::int64_t>();
    }
    guard.finish();
    return l;
  } catch (const std::exception& e) {
    guard.throw_if_cut("leave");
    fail(e, "leave");
  }
}

HandOver LeaseStore::hand_over(bool may_hand_off) {
  if (!conn_) throw StoreError("not connected", false);
  Guard guard(*this, call_timeout());
  try {
    pqxx::nontransaction tx(*conn_);
    const pqxx::result r = tx.exec_prepared("hand_over", opt_.cluster, opt_.node, opt_.incarnation,
                                            static_cast<int>(opt_.ttl.count()), may_hand_off);
    HandOver h;
    if (r.size() == 1) {
      h.handed_over = !r[0]["handed_over"].is_null() && r[0]["handed_over"].as<bool>();
      h.target = r[0]["target"].is_null() ? std::string() : r[0]["target"].as<std::string>();
      h.version = r[0]["version"].is_null() ? 0 : r[0]["version"].as<std::int64_t>();
      h.direct = !r[0]["direct"].is_null() && r[0]["direct"].as<bool>();
    }
    guard.finish();
    return h;
  } catch (const std::exception& e) {
    guard.throw_if_cut("hand-over");
    fail(e, "hand-over");
  }
}

SwitchoverRequest LeaseStore::request_switchover(const std::string& to, const std::string& from) {
  if (!conn_) throw StoreError("not connected", false);
  Guard guard(*this, milliseconds(30000));
  try {
    pqxx::nontransaction tx(*conn_);
    const pqxx::result r = tx.exec_params(
        "SELECT target, master, epoch, requested, "
        "extract(epoch FROM requested_at) * 1000 "
        "FROM lease_agent.switchover($1, NULLIF($2, ''), NULLIF($3, ''))",
        opt_.cluster, to, from);
    if (r.size() != 1) throw StoreError("switchover returned " + std::to_string(r.size()) + " rows", false);
    SwitchoverRequest s;
    s.target = r[0][0].as<std::string>();
    s.master = r[0][1].as<std::string>();
    s.epoch = r[0][2].as<std::int64_t>();
    s.requested = r[0][3].as<bool>();
    s.requested_at_ms = r[0][4].is_null() ? 0.0 : r[0][4].as<double>();
    guard.finish();
    return s;
  } catch (const pqxx::sql_error& e) {
    guard.throw_if_cut("switchover");
    const std::string& state = e.sqlstate();
    if (state.size() == 5 && state.compare(0, 2, "LA") == 0) {
      // The function's own refusal: its first line names which, and who is master.
      std::string what = e.what();
      what = what.substr(0, what.find('\n'));
      if (what.compare(0, 8, "ERROR:  ") == 0) what = what.substr(8);
      throw SwitchoverRefused(what);
    }
    fail(e, "switchover");
  } catch (const StoreError&) {
    throw;
  } catch (const std::exception& e) {
    guard.throw_if_cut("switchover");
    fail(e, "switchover");
  }
}

MasterRow LeaseStore::master() {
  if (!conn_) throw StoreError("not connected", false);
  Guard guard(*this, milliseconds(30000));
  try {
    pqxx::nontransaction tx(*conn_);
    const pqxx::result r = tx.exec_params(
        "SELECT m.node, m.epoch, extract(epoch FROM m.acquired_at) * 1000, "
        "greatest(0, extract(epoch FROM m.expires_at - clock_timestamp()) * 1000)::bigint, l.handed_at IS NULL "
        "FROM lease_agent.master m JOIN lease_agent.lease l USING (cluster) WHERE m.cluster = $1",
        opt_.cluster);
    MasterRow m;
    if (r.size() == 1) {
      m.node = r[0][0].is_null() ? std::string() : r[0][0].as<std::string>();
      m.epoch = r[0][1].as<std::int64_t>();
      m.acquired_at_ms = r[0][2].is_null() ? 0.0 : r[0][2].as<double>();
      m.lease_left_ms = r[0][3].as<std::int64_t>();
      m.confirmed = r[0][4].as<bool>();
    }
    guard.finish();
    return m;
  } catch (const std::exception& e) {
    guard.throw_if_cut("reading lease_agent.master");
    fail(e, "reading lease_agent.master");
  }
}

std::vector<LeaseNotice> LeaseStore::take_notices() {
  if (!conn_ || !listener_) return {};
  try {
    conn_->get_notifs();
  } catch (const std::exception& e) {
    fail(e, "reading notifications");
  }
  // get_notifs() returns quietly on a connection it found closed.
  if (!conn_->is_open()) {
    disconnect();
    throw StoreError("reading notifications: the connection was closed", false);
  }
  std::vector<LeaseNotice> out;
  out.swap(listener_->notices);
  return out;
}

ClusterStatus LeaseStore::cluster_status() {
  if (!conn_) throw StoreError("not connected", false);
  ClusterStatus cs;
  cs.cluster = opt_.cluster;
  Guard guard(*this, milliseconds(30000));
  try {
    pqxx::read_transaction tx(*conn_);  // one snapshot for the master, the lease and the nodes
    const pqxx::result master = tx.exec_params(
        "SELECT node, epoch, greatest(0, extract(epoch FROM expires_at - clock_timestamp()) * 1000)::bigint "
        "FROM lease_agent.master WHERE cluster = $1",
        opt_.cluster);
    if (!master.empty()) {
      cs.holder = master[0][0].as<std::string>();
      cs.epoch = master[0][1].as<std::int64_t>();
      cs.lease_left_ms = master[0][2].as<std::int64_t>();
    }
    const pqxx::result lease = tx.exec_params(
        "SELECT epoch, CASE WHEN holder IS NULL AND reserved_until > clock_timestamp() THEN reserved_for END, "
        "CASE WHEN switchover_until > clock_timestamp() THEN switchover_to END "
        "FROM lease_agent.lease WHERE cluster = $1",
        opt_.cluster);
    if (!lease.empty()) {
      if (cs.holder.empty()) cs.epoch = lease[0][0].as<std::int64_t>();
      if (!lease[0][1].is_null()) cs.reserved_for = lease[0][1].as<std::string>();
      if (!lease[0][2].is_null() && !cs.holder.empty()) cs.switchover_to = lease[0][2].as<std::string>();
    }
    const pqxx::result nodes = tx.exec_params(
        "SELECT node, address, expires_at > clock_timestamp(), "
        "to_char(registered_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
        "to_char(heartbeat_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), "
        "greatest(0, extract(epoch FROM clock_timestamp() - heartbeat_at) * 1000)::bigint, "
        "clock_timestamp() - heartbeat_at > (expires_at - heartbeat_at) / 2 "
        "FROM lease_agent.node WHERE cluster = $1 ORDER BY registered_at, node",
        opt_.cluster);
    for (const auto& row : nodes) {
      NodeStatus n;
      n.node = row[0].as<std::string>();
      n.address = row[1].as<std::string>();
      const bool live = row[2].as<bool>();
      n.holder = n.node == cs.holder;
      n.role = n.holder ? "master" : live ? "standby" : "gone";
      n.state = !live ? "gone" : row[6].as<bool>() ? "stale" : "ok";
      n.registered_at = row[3].as<std::string>();
      n.heartbeat_at = row[4].as<std::string>();
      n.heartbeat_age_ms = row[5].as<std::int64_t>();
      cs.nodes.push_back(n);
    }
  } catch (const std::exception& e) {
    guard.throw_if_cut("reading the cluster status");
    fail(e, "reading the cluster status");
  }
  guard.finish();
  return cs;
}

void LeaseStore::apply_schema() {
  if (!conn_) throw StoreError("not connected", false);
  Guard guard(*this, milliseconds(30000));
  try {
    pqxx::work tx(*conn_);
    // Two operators applying at once take turns.
    tx.exec("SELECT pg_advisory_xact_lock(hashtext('lease_agent schema apply'))");
    for (const auto& [name, text] : schema_files()) {
      try {
        tx.exec(text);
      } catch (const pqxx::sql_error& e) {
        throw StoreError("sql/" + name + ": " + one_line(e.what()), true);
      }
    }
    tx.commit();
    guard.finish();
  } catch (const StoreError&) {
    disconnect();
    throw;
  } catch (const std::exception& e) {
    guard.throw_if_cut("applying the schema");
    fail(e, "applying the schema");
  }
}

}  // namespace lease_agent
