// The traffic checker (history.h) on small handmade histories that must pass and must
// fail, one per rule of README.md. Times in milliseconds from an arbitrary zero.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include "history.h"

using namespace traffic;

namespace {

constexpr i64 kMs = 1000000;

Params params() { return {2000 * kMs, 100 * kMs, 300 * kMs, 50 * kMs}; }

// One client, one request at a time: an answer of `node` (503 when empty) every ms in
// [from, to), each taking 0.3 ms.
void serve(std::vector<Answer>& h, const std::string& node, double from, double to) {
  for (double t = from; t < to; t += 1.0) {
    Answer a;
    a.sent = static_cast<i64>(t * kMs);
    a.recv = a.sent + 300000;
    a.status = node.empty() ? 503 : 200;
    a.node = node;
    h.push_back(a);
  }
}

HookRecord promote(const std::string& node, double t, i64 epoch) { return {static_cast<i64>(t * kMs), node, "master", epoch}; }
HookRecord demote(const std::string& node, double t, i64 epoch) { return {static_cast<i64>(t * kMs), node, "standby", epoch}; }
Fault fault(FaultKind k, const std::string& node, double start, double end = -1, const std::string& target = "") {
  Fault f;
  f.kind = k;
  f.node = node;
  f.target = target;
  f.start = static_cast<i64>(start * kMs);
  f.end = static_cast<i64>((end < 0 ? start : end) * kMs);
  return f;
}

bool has(const Report& r, const std::string& prefix) {
  for (const auto& v : r.violations)
    if (v.rfind(prefix, 0) == 0) return true;
  return false;
}

}  // namespace

TEST_CASE("a kill -9: the new master answers after ttl; the gap is measured from the kill") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1000);       // node1 until the kill at 1000
  serve(h, "", 1000, 3040);         // 503: no server
  serve(h, "node2", 3040, 3500);    // node2 promoted at 3000, up at HAProxy's next check
  const auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 3000, 2)},
                               {fault(FaultKind::kill, "node1", 1000)}, params(), 3500 * kMs);
  INFO((r.violations.empty() ? "" : r.violations.front()));
  REQUIRE(r.ok());
  REQUIRE(r.scenarios.size() == 1);
  const Scenario& s = r.scenarios[0];
  CHECK(s.before == "node1");
  CHECK(s.after == "node2");
  CHECK(s.resumed() == 2040 * kMs + 300000);
  CHECK(s.gap() == 2041 * kMs);
  CHECK(s.errors_503 == 2040);
  CHECK(r.steady_errors == 0);
}

TEST_CASE("a kill -9: an answer the app server finished before it died is its own; one after is not") {
  Fault kill = fault(FaultKind::kill, "node1", 1000);
  kill.gone = 1010 * kMs;  // both processes reaped 10 ms after the signals were sent
  for (const auto& [until, ok] : {std::pair<double, bool>{1008, true}, std::pair<double, bool>{1015, false}}) {
    std::vector<Answer> h;
    serve(h, "node1", 0, until);
    serve(h, "", until, 3040);
    serve(h, "node2", 3040, 3500);
    const auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 3000, 2)}, {kill}, params(),
                                 3500 * kMs);
    INFO("node1 answers until " << until << ": " << (r.violations.empty() ? "" : r.violations.front()));
    CHECK(r.ok() == ok);
  }
}

TEST_CASE("a kill -9: traffic that resumes later than ttl + 1 s fails (c)") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1000);
  serve(h, "", 1000, 4100);
  serve(h, "node2", 4100, 4200);
  const auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 4000, 2)},
                               {fault(FaultKind::kill, "node1", 1000)}, params(), 4200 * kMs);
  CHECK(has(r, "(c) kill -9 of node1"));
}

TEST_CASE("an answer of the killed node after its kill fails (a)") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1005);  // answers sent after the kill at 1000
  serve(h, "node2", 3040, 3100);
  const auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 3000, 2)},
                               {fault(FaultKind::kill, "node1", 1000)}, params(), 3100 * kMs);
  CHECK(has(r, "(a) node1 answered 200"));
}

TEST_CASE("a pause: the old master's app server answers until HAProxy marks it down, long before the new term") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1150);   // paused at 1000; HAProxy's check timed out at 1150
  serve(h, "", 1150, 2940);
  serve(h, "node2", 2940, 4500);
  // node1's on-demote comes only after its SIGCONT at 4000.
  const auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 2900, 2), demote("node1", 4001, 1)},
                               {fault(FaultKind::pause, "node1", 1000, 4000)}, params(), 4500 * kMs);
  INFO((r.violations.empty() ? "" : r.violations.front()));
  REQUIRE(r.ok());
  CHECK(r.scenarios[0].gap() == 1791 * kMs);
  CHECK(r.scenarios[0].resumed() == 1940 * kMs + 300000);
}

TEST_CASE("a pause that HAProxy does not notice: the old master serves on after the new one, (a) and (b) fail") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 2950);
  serve(h, "node2", 2950, 2960);
  serve(h, "node1", 2960, 3000);  // e.g. the check sent to the app server's port
  const auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 2900, 2), demote("node1", 4001, 1)},
                               {fault(FaultKind::pause, "node1", 1000, 4000)}, params(), 4500 * kMs);
  CHECK(has(r, "(a) node1 answered 200"));
  CHECK(has(r, "(b) node1 answered"));
}

