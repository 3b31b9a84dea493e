// The checker of the fault suite: a history (history.h) goes in, violations come out.
// Pure functions: no processes, clocks, files or database, so that every check can be
// tried on made-up histories (checker_test.cpp). README.md in this directory says what
// each check means.
#pragma once

#include <cstddef>
#include <map>
#include <string>
#include <vector>

#include "history.h"

namespace fault_checker {

using namespace fault_history;

// Each agent life's master periods, from its samples: a run of consecutive "master"
// answers at one epoch. The agent was certainly master from the answer to the first
// request to the sending of the last one (the inner hull): [first_recv, last_sent].
struct Period {
  int slot = 0, gen = 0;
  i64 epoch = 0;
  i64 first_sent = 0, first_recv = 0, last_sent = 0, last_recv = 0;
};
std::vector<Period> master_periods(const std::vector<Sample>& samples);

// A stretch without any master answer, and the faults it began in.
struct Gap {
  i64 length = 0, at = 0;
  std::string cause;
};

struct Report {
  std::vector<Violation> violations;
  std::map<int, i64> master_after_heal;  // fault id -> ns from its round's heal to the first master answer
  std::map<int, i64> takeover;           // fault id -> ns from the fault to another node's master answer
  std::map<int, i64> master_after_promotion;  // pg-failover/-switchover id -> ns from the promotion to a master answer
  std::size_t samples = 0, master_samples = 0, periods = 0, hook_records = 0, hook_periods = 0;
  int rewinds = 0;   // lease rows that went back across lost commits
  int reissued = 0;  // epochs given again across lost commits (answers and hooks)
  Gap longest;            // of the whole run
  Gap longest_keep_life;  // begun during faults that keep the server's life (or none)
  Gap longest_new_life;   // begun during a fault that changed it
  std::size_t writes = 0;  // fenced writes checked
  std::size_t ttl_waits_checked = 0, ttl_keeps_checked = 0;  // agents x rounds of the ttl-wait check

  bool has(VKind k) const;
  std::size_t count(VKind k) const;
};

// Every check on the whole history, the runner's observations included.
Report check(const History& h);

// The checks one by one (each appends to r.violations).
void check_answers(const History& h, Report& r);     // no two masters, epochs only grow (samples)
void check_hooks(const History& h, Report& r);       // no two masters, epochs only grow (hooks)
void check_lives(const History& h, Report& r);       // clean stops exit 0, nobody exits by itself
void check_snapshots(const History& h, Report& r);   // registrations, the line, the lease row
void check_liveness(const History& h, Report& r);    // a master soon after heals and faults of the master
void check_fenced(const History& h, Report& r);      // fenced writes in epoch order
void check_ttl_wait(const History& h, Report& r);    // the ttl wait where it must be and not where it need not

// Whether a fault that may have lost acknowledged commits made at or after t1 began by t2:
// one that began by t2 and whose crash may have come at t1 or later (it came by the
// promotion of the new primary, or else by the heal). A commit made while such a fault was
// under way, before its crash, is lost as well as one made before the fault began.
bool lost_commits_between(const History& h, i64 t1, i64 t2);

// The history between two times, one event a line, for a person reading a failure.
std::string timeline(const History& h, i64 from, i64 to);

// "t=12.345s": a time of the run.
std::string fmt_rel(const History& h, i64 t);
std::string fmt_ms(i64 ns);

// One line of the hook record ("mono_ns node role epoch pid"); false if it is not one.
bool parse_hook_line(const std::string& line, HookRecord& out);

}  // namespace fault_checker
