// The application server of the traffic test and demo: it answers every GET with its
// node's name, so that a client behind the load balancer sees which node served it.
//
//   traffic_app NAME HOST:PORT       e.g. traffic_app node2 127.0.0.1:18082
//   curl http://127.0.0.1:18082/     -> node2
//
// It knows nothing of the lease: it serves whenever it is asked. Keeping traffic away
// from it while its node is not master is the load balancer's job (config/haproxy.cfg).
//
// Plain sockets rather than cpp-httplib: httplib 0.11 writes the headers and the body of
// an answer in two writes and sets TCP_NODELAY on the listening socket only, so each
// keep-alive answer waited for the client's delayed ACK (about 40 ms): too coarse to
// measure a failover gap with. Here one write per answer, TCP_NODELAY on each connection.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

namespace {

// Serves one connection: every request (headers up to the blank line; the client sends
// no body) gets the same answer, until the peer closes or sends garbage.
void serve(int fd, const std::string& answer) {
  const int one = 1;
  ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  std::string pending;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    pending.append(buf, static_cast<size_t>(n));
    if (pending.size() > 64 * 1024) break;  // not a client of ours
    std::size_t end;
    bool failed = false;
    while ((end = pending.find("\r\n\r\n")) != std::string::npos) {
      pending.erase(0, end + 4);
      if (::send(fd, answer.data(), answer.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(answer.size())) {
        failed = true;
        break;
      }
    }
    if (failed) break;
  }
  ::close(fd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: traffic_app NAME HOST:PORT\n");
    return 2;
  }
  const std::string name = argv[1];
  const std::string listen_at = argv[2];
  const auto colon = listen_at.rfind(':');
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (colon == std::string::npos || ::inet_pton(AF_INET, listen_at.substr(0, colon).c_str(), &addr.sin_addr) != 1) {
    std::fprintf(stderr, "traffic_app: %s is not IPV4:PORT\n", listen_at.c_str());
    return 2;
  }
  addr.sin_port = htons(static_cast<uint16_t>(std::atoi(listen_at.c_str() + colon + 1)));
  const std::string body = name + "\n";
  const std::string answer = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " +
                             std::to_string(body.size()) + "\r\n\r\n" + body;

  // SIGTERM and SIGINT keep their default: the process ends, as a crashed server would.
  const int lfd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  ::setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (lfd < 0 || ::bind(lfd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(lfd, 128) != 0) {
    std::fprintf(stderr, "traffic_app: cannot listen on %s: %s\n", listen_at.c_str(), std::strerror(errno));
    return 1;
  }
  std::fprintf(stderr, "traffic_app: %s serving on %s\n", name.c_str(), listen_at.c_str());
  for (;;) {
    const int fd = ::accept4(lfd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) continue;
      std::fprintf(stderr, "traffic_app: accept: %s\n", std::strerror(errno));
      return 1;
    }
    std::thread(serve, fd, answer).detach();
  }
}
