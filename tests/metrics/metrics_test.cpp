// Unit tests of AgentMetrics::render: the exposition of /metrics, without a daemon.
#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>
#include <vector>

#include "metrics.h"

using lease_agent::AgentMetrics;
using lease_agent::MetricsView;

namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;  // unescaped values
  std::string value;
};

// A strict parser of the subset of the text format that render() writes.
struct Exposition {
  std::vector<Sample> samples;
  std::map<std::string, std::string> types;  // family -> type
  std::set<std::string> helps;
};

Exposition parse(const std::string& text) {
  Exposition e;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    REQUIRE(!line.empty());
    if (line.rfind("# HELP ", 0) == 0) {
      const std::string rest = line.substr(7);
      const auto sp = rest.find(' ');
      REQUIRE(sp != std::string::npos);
      REQUIRE(sp + 1 < rest.size());  // a non-empty help text
      e.helps.insert(rest.substr(0, sp));
      continue;
    }
    if (line.rfind("# TYPE ", 0) == 0) {
      const std::string rest = line.substr(7);
      const auto sp = rest.find(' ');
      REQUIRE(sp != std::string::npos);
      e.types[rest.substr(0, sp)] = rest.substr(sp + 1);
      continue;
    }
    REQUIRE(line[0] != '#');
    Sample s;
    size_t i = 0;
    while (i < line.size() && line[i] != '{' && line[i] != ' ') s.name += line[i++];
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (line.at(i) != '}') {
        std::string key;
        while (line.at(i) != '=') key += line[i++];
        ++i;
        REQUIRE(line.at(i) == '"');
        ++i;
        std::string value;
        while (line.at(i) != '"') {
          if (line[i] == '\\') {
            const char c = line.at(++i);
            if (c == 'n')
              value += '\n';
            else if (c == '\\' || c == '"')
              value += c;
            else
              FAIL("bad escape \\" << c << " in: " << line);
          } else {
            REQUIRE(line[i] != '\n');
            value += line[i];
          }
          ++i;
        }
        ++i;
        REQUIRE(s.labels.count(key) == 0);
        s.labels[key] = value;
        if (line.at(i) == ',') ++i;
      }
      ++i;
    }
    REQUIRE(line.at(i) == ' ');
    s.value = line.substr(i + 1);
    REQUIRE(!s.value.empty());
    REQUIRE(s.value.find(' ') == std::string::npos);  // no timestamps
    e.samples.push_back(s);
  }
  return e;
}

// The samples of `name` whose labels include all of `match`.
std::vector<Sample> find(const Exposition& e, const std::string& name,
                         const std::map<std::string, std::string>& match = {}) {
  std::vector<Sample> out;
  for (const Sample& s : e.samples) {
    if (s.name != name) continue;
    bool ok = true;
    for (const auto& kv : match) {
      auto it = s.labels.find(kv.first);
      if (it == s.labels.end() || it->second != kv.second) ok = false;
    }
    if (ok) out.push_back(s);
  }
  return out;
}

// The value of the one sample of `name` with `match`.
std::string value(const Exposition& e, const std::string& name, const std::map<std::string, std::string>& match = {}) {
  const auto v = find(e, name, match);
  INFO(name);
  REQUIRE(v.size() == 1);
  return v[0].value;
}

MetricsView view(const std::string& role, std::int64_t epoch = 7, double left = 1.5, bool healthy = true) {
  MetricsView v;
  v.role = role;
  v.epoch = epoch;
  v.lease_left_seconds = left;
  v.healthy = healthy;
  return v;
}

const std::vector<std::pair<std::string, std::string>> kFamilies = {
    {"lease_agent_role", "gauge"},
    {"lease_agent_epoch", "gauge"},
    {"lease_agent_lease_left_seconds", "gauge"},
    {"lease_agent_database_up", "gauge"},
    {"lease_agent_transitions_total", "counter"},
    {"lease_agent_heartbeat_round_trip_seconds", "histogram"},
    {"lease_agent_errors_total", "counter"},
    {"lease_agent_clock_drift_warnings_total", "counter"},
    {"lease_agent_fence_waits_total", "counter"},
    {"lease_agent_fence_wait_seconds_total", "counter"},
    {"lease_agent_fence_ended_transactions_total", "counter"},
    {"lease_agent_server_lives_total", "counter"},
    {"lease_agent_build_info", "gauge"},
};

