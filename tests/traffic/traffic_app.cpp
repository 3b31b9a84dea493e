// The application server of the traffic test and demo: it answers every GET with its
// node's name, so that a client behind the load balancer sees which node served it.
//
//   traffic_app NAME HOST:PORT       e.g. traffic_app node2 127.0.0.1:18082
//   curl http://127.0.0.1:18082/     -> node2
//
// It knows nothing of the lease: it serves whenever it is asked. Keeping traffic away
// from it while its node is not master is the load balancer's job (config/haproxy.cfg).
#include <httplib.h>

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: traffic_app NAME HOST:PORT\n");
    return 2;
  }
  const std::string name = argv[1];
  const std::string listen = argv[2];
  const auto colon = listen.rfind(':');
  if (colon == std::string::npos) {
    std::fprintf(stderr, "traffic_app: %s is not HOST:PORT\n", listen.c_str());
    return 2;
  }
  const std::string host = listen.substr(0, colon);
  const int port = std::atoi(listen.c_str() + colon + 1);
  const std::string body = name + "\n";

  // SIGTERM and SIGINT keep their default: the process ends, as a crashed server would.
  httplib::Server server;
  server.Get(".*", [&](const httplib::Request&, httplib::Response& res) { res.set_content(body, "text/plain"); });
  if (!server.bind_to_port(host.c_str(), port)) {
    std::fprintf(stderr, "traffic_app: cannot listen on %s\n", listen.c_str());
    return 1;
  }
  std::fprintf(stderr, "traffic_app: %s serving on %s\n", name.c_str(), listen.c_str());
  server.listen_after_bind();
  return 0;
}
