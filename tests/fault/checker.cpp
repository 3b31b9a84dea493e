// The checker: pure functions of a history (checker.h). Each check says in a comment
// what it proves and why its allowances are sound; README.md lists them for readers.
#include "checker.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

namespace fault_checker {

namespace {

void add(Report& r, i64 at, VKind k, const std::string& what) { r.violations.push_back({at, k, what}); }

const std::string& node_of(const History& h, int slot) {
  static const std::string unknown = "?";
  return slot >= 0 && static_cast<std::size_t>(slot) < h.agents.size() ? h.agents[static_cast<std::size_t>(slot)].node
                                                                         : unknown;
}

// The life of `agent` that was running at time t (the last one started by then), or null.
const Life* life_at(const Agent& a, i64 t) {
  const Life* found = nullptr;
  for (const Life& l : a.lives)
    if (l.start <= t) found = &l;
  return found;
}


std::string fault_text(const History& h, const Fault& f) {
  return "fault #" + std::to_string(f.id) + " " + kind_name(f.kind) +
         (f.target >= 0 ? " of " + node_of(h, f.target) + (f.target_was_master ? " (master)" : "") : "") +
         (f.detail.empty() ? "" : ", " + f.detail);
}

}  // namespace

bool Report::has(VKind k) const { return count(k) > 0; }
std::size_t Report::count(VKind k) const {
  return static_cast<std::size_t>(
      std::count_if(violations.begin(), violations.end(), [k](const Violation& v) { return v.kind == k; }));
}

std::string fmt_rel(const History& h, i64 t) {
  char b[32];
  std::snprintf(b, sizeof b, "t=%.3fs", static_cast<double>(t - h.t0) / 1e9);
  return b;
}

std::string fmt_ms(i64 ns) {
  char b[32];
  std::snprintf(b, sizeof b, "%.0fms", static_cast<double>(ns) / 1e6);
  return b;
}

bool parse_hook_line(const std::string& line, HookRecord& out) {
  std::istringstream ls(line);
  long long t = 0, epoch = 0, pid = 0;
  std::string node, role;
  if (!(ls >> t >> node >> role >> epoch >> pid)) return false;
  out = {t, node, role, epoch};
  return true;
}

bool lost_commits_between(const History& h, i64 t1, i64 t2) {
  for (const Fault& f : h.faults) {
    if (!loses_commits(f.kind) || f.start > t2) continue;
    // The crash came by the promotion (pg-failover), else by the heal; not healed: any time.
    const i64 crash_by = f.promoted_at != 0 ? f.promoted_at : f.heal != 0 ? f.heal : h.end;
    if (crash_by >= t1) return true;
  }
  return false;
}

std::vector<Period> master_periods(const std::vector<Sample>& samples) {
  std::vector<Period> out;
  std::optional<Period> cur;
  for (const Sample& x : samples) {
    const bool same = cur && x.master() && cur->gen == x.gen && cur->epoch == x.epoch;
    if (cur && !same) {
      out.push_back(*cur);
      cur.reset();
    }
    if (!x.master()) continue;
    if (!cur) cur = Period{x.slot, x.gen, x.epoch, x.sent, x.recv, x.sent, x.recv};
    cur->last_sent = x.sent;
    cur->last_recv = x.recv;
  }
  if (cur) out.push_back(*cur);
  return out;
}

// (1) No two masters by the answers, (3) epochs only grow and one epoch is one agent's.
void check_answers(const History& h, Report& r) {
  std::vector<Period> periods;
  std::vector<Sample> masters;
  for (const Agent& a : h.agents) {
    r.samples += a.samples.size();
    auto p = master_periods(a.samples);
    periods.insert(periods.end(), p.begin(), p.end());
    for (const Sample& x : a.samples)
      if (x.master()) masters.push_back(x);
  }
  r.master_samples = masters.size();
  r.periods = periods.size();
  // An agent that answered master at epoch e to two requests was certainly master from
  // the answer to the first until the sending of the last. No other agent (or other life
  // of the same node) may have a master answer whose whole request lies inside that.
  std::sort(periods.begin(), periods.end(), [](const Period& a, const Period& b) { return a.first_recv < b.first_recv; });
  std::sort(masters.begin(), masters.end(), [](const Sample& a, const Sample& b) { return a.sent < b.sent; });
  for (const Period& p : periods) {
    if (p.first_recv >= p.last_sent) continue;  // a single answer: no certain interval
    auto it = std::lower_bound(masters.begin(), masters.end(), p.first_recv,
                               [](const Sample& x, i64 t) { return x.sent < t; });
    for (; it != masters.end() && it->sent < p.last_sent; ++it) {
      if (it->slot == p.slot && it->gen == p.gen) continue;
      if (it->recv <= p.last_sent) {
        add(r, it->sent, VKind::two_masters_answers,
            "two masters: " + node_of(h, it->slot) + " answered master (epoch " + std::to_string(it->epoch) +
                ") between " + fmt_rel(h, it->sent) + " and " + fmt_rel(h, it->recv) + ", while " + node_of(h, p.slot) +
                " was master (epoch " + std::to_string(p.epoch) + ") from " + fmt_rel(h, p.first_recv) + " to " +
                fmt_rel(h, p.last_sent));
        break;
      }
    }
  }
  // One epoch is one agent life's; a later period never has a smaller epoch. Both may
  // fail only across lost commits (a crash of a server with synchronous_commit off, a
  // failover to an asynchronous replica): then the lease row went back and its epochs
  // were given again. Those are counted (reissued), not flagged; that no two masters
  // overlap in time is checked above whatever the database did.
  std::map<i64, std::tuple<int, int, i64>> owner;  // epoch -> (slot, gen, first seen)
  std::sort(periods.begin(), periods.end(), [](const Period& a, const Period& b) { return a.first_sent < b.first_sent; });
  const Period* top = nullptr;  // the period with the greatest epoch so far
  for (const Period& p : periods) {
    auto [it, fresh] = owner.emplace(p.epoch, std::make_tuple(p.slot, p.gen, p.first_sent));
    if (!fresh && (std::get<0>(it->second) != p.slot || std::get<1>(it->second) != p.gen)) {
      if (lost_commits_between(h, std::get<2>(it->second), p.first_sent))
        ++r.reissued;
      else
        add(r, p.first_sent, VKind::epoch_twice_answers,
            "epoch " + std::to_string(p.epoch) + " answered as master by two agents: " +
                node_of(h, std::get<0>(it->second)) + " (from " + fmt_rel(h, std::get<2>(it->second)) + ") and " +
                node_of(h, p.slot) + " (from " + fmt_rel(h, p.first_sent) + ")");
    }
    // (ordered by the sending of the first request: a later period that certainly began
    // after the top one was answered)
    if (top && p.epoch < top->epoch && p.first_recv > top->first_recv) {
      if (lost_commits_between(h, top->first_sent, p.first_sent))
        ++r.reissued;
      else
        add(r, p.first_sent, VKind::epoch_back_answers,
            "epochs went back: " + node_of(h, top->slot) + " answered master at epoch " + std::to_string(top->epoch) +
                ", then " + node_of(h, p.slot) + " at epoch " + std::to_string(p.epoch) + " from " +
                fmt_rel(h, p.first_sent));
    }
    if (!top || p.epoch > top->epoch) top = &p;
  }
}

// (2) Hooks: no two nodes' master state (from on-promote to on-demote) overlaps, and
// epochs of on-promote never go back. A life ended by kill -9 (or a crash) ends its
// master state then; a life that stopped cleanly as master must have run on-demote
// before it exited. A SIGSTOP splits the state: a frozen process, like the frozen
// server beside it, does nothing; after SIGCONT it is master again only if it kept the
// lease, and if it did not, its on-demote must come within `margin` (ttl/10).
void check_hooks(const History& h, Report& r) {
  std::vector<HookRecord> recs = h.hooks;
  r.hook_records = recs.size();
  std::stable_sort(recs.begin(), recs.end(), [](const HookRecord& a, const HookRecord& b) { return a.t < b.t; });
  struct Held {
    std::string node;
    i64 epoch, from, to;
  };
  std::vector<Held> held;
  const i64 margin = ms_to_ns(h.ttl_ms / 10);
  auto agent_of = [&](const std::string& node) -> const Agent* {
    for (const Agent& a : h.agents)
      if (a.node == node) return &a;
    return nullptr;
  };
  // The master state that began with on-promote `p`; the node's next record (or the
  // end of the run) at `next`.
  auto add_state = [&](const HookRecord& p, i64 next) {
    const Agent* a = agent_of(p.node);
    const Life* life = a ? life_at(*a, p.t) : nullptr;
    i64 end = next;
    if (life && life->end && life->end < next) {
      end = life->end;  // the life ended before the next record
      const bool crashed = life->ended == "kill-9" || life->ended.rfind("exit", 0) == 0;
      if (!crashed && p.t < life->end)
        add(r, life->end, VKind::stop_without_demote,
            p.node + " stopped (" + life->ended + ") as master (epoch " + std::to_string(p.epoch) +
                ") without running on-demote");
    }
    i64 from = p.t;
    if (life)
      for (const auto& pause : life->pauses) {
        if (pause.first <= from || pause.first >= end) continue;
        held.push_back({p.node, p.epoch, from, pause.first});
        from = pause.second + margin;
      }
    if (from < end) held.push_back({p.node, p.epoch, from, end});
  };
  std::map<std::string, std::optional<HookRecord>> open;
  for (const HookRecord& rec : recs) {
    auto& o = open[rec.node];
    if (o) add_state(*o, rec.t);
    o.reset();
    if (rec.role == "master") o = rec;
  }
  for (auto& [node, o] : open)
    if (o) add_state(*o, h.end);
  std::stable_sort(held.begin(), held.end(), [](const Held& a, const Held& b) { return a.from < b.from; });
  const Held* reach = nullptr;      // the state reaching furthest so far
  const Held* top_epoch = nullptr;  // the state with the greatest epoch so far
  for (const Held& b : held) {
    if (reach && b.from < reach->to && b.node != reach->node)
      add(r, b.from, VKind::two_masters_hooks,
          "two masters by the hooks: " + b.node + " ran on-promote (epoch " + std::to_string(b.epoch) + ") at " +
              fmt_rel(h, b.from) + " before " + reach->node + " ran on-demote (epoch " + std::to_string(reach->epoch) +
              ") at " + fmt_rel(h, reach->to));
    // A master whose deadline passed while its renewal was on the way is master again
    // when the renewal's answer comes: the same epoch by the same node is no step back.
    const bool back =
        top_epoch && (b.epoch < top_epoch->epoch || (b.epoch == top_epoch->epoch && b.node != top_epoch->node));
    if (back && lost_commits_between(h, top_epoch->from, b.from))
      ++r.reissued;
    else if (back)
      add(r, b.from, VKind::epoch_back_hooks,
          "epochs of on-promote went back: " + std::to_string(top_epoch->epoch) + " (" + top_epoch->node + ") then " +
              std::to_string(b.epoch) + " (" + b.node + ")");
    if (!reach || b.to > reach->to) reach = &b;
    if (!top_epoch || b.epoch > top_epoch->epoch) top_epoch = &b;
  }
  r.hook_periods = held.size();
}

// (7) Every agent stops with status 0 on SIGTERM; none exits on its own.
void check_lives(const History& h, Report& r) {
  for (const Agent& a : h.agents)
    for (const Life& l : a.lives) {
      if ((l.ended == "sigterm" || l.ended == "run end") && l.exit_status != 0)
        add(r, l.end, VKind::unclean_stop,
            a.node + " (generation " + std::to_string(l.gen) + ") did not stop cleanly on SIGTERM (" + l.ended +
                "): status " + (l.exit_status < 0 ? std::string("none, killed") : std::to_string(l.exit_status)));
      if (l.ended.rfind("exit", 0) == 0)
        add(r, l.end, VKind::exited_by_itself,
            a.node + " (generation " + std::to_string(l.gen) + ") exited by itself (" + l.ended + ")");
    }
}

// (5, 6) The tables at the quiet end of every round: no registration lost, restarts at
// the back of the line, the lease held and its epoch not going back, succession to the
// first live node in line among those no fault touched.
void check_snapshots(const History& h, Report& r) {
  using Reg = std::pair<std::string, std::string>;  // (incarnation, registered_at)
  std::map<std::string, Reg> prev_reg;
  std::string prev_holder, prev_inc;
  i64 prev_epoch = 0;
  std::set<int> touched;  // since the previous snapshot that could be read
  bool lost = false;
  for (const Snapshot& s : h.snapshots) {
    touched.insert(s.touched.begin(), s.touched.end());
    lost = lost || s.lost_commits;
    const std::string during = " during fault #" + std::to_string(s.fault_id);
    if (!s.read_ok) {
      add(r, s.at, VKind::snapshot_failed, "snapshot after fault #" + std::to_string(s.fault_id) + ": " + s.error);
      continue;
    }
    std::map<std::string, Reg> reg;
    std::map<std::string, bool> live;
    for (const NodeRow& n : s.nodes) {
      reg[n.node] = {n.incarnation, n.registered_at};
      live[n.node] = n.live;
    }
    // Every running agent is registered and live; an agent no fault touched kept its
    // registration (same incarnation, same registered_at).
    for (std::size_t i = 0; i < h.agents.size(); ++i) {
      const std::string& node = h.agents[i].node;
      if (!reg.count(node) || !live[node]) {
        add(r, s.at, VKind::no_registration,
            node + " is running but has no live registration after fault #" + std::to_string(s.fault_id));
        continue;
      }
      if (!touched.count(static_cast<int>(i)) && prev_reg.count(node) && prev_reg[node] != reg[node])
        add(r, s.at, VKind::registration_lost,
            node + " lost its registration although no fault touched it (registered_at " + prev_reg[node].second +
                " -> " + reg[node].second + ")" + during);
    }
    // A restarted agent (new incarnation) registered behind every agent that kept its registration.
    for (const Agent& a : h.agents) {
      if (!reg.count(a.node) || !prev_reg.count(a.node) || prev_reg[a.node].first == reg[a.node].first) continue;
      for (const Agent& o : h.agents) {
        if (&o == &a || !reg.count(o.node) || !prev_reg.count(o.node)) continue;
        if (prev_reg[o.node] == reg[o.node] && reg[o.node].second > reg[a.node].second)
          add(r, s.at, VKind::restart_ahead,
              a.node + " came back (new incarnation) ahead of " + o.node + " in the line after fault #" +
                  std::to_string(s.fault_id));
      }
    }
    if (s.has_lease) {
      // Lost commits may take the lease row back with them: counted, not flagged.
      if (s.epoch < prev_epoch && lost)
        ++r.rewinds;
      else if (s.epoch < prev_epoch)
        add(r, s.at, VKind::lease_epoch_back,
            "the lease epoch went back from " + std::to_string(prev_epoch) + " to " + std::to_string(s.epoch) + during);
      if (!s.held) add(r, s.at, VKind::lease_not_held, "the lease is not held at the quiet end of fault #" + std::to_string(s.fault_id));
      if (s.held && (s.holder != prev_holder || s.holder_incarnation != prev_inc) && reg.count(s.holder)) {
        for (std::size_t i = 0; i < h.agents.size(); ++i) {
          const std::string& node = h.agents[i].node;
          if (node == s.holder || touched.count(static_cast<int>(i)) || !reg.count(node) || !prev_reg.count(node))
            continue;
          if (prev_reg[node] == reg[node] && live[node] && reg[node].second < reg[s.holder].second)
            add(r, s.at, VKind::succession_skipped,
                "the lease went to " + s.holder + " (epoch " + std::to_string(s.epoch) + ") although " + node +
                    ", earlier in line, was live and untouched" + during);
        }
      }
      prev_holder = s.held ? s.holder : "";
      prev_inc = s.held ? s.holder_incarnation : "";
      prev_epoch = s.epoch;
    } else {
      add(r, s.at, VKind::no_lease_row, "no lease row for the cluster after fault #" + std::to_string(s.fault_id));
    }
    prev_reg = reg;
    touched.clear();
    lost = false;
  }
}

// (4) A master soon: after each heal; a takeover while a fault of the master holds; the
// longest times without any master answer, with their causes.
void check_liveness(const History& h, Report& r) {
  struct Answer {
    i64 sent, recv, round_trip;
    int slot;
    bool operator<(const Answer& o) const { return sent < o.sent; }
  };
  std::vector<Answer> answers;  // master answers, by the sending of the request
  for (const Agent& a : h.agents)
    for (const Sample& x : a.samples)
      if (x.master()) answers.push_back({x.sent, x.recv, ms_to_ns(x.round_trip_ms), x.slot});
  std::sort(answers.begin(), answers.end());
  const i64 ttl = h.ttl_ms, renew = h.renew_ms;
  // Faults of the database cut every agent's connection: a new connection starts no
  // term for ttl (agent/election.h), after a reconnection backoff of up to renew. A
  // round with such a fault gets that allowance for all its faults.
  std::set<int> cut_rounds;
  for (const Fault& f : h.faults)
    if (cuts_all(f.kind)) cut_rounds.insert(f.round);
  for (const Fault& f : h.faults) {
    auto it = std::lower_bound(answers.begin(), answers.end(), Answer{f.all_healed, 0, 0, 0});
    if (it == answers.end()) {
      add(r, f.all_healed, VKind::no_master_after_heal, "no master after the heal of fault #" + std::to_string(f.id));
      continue;
    }
    // (added latency: what was already on its way when it healed still arrives that late,
    // a last renewal among it; and the round trip that made the master, as long as the
    // database took: a cold server right after a restart can take hundreds of ms)
    const i64 bound = ms_to_ns(ttl + renew * (cut_rounds.count(f.round) ? 2 : 1) + 2 * f.latency_ms) + it->round_trip;
    const i64 took = std::max<i64>(0, it->recv - f.all_healed);
    r.master_after_heal[f.id] = took;
    // (the database's own failover: from the promotion on, a figure of DESIGN.md that the
    // report shows; the heal, when scripts/pg.sh returned, came after the rebuild)
    if (f.promoted_at > 0) {
      auto p = std::lower_bound(answers.begin(), answers.end(), Answer{f.promoted_at, 0, 0, 0});
      if (p != answers.end()) r.master_after_promotion[f.id] = std::max<i64>(0, p->recv - f.promoted_at);
    }
    if (took > bound)
      add(r, f.all_healed, VKind::no_master_after_heal,
          "no master for " + fmt_ms(took) + " after the heal of fault #" + std::to_string(f.id) + " (" +
              kind_name(f.kind) + "), more than " + fmt_ms(bound) + " (its round trip took " + fmt_ms(it->round_trip) +
              ")");
  }
  // The takeover while the fault still holds: when the master alone was killed, frozen
  // or cut off for longer than it takes, another node answers master within ttl + renew
  // of the fault (DESIGN.md: one ttl after the master's last renewal, plus a round trip;
  // with one-way loss towards the agent its renewals still land for up to one more renew).
  std::map<int, int> round_size;
  for (const Fault& f : h.faults) ++round_size[f.round];
  for (const Fault& f : h.faults) {
    const bool cuts_master = f.kind == Kind::kill9 || f.kind == Kind::sigstop || f.kind == Kind::drop ||
                             f.kind == Kind::drop_to_server || f.kind == Kind::drop_to_client;
    const i64 limit = ms_to_ns(ttl + renew * (f.kind == Kind::drop_to_client ? 2 : 1));
    if (!cuts_master || !f.target_was_master || round_size[f.round] > 1 || ms_to_ns(f.hold_ms) <= limit) continue;
    auto it = std::lower_bound(answers.begin(), answers.end(), Answer{f.start, 0, 0, 0});
    while (it != answers.end() && it->slot == f.target) ++it;
    if (it == answers.end() || it->recv - f.start > limit) {
      add(r, f.start, VKind::no_takeover,
          "no other master within " + fmt_ms(limit) + " of fault #" + std::to_string(f.id) + " (" + kind_name(f.kind) +
              " of the master " + node_of(h, f.target) + " for " + std::to_string(f.hold_ms) + "ms)");
      continue;
    }
    r.takeover[f.id] = it->recv - f.start;
  }
  // The longest gaps between master answers, from the first master on, each with the
  // faults it began in or that began during it (and may have made it longer): overall,
  // and split by whether one of them changed the server's life (DESIGN.md's figure for
  // the others: at most 2 ttl + renew).
  std::vector<Answer> by_recv = answers;
  for (std::size_t i = 1; i < answers.size(); ++i) {
    const i64 gap = answers[i].recv - answers[i - 1].sent;
    const i64 at = answers[i - 1].sent;
    if (gap <= 0) continue;
    std::string cause;
    bool new_life = false;
    for (const Fault& f : h.faults)
      if (f.start <= answers[i].recv && at <= f.all_healed + ms_to_ns(ttl + renew)) {
        cause += std::string(cause.empty() ? "" : " and ") + fault_text(h, f);
        new_life = new_life || new_server_life(f.kind);
      }
    auto keep = [&](Gap& g) {
      if (gap > g.length) g = {gap, at, cause};
    };
    keep(r.longest);
    keep(new_life ? r.longest_new_life : r.longest_keep_life);
  }
}

// Fenced writes. Every agent's writer wrote rows only after assert_master(cluster, node,
// e) passed in the same transaction. In the order of their commit timestamps, epochs
// never go back; equivalently, no write of epoch e commits after the first write of a
// later epoch (the fence is strict: a write that passed it commits before the next term
// begins, or fails). And one epoch is one agent life's: surviving rows were written
// over a surviving history (the WAL loses only a suffix), in which every epoch had one
// holder, so lost commits excuse nothing here; their rows are simply gone.
// Writes with equal timestamps have no known order and are not compared.
void check_fenced(const History& h, Report& r) {
  std::vector<FencedWrite> w = h.writes;
  r.writes = w.size();
  std::stable_sort(w.begin(), w.end(), [](const FencedWrite& a, const FencedWrite& b) { return a.commit_us < b.commit_us; });
  std::map<i64, std::pair<int, int>> owner;  // epoch -> (slot, gen)
  std::set<std::pair<i64, i64>> reported;    // (late epoch, later epoch): one line per pair
  std::set<i64> shared;                       // epochs already reported as two agents'
  const FencedWrite* first_of_top = nullptr;  // the first write of the greatest epoch so far
  auto who = [&](const FencedWrite& x) {
    return node_of(h, x.slot) + "." + std::to_string(x.gen) + " (epoch " + std::to_string(x.epoch) + ", seq " +
           std::to_string(x.seq) + ", committed at " + std::to_string(x.commit_us) + " us)";
  };
  for (const FencedWrite& x : w) {
    auto [it, fresh] = owner.emplace(x.epoch, std::make_pair(x.slot, x.gen));
    if (!fresh && it->second != std::make_pair(x.slot, x.gen) && shared.insert(x.epoch).second)
      add(r, h.end, VKind::fenced_epoch_two_nodes,
          "fenced writes of epoch " + std::to_string(x.epoch) + " by " + node_of(h, it->second.first) + "." +
              std::to_string(it->second.second) + " and by " + who(x));
    if (first_of_top && x.epoch < first_of_top->epoch && x.commit_us > first_of_top->commit_us) {
      if (reported.insert({x.epoch, first_of_top->epoch}).second)
        add(r, h.end, VKind::fenced_out_of_order,
            "a fenced write committed out of epoch order: " + who(x) + " after the first write of epoch " +
                std::to_string(first_of_top->epoch) + ", " + who(*first_of_top) + ", " +
                std::to_string(x.commit_us - first_of_top->commit_us) + " us earlier");
    }
    if (!first_of_top || x.epoch > first_of_top->epoch) first_of_top = &x;
  }
}

// The ttl wait after a reconnection (sql/PROTOCOL.md, "Lost commits"; DESIGN.md, "The
// database's own failover"). /status says may_acquire: false while the agent may not
// start a term. Two halves, told apart by their kinds:
//  - must (ttl_wait_missing): after a fault that gave the server a new life (crash
//    recovery, another server promoted), every agent that was connected before it and
//    lives on through the round reports, connected, may_acquire = false at some point
//    after the fault: it waited.
//  - need not (ttl_wait_needless): in a round with no such fault, an agent that said
//    may_acquire = true (connected) before the round and lives on through it never says
//    may_acquire = false while connected: a reconnection to the same life keeps the age.
// Only connected samples count: a disconnected agent can start nothing whatever it says.
// A round runs from its first fault to the next round's first fault (or the end).
void check_ttl_wait(const History& h, Report& r) {
  std::map<int, std::vector<const Fault*>> rounds;
  for (const Fault& f : h.faults) rounds[f.round].push_back(&f);
  std::vector<std::pair<i64, int>> starts;  // (start, round)
  for (auto& [round, fs] : rounds) {
    i64 s = fs.front()->start;
    for (const Fault* f : fs) s = std::min(s, f->start);
    starts.push_back({s, round});
  }
  std::sort(starts.begin(), starts.end());
  for (std::size_t k = 0; k < starts.size(); ++k) {
    const i64 from = starts[k].first;
    const i64 to = k + 1 < starts.size() ? starts[k + 1].first : h.end;
    const auto& fs = rounds[starts[k].second];
    const Fault* life_fault = nullptr;
    for (const Fault* f : fs)
      if (new_server_life(f->kind) && (!life_fault || f->start < life_fault->start)) life_fault = f;
    const i64 since = life_fault ? life_fault->start : from;
    for (std::size_t i = 0; i < h.agents.size(); ++i) {
      const Agent& a = h.agents[i];
      const Life* l = life_at(a, since);
      if (!l || (l->end && l->end < to)) continue;  // not running, or restarted in the round
      const Sample* before = nullptr;               // its last connected answer before
      for (const Sample& x : a.samples)
        if (x.gen == l->gen && x.sent < since && is_connected(x.role)) before = &x;
      if (!before) continue;
      if (life_fault) {
        ++r.ttl_waits_checked;
        bool waited = false;
        for (const Sample& x : a.samples)
          if (x.gen == l->gen && x.sent >= since && x.sent < to && is_connected(x.role) && !x.may_acquire) waited = true;
        if (!waited)
          add(r, since, VKind::ttl_wait_missing,
              a.node + " never said may_acquire=false (connected) after " + fault_text(h, *life_fault) +
                  ", which gave the server a new life: no ttl wait");
      } else if (before->may_acquire) {
        ++r.ttl_keeps_checked;
        for (const Sample& x : a.samples)
          if (x.gen == l->gen && x.sent >= since && x.sent < to && is_connected(x.role) && !x.may_acquire) {
            std::string during;
            for (const Fault* f : fs) during += (during.empty() ? "" : " and ") + fault_text(h, *f);
            add(r, x.sent, VKind::ttl_wait_needless,
                a.node + " said may_acquire=false at " + fmt_rel(h, x.sent) + " during " + during +
                    ", which kept the server's life: a needless ttl wait");
            break;
          }
      }
    }
  }
}

Report check(const History& h) {
  Report r;
  check_answers(h, r);
  check_hooks(h, r);
  check_lives(h, r);
  check_snapshots(h, r);
  check_liveness(h, r);
  check_fenced(h, r);
  check_ttl_wait(h, r);
  r.violations.insert(r.violations.end(), h.observed.begin(), h.observed.end());
  std::stable_sort(r.violations.begin(), r.violations.end(),
                   [](const Violation& a, const Violation& b) { return a.at < b.at; });
  return r;
}

std::string timeline(const History& h, i64 from, i64 to) {
  std::vector<std::pair<i64, std::string>> ev;
  for (const Fault& f : h.faults) {
    if (f.start >= from && f.start <= to) ev.push_back({f.start, fault_text(h, f)});
    if (f.heal >= from && f.heal <= to) ev.push_back({f.heal, "heal of fault #" + std::to_string(f.id)});
  }
  for (const Agent& a : h.agents) {
    const Sample* prev = nullptr;
    for (const Sample& x : a.samples) {
      if (x.sent >= from && x.sent <= to &&
          (!prev || prev->role != x.role || prev->epoch != x.epoch || prev->gen != x.gen ||
           prev->may_acquire != x.may_acquire))
        ev.push_back({x.sent, a.node + "." + std::to_string(x.gen) + " answers " +
                                  (x.master() ? "master" : "not master") + " epoch " + std::to_string(x.epoch) +
                                  (x.may_acquire ? "" : " (may not acquire)") + " (request sent; answer at " +
                                  fmt_rel(h, x.recv) + ")"});
      prev = &x;
    }
  }
  for (const HookRecord& k : h.hooks)
    if (k.t >= from && k.t <= to)
      ev.push_back({k.t, "hook of " + k.node + ": " + (k.role == "master" ? "on-promote" : "on-demote") + " epoch " +
                             std::to_string(k.epoch)});
  std::stable_sort(ev.begin(), ev.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::ostringstream out;
  for (const auto& [t, what] : ev) out << "    " << fmt_rel(h, t) << "  " << what << "\n";
  return out.str();
}

}  // namespace fault_checker
