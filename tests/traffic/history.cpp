// The checker of a traffic run (history.h; the checks are defined in README.md).
#include "history.h"

#include <algorithm>
#include <cstdio>
#include <optional>

namespace traffic {

const char* to_string(FaultKind k) {
  switch (k) {
    case FaultKind::kill: return "kill -9";
    case FaultKind::pause: return "SIGSTOP past ttl";
    case FaultKind::stop: return "clean stop (SIGTERM)";
    case FaultKind::switchover: return "switchover";
  }
  return "?";
}

namespace {

std::string at(i64 t, i64 base) {
  char b[32];
  std::snprintf(b, sizeof b, "+%.3fs", static_cast<double>(t - base) / 1e9);
  return b;
}

bool planned(FaultKind k) { return k == FaultKind::stop || k == FaultKind::switchover; }

}  // namespace

std::vector<Period> master_periods(std::vector<HookRecord> hooks, const std::vector<Fault>& faults, const Params& p,
                                   i64 run_end) {
  std::stable_sort(hooks.begin(), hooks.end(), [](const HookRecord& a, const HookRecord& b) { return a.t < b.t; });
  std::vector<Period> out;
  // The term that began with on-promote `m`, ended by the node's next record at `next`
  // (an on-demote when `demoted`; another on-promote or the end of the run otherwise).
  auto close = [&](const HookRecord& m, i64 next, bool demoted) {
    i64 to = next;
    if (demoted) {
      // A clean stop or a switchover releases the lease no sooner than handover-delay
      // after on-demote: the node still holds it, and may still be reached, until then.
      for (const Fault& f : faults)
        if (planned(f.kind) && f.node == m.node && f.start >= m.t && f.start <= next) to = next + p.handover_delay;
    }
    // kill -9 takes the agent and its app server: nothing of that node answers after it.
    for (const Fault& f : faults)
      if (f.kind == FaultKind::kill && f.node == m.node && f.start >= m.t && f.start < to)
        to = std::max(f.start, f.gone);
    out.push_back({m.node, m.epoch, m.t - p.promote_slack, to});
  };
  std::map<std::string, std::optional<HookRecord>> open;
  for (const HookRecord& r : hooks) {
    auto& o = open[r.node];
    if (o) close(*o, r.t, r.role != "master");
    o.reset();
    if (r.role == "master") o = r;
  }
  for (const auto& [node, o] : open)
    if (o) close(*o, run_end, false);
  std::stable_sort(out.begin(), out.end(), [](const Period& a, const Period& b) { return a.from < b.from; });
  // Terms never overlap (the fault suite proves it of the agents): each ends, at the
  // latest, where the next begins.
  for (std::size_t i = 0; i + 1 < out.size(); ++i) out[i].to = std::min(out[i].to, out[i + 1].from);
  out.erase(std::remove_if(out.begin(), out.end(), [](const Period& x) { return x.to < x.from; }), out.end());
  return out;
}

Report check_history(const std::vector<Answer>& answers, const std::vector<HookRecord>& hooks,
                     const std::vector<Fault>& faults_in, const Params& p, i64 run_end) {
  Report r;
  r.periods = master_periods(hooks, faults_in, p, run_end);
  std::vector<Fault> faults = faults_in;
  std::stable_sort(faults.begin(), faults.end(), [](const Fault& a, const Fault& b) { return a.start < b.start; });
  i64 base = answers.empty() ? 0 : answers.front().sent;
  for (const HookRecord& h : hooks) base = std::min(base, h.t);
  auto master_at = [&](i64 t) -> std::string {
    for (const Period& x : r.periods)
      if (x.from <= t && t <= x.to) return x.node + " (epoch " + std::to_string(x.epoch) + ")";
    return "nobody";
  };

  // (a) each 200 overlaps a period of its node: its [sent, recv] meets [from, to].
  std::vector<bool> period_seen(r.periods.size(), false);
  for (const Answer& a : answers) {
    ++r.answers;
    if (a.status != 200) continue;
    ++r.served[a.node];
    std::optional<std::size_t> idx;
    for (std::size_t i = 0; i < r.periods.size(); ++i)
      if (r.periods[i].node == a.node && r.periods[i].from <= a.recv && a.sent <= r.periods[i].to) idx = i;
    if (!idx) {
      std::string terms;  // the node's own terms, to see how far off it was
      for (const Period& x : r.periods)
        if (x.node == a.node) terms += " [" + at(x.from, base) + ", " + at(x.to, base) + "]";
      r.violations.push_back("(a) " + (a.node.empty() ? std::string("an unnamed server") : a.node) +
                             " answered 200 (sent " + at(a.sent, base) + ", received " + at(a.recv, base) +
                             ") while it was not master; master then: " + master_at(a.sent) +
                             "; its terms:" + (terms.empty() ? std::string(" none") : terms));
      continue;
    }
    if (!period_seen[*idx]) {
      period_seen[*idx] = true;
      r.closest_promote = std::min(r.closest_promote, a.sent - (r.periods[*idx].from + p.promote_slack));
    }
  }

  // (b) once another node served, X serves again only in a new term: an on-promote of X
  // after that other node's answer was sent (and no later than promote_slack after X's
  // answer came back). Only the hooks' on-promote times count here, none of the rules
  // of the periods.
  std::map<std::string, std::vector<i64>> promotes;
  for (const HookRecord& h : hooks)
    if (h.role == "master") promotes[h.node].push_back(h.t);
  for (auto& [node, v] : promotes) std::sort(v.begin(), v.end());
  std::map<std::string, const Answer*> last_of;  // each node's latest 200 so far
  for (const Answer& b : answers) {
    if (b.status != 200) continue;
    const Answer* other = nullptr;  // the latest 200 of another node before b
    for (const auto& [node, a] : last_of)
      if (node != b.node && (!other || a->sent > other->sent)) other = a;
    const Answer* mine = last_of.count(b.node) ? last_of[b.node] : nullptr;
    if (other && mine && mine->sent < other->sent) {
      const auto& v = promotes[b.node];
      const auto it = std::upper_bound(v.begin(), v.end(), other->sent);
      if (it == v.end() || *it > b.recv + p.promote_slack)
        r.violations.push_back("(b) " + b.node + " answered at " + at(b.recv, base) + " after " + other->node +
                               " had answered at " + at(other->recv, base) + ", with no on-promote of " + b.node +
                               " in between");
    }
    last_of[b.node] = &b;
  }

  // (c) each fault, up to the next one.
  std::vector<std::pair<i64, i64>> windows;
  for (std::size_t k = 0; k < faults.size(); ++k) {
    Scenario s;
    s.fault = faults[k];
    const i64 window_end = k + 1 < faults.size() ? faults[k + 1].start : run_end;
    s.bound = planned(s.fault.kind) ? p.handover_delay + 2 * p.check_inter : p.ttl + 1000000000;
    const Answer* before = nullptr;
    const Answer* first_new = nullptr;
    for (const Answer& a : answers) {
      if (a.status != 200) continue;
      if (a.recv <= s.fault.start) before = &a;
    }
    if (before) {
      s.before = before->node;
      for (const Answer& a : answers)
        if (a.status == 200 && a.recv > s.fault.start && a.recv <= window_end && a.node != s.before) {
          first_new = &a;
          break;
        }
    }
    std::string why;
    if (!before) {
      why = "no answer came before it";
    } else if (s.before != s.fault.node) {
      why = "the last answer before it came from " + s.before + ", not from the master it was done to (" +
            s.fault.node + ")";
    } else if (!first_new) {
      why = "no other node answered before " + at(window_end, base);
    } else {
      s.after = first_new->node;
      s.first_new = first_new->recv;
      for (const Answer& a : answers)
        if (a.status == 200 && a.node == s.before && a.recv < s.first_new) s.last_old = a.recv;
      if (s.resumed() > s.bound || s.gap() > s.bound)
        why = "traffic resumed " + std::to_string(s.resumed() / 1000000) + " ms after it (gap " +
              std::to_string(s.gap() / 1000000) + " ms), above the bound of " + std::to_string(s.bound / 1000000) +
              " ms";
      else if (s.fault.kind == FaultKind::switchover && s.after != s.fault.target)
        why = "the switchover asked for " + s.fault.target + " but " + s.after + " answered";
    }
    const i64 errors_to = s.first_new >= 0 ? s.first_new : window_end;
    windows.push_back({s.fault.start, errors_to});
    for (const Answer& a : answers)
      if (a.recv > s.fault.start && a.recv <= errors_to && a.status != 200)
        (a.status == 503 ? s.errors_503 : s.errors_other) += 1;
    s.ok = why.empty();
    if (!s.ok)
      r.violations.push_back(std::string("(c) ") + to_string(s.fault.kind) + " of " + s.fault.node + " at " +
                             at(s.fault.start, base) + ": " + why);
    r.scenarios.push_back(s);
  }
  for (const Answer& a : answers) {
    if (a.status == 200) continue;
    bool inside = false;
    for (const auto& w : windows) inside = inside || (a.recv > w.first && a.recv <= w.second);
    if (!inside) ++r.steady_errors;
  }
  return r;
}

}  // namespace traffic