const std::vector<std::string> kRoles = {"master", "standby", "registering", "disconnected", "stopping"};

}  // namespace

TEST_CASE("every family has HELP and TYPE, every sample cluster and node", "[metrics]") {
  AgentMetrics m("c1", "n1");
  const Exposition e = parse(m.render(view("standby")));
  for (const auto& f : kFamilies) {
    INFO(f.first);
    CHECK(e.helps.count(f.first) == 1);
    REQUIRE(e.types.count(f.first) == 1);
    CHECK(e.types.at(f.first) == f.second);
    CHECK(!find(e, f.second == "histogram" ? f.first + "_count" : f.first).empty());
  }
  CHECK(e.types.size() == kFamilies.size());
  for (const Sample& s : e.samples) {
    INFO(s.name);
    CHECK(s.labels.at("cluster") == "c1");
    CHECK(s.labels.at("node") == "n1");
  }
  CHECK(value(e, "lease_agent_build_info", {{"version", LEASE_AGENT_VERSION}}) == "1");
  CHECK(value(e, "lease_agent_epoch") == "7");
  CHECK(value(e, "lease_agent_lease_left_seconds") == "1.5");
  CHECK(value(e, "lease_agent_database_up") == "1");
  CHECK(value(e, "lease_agent_clock_drift_warnings_total") == "0");
}

TEST_CASE("one role gauge per role, 1 for the role of the view", "[metrics]") {
  AgentMetrics m("c", "n");
  for (const std::string& role : kRoles) {
    INFO(role);
    const Exposition e = parse(m.render(view(role)));
    REQUIRE(find(e, "lease_agent_role").size() == kRoles.size());
    for (const std::string& r : kRoles) CHECK(value(e, "lease_agent_role", {{"role", r}}) == (r == role ? "1" : "0"));
  }
  // An unknown role: all five present, all 0.
  const Exposition e = parse(m.render(view("bogus")));
  REQUIRE(find(e, "lease_agent_role").size() == kRoles.size());
  for (const Sample& s : find(e, "lease_agent_role")) CHECK(s.value == "0");
}

TEST_CASE("gauges of the view", "[metrics]") {
  AgentMetrics m("c", "n");
  const Exposition e = parse(m.render(view("disconnected", 123456789012LL, 0.25, false)));
  CHECK(value(e, "lease_agent_epoch") == "123456789012");
  CHECK(value(e, "lease_agent_lease_left_seconds") == "0.25");
  CHECK(value(e, "lease_agent_database_up") == "0");
  const Exposition neg = parse(m.render(view("standby", 1, -3.0)));
  CHECK(value(neg, "lease_agent_lease_left_seconds") == "0");
}

TEST_CASE("transition counters: every pair from 0, counted by to and reason", "[metrics]") {
  AgentMetrics m("c", "n");
  const std::map<std::string, std::vector<std::string>> valid = {
      {"master", {"free", "handed", "expired", "switchover", "recovered"}},
      {"standby", {"deadline", "lost", "stop", "switchover", "duplicate"}}};
  {
    const Exposition e = parse(m.render(view("standby")));
    for (const auto& to : valid)
      for (const std::string& reason : to.second) {
        INFO(to.first << " " << reason);
        CHECK(value(e, "lease_agent_transitions_total", {{"to", to.first}, {"reason", reason}}) == "0");
      }
  }
  m.transition("master", "free");
  m.transition("master", "expired");
  m.transition("master", "expired");
  m.transition("standby", "deadline");
  m.transition("standby", "switchover");
  m.transition("standby", "switchover");
  m.transition("standby", "switchover");
  m.transition("master", "no-such-reason");  // counted as master/other
  m.transition("nowhere", "free");           // not counted
  m.promoted();                              // legacy: master/other
  m.demoted();                               // legacy: standby/other
  const Exposition e = parse(m.render(view("master")));
  auto t = [&](const std::string& to, const std::string& reason) {
    return value(e, "lease_agent_transitions_total", {{"to", to}, {"reason", reason}});
  };
  CHECK(t("master", "free") == "1");
  CHECK(t("master", "expired") == "2");
  CHECK(t("master", "switchover") == "0");
  CHECK(t("master", "recovered") == "0");
  CHECK(t("master", "other") == "2");
  CHECK(t("standby", "deadline") == "1");
  CHECK(t("standby", "switchover") == "3");
  CHECK(t("standby", "lost") == "0");
  CHECK(t("standby", "stop") == "0");
  CHECK(t("standby", "duplicate") == "0");
  CHECK(t("standby", "other") == "1");
  CHECK(find(e, "lease_agent_transitions_total").size() == AgentMetrics::kTransitions.size());
  CHECK(find(e, "lease_agent_transitions_total", {{"to", "nowhere"}}).empty());
}

