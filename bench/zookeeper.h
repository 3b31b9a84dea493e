// ZooKeeper's leader-election recipe for alt_bench (bench/alt_bench.cpp), on the C client
// (Debian libzookeeper-mt-dev): every candidate creates an ephemeral sequential node under one
// path; the one with the lowest sequence number is leader; every other watches the node just
// before its own, so that a leader's end wakes its successor only. Like lease-agent, and unlike
// a lock that anyone may grab, this orders succession by the time each candidate joined.
#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace bench::zk {

// The C client's version ("3.8.0").
std::string client_version();

// A session of the parent (alt_bench itself), to look at the line of candidates.
class Session {
 public:
  // Connects to `hosts` ("127.0.0.1:PORT"); throws std::runtime_error if no session is
  // established within `limit`.
  Session(const std::string& hosts, std::chrono::milliseconds session_timeout, std::chrono::milliseconds limit);
  ~Session();
  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  // How many children `path` has (0 when it does not exist; -1 on an error).
  int children(const std::string& path);
  // The session timeout the server granted, in ms.
  int negotiated_timeout_ms() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// The child mode `alt_bench zk-hold`: joins the line under `path` and prints "held <node>" on
// stdout once it is leader, then waits. SIGTERM or SIGINT: deletes its node, closes the session,
// exits 0. The session expired (a freeze past the timeout, or the server says so): "zk-hold:
// session expired" on stderr, exit 1. Any other failure: a line on stderr, exit 1.
int hold(const std::string& hosts, const std::string& path, std::chrono::milliseconds session_timeout);

}  // namespace bench::zk
