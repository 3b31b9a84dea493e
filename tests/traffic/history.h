// The history of a traffic run and its checker: a pure function of what was recorded
// (the client's answers, the agents' hook calls, the faults the run made), with no I/O
// and no clock, so that tests/traffic/history_test.cpp can feed it handmade histories.
// README.md in this directory defines every check; the comments here say how.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace traffic {

using i64 = std::int64_t;  // nanoseconds on CLOCK_MONOTONIC, which every process of the machine shares

// One request through the load balancer, as the client saw it.
struct Answer {
  i64 sent = 0;      // just before the request was written
  i64 recv = 0;      // just after its answer (or its error) came back
  int status = 0;    // HTTP status; 0 when no answer came (refused, reset, timed out)
  std::string node;  // for a 200: the body, the name of the node whose app server answered
};

// One hook call: on-promote (role "master") or on-demote (role "standby"), stamped by the
// hook process itself as it starts.
struct HookRecord {
  i64 t = 0;
  std::string node, role;
  i64 epoch = 0;
};

enum class FaultKind { kill, pause, stop, switchover };
const char* to_string(FaultKind k);

// What the run did to a master, on the same clock.
struct Fault {
  FaultKind kind = FaultKind::kill;
  std::string node;    // the master it was done to
  std::string target;  // switchover: the node asked for
  i64 start = 0;       // the instant before the signal, or before the switchover command started
  i64 end = 0;         // pause: the SIGCONT; otherwise start
  // kill: when both processes had been reaped (0: at start). SIGKILL takes effect
  // asynchronously, and an app server may still finish an answer in between.
  i64 gone = 0;
};

struct Params {
  i64 ttl = 0;
  i64 check_inter = 0;     // HAProxy's `inter`
  i64 handover_delay = 0;  // the agents' handover-delay
  i64 promote_slack = 0;   // how long before its on-promote record a new master may serve (the hook's start-up)
};

// A term of one node as the checker sees it: [from, to] on the monotonic clock.
struct Period {
  std::string node;
  i64 epoch = 0;
  i64 from = 0, to = 0;
};

// One fault, seen through the load balancer.
struct Scenario {
  Fault fault;
  std::string before;      // the node of the last 200 received before the fault
  std::string after;       // the first other node that answered 200 after it ("" if none)
  i64 last_old = -1;       // receive time of `before`'s last 200 before `after`'s first
  i64 first_new = -1;      // receive time of `after`'s first 200
  i64 bound = 0;           // the most `resumed` and `gap` may be
  int errors_503 = 0;      // between the fault and first_new: HAProxy's "no server available"
  int errors_other = 0;    // other statuses and transport errors in that window
  bool ok = false;
  i64 resumed() const { return first_new - fault.start; }  // fault -> first answer of the new master
  i64 gap() const { return first_new - last_old; }         // last answer of the old -> first of the new
};

struct Report {
  std::vector<Period> periods;  // sorted, disjoint
  std::vector<Scenario> scenarios;
  std::vector<std::string> violations;
  std::map<std::string, int> served;  // 200s by node
  int answers = 0;
  int steady_errors = 0;          // errors outside every scenario's window
  i64 closest_promote = INT64_MAX;  // least (first answer's send time - its on-promote record) seen
  bool ok() const { return violations.empty(); }
};

// The terms of each node, from the hook records and the faults (README.md, "Master
// periods"): from its on-promote record - promote_slack to the first of its on-demote
// record (+ handover_delay when a clean stop or a switchover of that node made it), its
// kill -9, and `run_end`; then each period is cut where the next one begins.
std::vector<Period> master_periods(std::vector<HookRecord> hooks, const std::vector<Fault>& faults, const Params& p,
                                   i64 run_end);

// The checks of README.md: (a) every 200 overlaps a period of the node that gave it;
// (b) once another node has served, a node serves again only after an on-promote of its
// own that came after that node's answer was sent; (c) each fault is followed by an
// answer of another node within its bound (ttl + 1 s after a kill or a pause,
// handover-delay + 2 check intervals after a clean stop or a switchover), a switchover by
// one of its target. `answers` in the order they were sent (one client, one at a time).
Report check_history(const std::vector<Answer>& answers, const std::vector<HookRecord>& hooks,
                     const std::vector<Fault>& faults, const Params& p, i64 run_end);

}  // namespace traffic
