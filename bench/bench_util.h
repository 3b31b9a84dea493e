// Helpers of bench/scale_bench.cpp: ports, processes, HTTP probes, waits, percentiles and
// /proc readings. (bench/failover_bench.cpp keeps its own copies of the first few.)
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <httplib.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace bench {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::duration<double, std::milli>;

inline std::string one_line(std::string why) {  // libpq's messages span lines
  std::replace_if(why.begin(), why.end(), [](char c) { return c == '\n' || c == '\t' || c == '\r'; }, ' ');
  while (!why.empty() && why.back() == ' ') why.pop_back();
  return why;
}

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

inline std::string tail_of(const std::string& path, size_t n = 400) {
  std::string t = slurp(path);
  if (t.size() > n) t = "..." + t.substr(t.size() - n);
  return one_line(t);
}

// A TCP port of 127.0.0.1 that nothing listens on now and that this process has not handed
// out before, chosen below the ephemeral range (32768 and up) so that outgoing connections
// (hundreds of agents' and our own probes') do not take it before the agent binds it.
inline int free_port() {
  static std::set<int> given;
  static std::mt19937 rng(static_cast<unsigned>(::getpid()) ^
                          static_cast<unsigned>(Clock::now().time_since_epoch().count()));
  for (int attempt = 0; attempt < 2000; ++attempt) {
    const int port = 20000 + static_cast<int>(rng() % 12000);
    if (given.count(port)) continue;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(port));
    const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
    ::close(fd);
    if (ok) {
      given.insert(port);
      return port;
    }
  }
  return 0;
}

// Starts args[0] with stdin /dev/null and stdout+stderr appended to `log` (/dev/null when
// empty). The child dies with us (PR_SET_PDEATHSIG), so no agent outlives a bench that was
// killed outright. Call from the main thread only (the signal follows the forking thread).
inline pid_t spawn(const std::vector<std::string>& args, const std::string& log = "") {
  std::vector<char*> argv;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const char* out = log.empty() ? "/dev/null" : log.c_str();
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid != 0) return pid;  // -1 on failure
  // The child: async-signal-safe calls only.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(127);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGINT, SIG_DFL);
  ::signal(SIGTERM, SIG_DFL);
  const int in = ::open("/dev/null", O_RDONLY);
  const int fd = ::open(out, O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (in >= 0) ::dup2(in, 0);
  if (fd >= 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
  }
  ::execv(argv[0], argv.data());
  ::_exit(127);
}

struct Reply {
  int status = -1;  // -1: no answer
  std::string body;
};

inline Reply http_get(int port, const char* path, int read_timeout_ms = 500) {
  httplib::Client c("127.0.0.1", port);
  c.set_connection_timeout(0, 200000);
  c.set_read_timeout(read_timeout_ms / 1000, (read_timeout_ms % 1000) * 1000);
  auto r = c.Get(path);
  Reply out;
  if (r) {
    out.status = r->status;
    out.body = r->body;
  }
  return out;
}

inline int http_status(int port) { return http_get(port, "/master").status; }

// GET /master over one keep-alive connection (reconnected when it breaks), as a load
// balancer's health check does. One thread at a time.
class KeepAliveProbe {
 public:
  explicit KeepAliveProbe(int port) : client_("127.0.0.1", port) {
    client_.set_keep_alive(true);
    client_.set_connection_timeout(0, 200000);
    client_.set_read_timeout(0, 500000);
  }
  int status() {
    auto r = client_.Get("/master");
    return r ? r->status : -1;
  }

 private:
  httplib::Client client_;
};