TEST_CASE("errors by kind: all kinds from 0, unknown kinds as other", "[metrics]") {
  AgentMetrics m("c", "n");
  for (const char* k : {"heartbeat", "connect", "notification", "switchover", "other"})
    CHECK(value(parse(m.render(view("standby"))), "lease_agent_errors_total", {{"kind", k}}) == "0");
  m.error("heartbeat");
  m.error("heartbeat");
  m.error("connect");
  m.error("notification");
  m.error("switchover");
  m.error("cosmic-ray");
  m.heartbeat_error();  // legacy
  m.connect_error();    // legacy
  const Exposition e = parse(m.render(view("standby")));
  CHECK(value(e, "lease_agent_errors_total", {{"kind", "heartbeat"}}) == "3");
  CHECK(value(e, "lease_agent_errors_total", {{"kind", "connect"}}) == "2");
  CHECK(value(e, "lease_agent_errors_total", {{"kind", "notification"}}) == "1");
  CHECK(value(e, "lease_agent_errors_total", {{"kind", "switchover"}}) == "1");
  CHECK(value(e, "lease_agent_errors_total", {{"kind", "other"}}) == "1");
  CHECK(find(e, "lease_agent_errors_total").size() == 5);
  m.clock_warning();
  m.clock_warning();
  CHECK(value(parse(m.render(view("standby"))), "lease_agent_clock_drift_warnings_total") == "2");
}

TEST_CASE("round-trip histogram: cumulative buckets, +Inf equals count", "[metrics]") {
  AgentMetrics m("c", "n");
  const std::vector<double> rts = {0.0001, 0.0007, 0.003, 0.003, 0.02, 0.3, 0.9, 1.0, 7.5, 30.0};
  double sum = 0;
  for (double s : rts) {
    m.round_trip(s);
    sum += s;
  }
  const Exposition e = parse(m.render(view("master")));
  const auto buckets = find(e, "lease_agent_heartbeat_round_trip_seconds_bucket");
  REQUIRE(buckets.size() == AgentMetrics::kBuckets.size() + 1);
  REQUIRE(buckets.back().labels.at("le") == "+Inf");
  double last_le = -1;
  unsigned long long last = 0;
  for (size_t i = 0; i < buckets.size(); ++i) {
    const unsigned long long n = std::stoull(buckets[i].value);
    CHECK(n >= last);  // cumulative
    last = n;
    if (i + 1 < buckets.size()) {
      const double le = std::stod(buckets[i].labels.at("le"));
      CHECK(le > last_le);  // ascending bounds
      last_le = le;
      unsigned long long expected = 0;
      for (double s : rts)
        if (s <= le) ++expected;
      INFO("le=" << buckets[i].labels.at("le"));
      CHECK(n == expected);
    }
  }
  CHECK(buckets.back().value == value(e, "lease_agent_heartbeat_round_trip_seconds_count"));
  CHECK(value(e, "lease_agent_heartbeat_round_trip_seconds_count") == std::to_string(rts.size()));
  CHECK(std::stod(value(e, "lease_agent_heartbeat_round_trip_seconds_sum")) == Approx(sum));
  // Bounds in fixed notation, as client libraries write them.
  CHECK(buckets[0].labels.at("le") == "0.0005");
  CHECK(value(e, "lease_agent_heartbeat_round_trip_seconds_bucket", {{"le", "1"}}) == "8");
  CHECK(value(e, "lease_agent_heartbeat_round_trip_seconds_bucket", {{"le", "10"}}) == "9");
}

