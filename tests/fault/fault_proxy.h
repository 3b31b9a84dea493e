// A TCP proxy on 127.0.0.1 between one agent and PostgreSQL, whose network faults the
// fault-injection suite turns on and off.
#pragma once

#include <chrono>
#include <memory>
#include <string>

namespace lease_agent_fault {

// Forwards every connection accepted on 127.0.0.1:port() to upstream_host:upstream_port.
// Faults apply to the connections open now and to new ones, until changed:
//  - pass:           forward both ways (the default);
//  - drop:           a silent partition: nothing is forwarded either way and nothing is
//                    closed; bytes vanish, connections hang; new connections are accepted
//                    and hang too (the client's TCP handshake completes, then silence);
//  - reset:          every open connection is closed with a TCP RST now; new connections
//                    are accepted and reset at once, while the mode lasts;
//  - drop_to_server: one-way loss: client-to-server bytes vanish, server-to-client pass;
//  - drop_to_client: one-way loss: server-to-client bytes vanish, client-to-server pass.
// set_latency() delays every forwarded chunk by that much, in both directions, on top of
// the mode (0 by default). Leaving drop restores forwarding of what arrives afterwards;
// what vanished stays lost (the connection is then usually broken, as on a real network).
//
// Thread safety: all methods may be called from any thread. One internal thread moves
// the bytes; the destructor stops it and closes every socket.
class FaultProxy {
 public:
  enum class Mode { pass, drop, reset, drop_to_server, drop_to_client };

  // Listens at once; throws std::runtime_error if it cannot.
  FaultProxy(const std::string& upstream_host, int upstream_port);
  ~FaultProxy();
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;

  int port() const;
  void set_mode(Mode m);
  void set_latency(std::chrono::milliseconds d);
  Mode mode() const;
  // Connections open now (for tests of the proxy itself).
  int open_connections() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

const char* to_string(FaultProxy::Mode m);

}  // namespace lease_agent_fault