TEST_CASE("a clean stop with handover-delay: the old master serves until HAProxy marks it down, then the new one") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1100);     // SIGTERM at 1000, on-demote at 1003, marked down at 1100
  serve(h, "", 1100, 1390);
  serve(h, "node2", 1390, 1600);  // lease released at 1303, node2 promoted at 1305, up at 1390
  const auto r = check_history(h, {promote("node1", -10, 1), demote("node1", 1003, 1), promote("node2", 1305, 2)},
                               {fault(FaultKind::stop, "node1", 1000)}, params(), 1600 * kMs);
  INFO((r.violations.empty() ? "" : r.violations.front()));
  REQUIRE(r.ok());
  CHECK(r.scenarios[0].gap() == 291 * kMs);
  CHECK(r.scenarios[0].resumed() == 390 * kMs + 300000);
  CHECK(r.scenarios[0].bound == 500 * kMs);
}

TEST_CASE("a clean stop without handover-delay: the new master answers while the old still serves, (a) and (b) fail") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1040);
  serve(h, "node2", 1040, 1050);  // node2 promoted at 1005, checked up at 1040
  serve(h, "node1", 1050, 1100);  // node1 not yet marked down
  serve(h, "node2", 1100, 1200);
  Params p = params();
  p.handover_delay = 0;
  const auto r = check_history(h, {promote("node1", -10, 1), demote("node1", 1003, 1), promote("node2", 1005, 2)},
                               {fault(FaultKind::stop, "node1", 1000)}, p, 1200 * kMs);
  CHECK(has(r, "(a) node1 answered 200"));
  CHECK(has(r, "(b) node1 answered"));
}

TEST_CASE("a switchover must end on its target, within handover-delay + 2 check intervals") {
  const std::vector<HookRecord> hooks{promote("node1", -10, 1), demote("node1", 1010, 1), promote("node3", 1315, 2)};
  std::vector<Answer> h;
  serve(h, "node1", 0, 1080);
  serve(h, "", 1080, 1400);
  serve(h, "node3", 1400, 1500);
  auto r = check_history(h, hooks, {fault(FaultKind::switchover, "node1", 1000, -1, "node3")}, params(), 1500 * kMs);
  INFO((r.violations.empty() ? "" : r.violations.front()));
  CHECK(r.ok());
  r = check_history(h, hooks, {fault(FaultKind::switchover, "node1", 1000, -1, "node2")}, params(), 1500 * kMs);
  CHECK(has(r, "(c) switchover of node1"));
  std::vector<Answer> late;
  serve(late, "node1", 0, 1080);
  serve(late, "", 1080, 1600);
  serve(late, "node3", 1600, 1700);
  r = check_history(late, hooks, {fault(FaultKind::switchover, "node1", 1000, -1, "node3")}, params(), 1700 * kMs);
  CHECK(has(r, "(c) switchover of node1"));
}

TEST_CASE("a new master may answer up to promote_slack before its on-promote record, not more") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 1000);
  serve(h, "node2", 2990, 3100);  // on-promote recorded at 3000: 10 ms after its first answer
  Fault kill = fault(FaultKind::kill, "node1", 1000);
  auto r = check_history(h, {promote("node1", -10, 1), promote("node2", 3000, 2)}, {kill}, params(), 3100 * kMs);
  INFO((r.violations.empty() ? "" : r.violations.front()));
  CHECK(r.ok());
  CHECK(r.closest_promote == -10 * kMs);
  std::vector<Answer> early;
  serve(early, "node1", 0, 1000);
  serve(early, "node2", 2900, 3100);  // 100 ms before
  r = check_history(early, {promote("node1", -10, 1), promote("node2", 3000, 2)}, {kill}, params(), 3100 * kMs);
  CHECK(has(r, "(a) node2 answered 200"));
}

TEST_CASE("a standby that answers fails (a); a node that serves again after a new term of its own passes (b)") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 100);
  serve(h, "node3", 100, 101);
  auto r = check_history(h, {promote("node1", -10, 1)}, {}, params(), 200 * kMs);
  CHECK(has(r, "(a) node3 answered 200"));

  std::vector<Answer> back;
  serve(back, "node1", 0, 1000);
  serve(back, "node2", 1400, 2000);  // node1 stopped cleanly at 1000
  serve(back, "node1", 2400, 2500);  // switched back over to node1 at 2000
  r = check_history(back,
                    {promote("node1", -10, 1), demote("node1", 1003, 1), promote("node2", 1305, 2),
                     demote("node2", 2003, 2), promote("node1", 2305, 3)},
                    {fault(FaultKind::stop, "node1", 1000), fault(FaultKind::switchover, "node2", 2000, -1, "node1")},
                    params(), 2500 * kMs);
  INFO((r.violations.empty() ? "" : r.violations.front()));
  CHECK(r.ok());
  CHECK(r.periods.size() == 3);
}

TEST_CASE("errors outside every fault's window are counted") {
  std::vector<Answer> h;
  serve(h, "node1", 0, 100);
  serve(h, "", 100, 110);
  serve(h, "node1", 110, 200);
  const auto r = check_history(h, {promote("node1", -10, 1)}, {}, params(), 200 * kMs);
  CHECK(r.ok());
  CHECK(r.steady_errors == 10);
  CHECK(r.served.at("node1") == 190);
}