TEST_CASE("label values are escaped: backslash, quote, newline", "[metrics]") {
  CHECK(AgentMetrics::escape_label_value("plain") == "plain");
  CHECK(AgentMetrics::escape_label_value("a\\b") == "a\\\\b");
  CHECK(AgentMetrics::escape_label_value("say \"hi\"") == "say \\\"hi\\\"");
  CHECK(AgentMetrics::escape_label_value("two\nlines") == "two\\nlines");
  const std::string cluster = "we\"ird\\clu\nster";
  const std::string node = "n\\\"\n";
  AgentMetrics m(cluster, node);
  const std::string text = m.render(view("master"));
  CHECK(text.find("cluster=\"we\\\"ird\\\\clu\\nster\",node=\"n\\\\\\\"\\n\"") != std::string::npos);
  const Exposition e = parse(text);  // every line one sample: no raw newline leaked
  for (const Sample& s : e.samples) {
    CHECK(s.labels.at("cluster") == cluster);
    CHECK(s.labels.at("node") == node);
  }
  CHECK(value(e, "lease_agent_role", {{"role", "master"}}) == "1");
}

TEST_CASE("legacy render(master, healthy, epoch) gives the full exposition", "[metrics]") {
  AgentMetrics m;
  auto role_of = [&](bool master, bool healthy) {
    const Exposition e = parse(m.render(master, healthy, 5));
    for (const auto& f : kFamilies) CHECK(e.types.count(f.first) == 1);
    CHECK(value(e, "lease_agent_epoch") == "5");
    CHECK(value(e, "lease_agent_database_up") == (healthy ? "1" : "0"));
    std::string role;
    for (const Sample& s : find(e, "lease_agent_role"))
      if (s.value == "1") role += s.labels.at("role");
    return role;
  };
  CHECK(role_of(true, true) == "master");
  CHECK(role_of(false, true) == "standby");
  CHECK(role_of(false, false) == "disconnected");
}

TEST_CASE("value formatting", "[metrics]") {
  CHECK(AgentMetrics::format_value(0) == "0");
  CHECK(AgentMetrics::format_value(1.5) == "1.5");
  CHECK(AgentMetrics::format_value(0.1) == "0.1");
  CHECK(AgentMetrics::format_value(1.0 / 0.0) == "+Inf");
  CHECK(AgentMetrics::format_value(-1.0 / 0.0) == "-Inf");
  CHECK(AgentMetrics::format_value(std::nan("")) == "NaN");
}

#ifdef PROMTOOL
// The rendering, with hostile label values and every counter moved, through the real linter.
TEST_CASE("promtool check metrics accepts the exposition without a warning", "[metrics][promtool]") {
  AgentMetrics m("clu\"ster\\with\nnewline", "node-1");
  m.round_trip(0.004);
  m.round_trip(3);
  m.error("heartbeat");
  m.transition("master", "free");
  m.clock_warning();
  char path[] = "/tmp/metrics_test.XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  {
    std::ofstream f(path);
    f << m.render(view("master"));
  }
  const std::string cmd = std::string("'") + PROMTOOL + "' check metrics < " + path + " 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  ::unlink(path);
  INFO("promtool: " << out);
  CHECK(status == 0);
  CHECK(out.empty());
}
#endif

TEST_CASE("fence waits and new server lives are counted", "[metrics]") {
  AgentMetrics m("c1", "n1");
  m.fence_wait(250, 1);
  m.fence_wait(20, 0);
  m.new_server_life();
  const Exposition e = parse(m.render(view("master")));
  CHECK(value(e, "lease_agent_fence_waits_total") == "2");
  CHECK(value(e, "lease_agent_fence_wait_seconds_total") == "0.27");
  CHECK(value(e, "lease_agent_fence_ended_transactions_total") == "1");
  CHECK(value(e, "lease_agent_server_lives_total") == "1");
}