// Polls cond every ~0.2 ms for at most `limit`; the time it became true in *when.
template <typename F>
bool await(F cond, std::chrono::milliseconds limit, Clock::time_point* when = nullptr) {
  const auto end = Clock::now() + limit;
  for (;;) {
    if (cond()) {
      if (when) *when = Clock::now();
      return true;
    }
    if (Clock::now() >= end) return false;
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

// Nearest-rank percentile (p in [0, 1]): the smallest sample with at least p of the samples
// at or below it; p = 0 gives the minimum.
inline double percentile(std::vector<double> v, double p) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const double rank = std::ceil(p * static_cast<double>(v.size()));
  const size_t i = rank < 1 ? 0 : std::min(v.size(), static_cast<size_t>(rank)) - 1;
  return v[i];
}

// /proc/PID/stat: the fields after the command (which may hold spaces and parentheses).
struct ProcStat {
  bool ok = false;
  pid_t ppid = 0;
  long long utime = 0, stime = 0, cutime = 0, cstime = 0;  // clock ticks
};

inline ProcStat proc_stat(pid_t pid) {
  ProcStat s;
  const std::string t = slurp("/proc/" + std::to_string(pid) + "/stat");
  const size_t close = t.rfind(')');
  if (close == std::string::npos) return s;
  std::istringstream in(t.substr(close + 1));
  std::string state;
  long long f[20] = {};
  in >> state;  // field 3
  for (int i = 4; i <= 17; ++i) in >> f[i];
  if (!in) return s;
  s.ok = true;
  s.ppid = static_cast<pid_t>(f[4]);
  s.utime = f[14];
  s.stime = f[15];
  s.cutime = f[16];
  s.cstime = f[17];
  return s;
}

// A "Key:   123 kB" line of /proc/PID/status or smaps_rollup, in kB; -1 when absent.
inline long long proc_kb(pid_t pid, const std::string& file, const std::string& key) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/" + file));
  std::string line;
  while (std::getline(in, line))
    if (line.compare(0, key.size() + 1, key + ":") == 0) return std::atoll(line.c_str() + key.size() + 1);
  return -1;
}

// Time on CPU of one single-threaded process in ns, from /proc/PID/schedstat (exact, unlike
// the 10 ms ticks of /proc/PID/stat); -1 when unreadable.
inline long long schedstat_ns(pid_t pid) {
  std::istringstream in(slurp("/proc/" + std::to_string(pid) + "/schedstat"));
  long long ns = -1;
  if (!(in >> ns)) return -1;
  return ns;
}

// CPU time of a process tree's root and its live children (single-threaded, as
// PostgreSQL's are: schedstat, in ns), plus what the root reaped (cutime/cstime, in ticks: a
// child that ended and was waited for is counted there, so children that come and go between
// two readings are counted too, as long as the root reaps them).
struct TreeCpu {
  bool ok = false;
  double seconds = 0;
  int processes = 0;
};

inline TreeCpu tree_cpu(pid_t root) {
  TreeCpu t;
  const ProcStat r = proc_stat(root);
  if (!r.ok) return t;
  const double tick = static_cast<double>(::sysconf(_SC_CLK_TCK));
  auto own = [&](pid_t pid, const ProcStat& s) {
    const long long ns = schedstat_ns(pid);
    return ns >= 0 ? static_cast<double>(ns) / 1e9 : static_cast<double>(s.utime + s.stime) / tick;
  };
  t.ok = true;
  t.seconds = own(root, r) + static_cast<double>(r.cutime + r.cstime) / tick;
  t.processes = 1;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string name = e.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    const pid_t pid = static_cast<pid_t>(std::atoi(name.c_str()));
    const ProcStat c = proc_stat(pid);
    if (!c.ok || c.ppid != root) continue;
    t.seconds += own(pid, c);  // a backend's own children: none that live long
    ++t.processes;
  }
  return t;
}

// Parses `program`'s command line: nullopt to go on, else the status to exit with (0 after
// --help, which CLI11 prints; 2, with one line on stderr, for a bad flag).
inline std::optional<int> parse_flags(CLI::App& app, int argc, char** argv, const char* program) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "%s: %s (see --help)\n", program, one_line(e.what()).c_str());
    return 2;
  }
  return std::nullopt;
}

}  // namespace bench
