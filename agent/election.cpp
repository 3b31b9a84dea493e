// The election state machine: a pure function of answers and monotonic time.
#include "election.h"

#include <cmath>
#include <sstream>

namespace lease_agent {
namespace {

long long ms(Clock::duration d) {
  return std::chrono::duration_cast<milliseconds>(d).count();
}

}  // namespace

const char* to_string(Transition t) {
  switch (t) {
    case Transition::none: return "none";
    case Transition::promote: return "promote";
    case Transition::demote: return "demote";
    case Transition::exit_duplicate: return "exit_duplicate";
  }
  return "?";
}

Election::Election(Timing timing) : timing_(timing) {}

HeartbeatRequest Election::request(TimePoint now) const {
  HeartbeatRequest r;
  if (is_master(now)) r.epoch = epoch_;
  if (!holding_ && watched_version_ && now >= watched_since_ + timing_.ttl)
    r.watched_version = watched_version_;
  r.may_acquire = may_acquire(now);
  return r;
}

bool Election::on_connected(TimePoint now, const std::string& life) {
  regular_next_ = std::min(regular_next_, now);
  if (!life.empty() && life == life_ && life_since_) return false;
  life_ = life;
  life_since_ = now;
  watched_version_.reset();
  tried_version_.reset();
  answered_version_ = -1;  // versions of an earlier life say nothing about this one
  phase_version_ = -1;
  return true;
}

TimePoint Election::next_heartbeat() const {
  if (handing_over_) return TimePoint::max();  // the hand-over is the next round trip
  TimePoint t = regular_next_;
  // (A watched version was seen in the current server life, so by then this agent has
  // seen the life for ttl too.)
  if (!holding_ && watched_version_ && watched_version_ != tried_version_)
    t = std::min(t, watched_since_ + timing_.ttl);
  // A standby whose view of the server life comes of age asks then (a free lease, a
  // lease of ours).
  if (!holding_ && life_since_ && *life_since_ + timing_.ttl > last_sent_)
    t = std::min(t, *life_since_ + timing_.ttl);
  return t;
}

TimePoint Election::next_wakeup() const {
  TimePoint t = next_heartbeat();
  if (holding_) t = std::min(t, deadline_);
  return t;
}

bool Election::healthy(TimePoint now) const {
  return last_ok_ && now - *last_ok_ < timing_.ttl;
}

void Election::watch(std::int64_t version, TimePoint seen) {
  // Versions only grow: an older one is a late message, a known one changes nothing.
  if (watched_version_ && version <= *watched_version_) return;
  watched_version_ = version;
  watched_since_ = seen;
}

Decision Election::on_answer(const HeartbeatRequest& req, const HeartbeatAnswer& a,
                             TimePoint sent, TimePoint received) {
  Decision d;
  last_ok_ = received;
  last_sent_ = sent;
  failures_ = 0;

  // 1. The node name: refused while another incarnation is live. At start that may be
  //    this node's own previous life, not yet expired: wait until its heartbeat either
  //    expires (a dead process) or moves (a live agent: a misconfiguration).
  if (a.duplicate) {
    if (!registered_ && (duplicate_seen_.empty() || duplicate_seen_ == a.duplicate_detail)) {
      duplicate_seen_ = a.duplicate_detail;
      regular_next_ = sent + timing_.renew;
      d.notable = true;
      d.reason = "node name is registered by another incarnation (" + a.duplicate_detail +
                 "); waiting to see whether it is still alive";
      return d;
    }
    d.ends_mastership = holding_;
    d.epoch = epoch_;
    d.cause = "duplicate";
    holding_ = false;
    d.transition = Transition::exit_duplicate;
    d.reason = "node name is held by another live agent (" + a.duplicate_detail + ")";
    if (d.ends_mastership) d.reason += "; stopped acting as master (epoch " + std::to_string(epoch_) + ")";
    return d;
  }
  registered_ = true;
  last_ = a;
  answered_sent_ = sent;
  answered_version_ = a.version;

  // 2. The database's clock against ours: a warning only, never a decision.
  if (clock_ref_) {
    const double db_advance = a.db_now_ms - clock_ref_->first;
    const double our_advance = static_cast<double>(ms(received - clock_ref_->second));
    const double slack = static_cast<double>(timing_.margin().count() + ms(received - sent));
    if (std::fabs(db_advance - our_advance) > slack) {
      std::ostringstream w;
      w << "database clock advanced " << std::llround(db_advance) << "ms while the monotonic clock here advanced "
        << std::llround(our_advance) << "ms";
      d.warning = w.str();
      clock_ref_.reset();
    }
  }
  if (!clock_ref_) clock_ref_ = std::make_pair(a.db_now_ms, received);

  regular_next_ = sent + timing_.renew;

  // 3. This incarnation holds the lease: master until sent + ttl - margin.
  if (a.holder_is_me) {
    const TimePoint deadline = sent + timing_.ttl - timing_.margin();
    watched_version_.reset();
    tried_version_.reset();
    if (deadline <= received) {
      // The answer took longer than the lease is worth: act on nothing, ask again now.
      regular_next_ = received;
      d.notable = true;
      d.reason = "renewal answered after " + std::to_string(ms(received - sent)) +
                 "ms, too late to act on; asking again";
      return d;
    }
    if (!holding_) {
      holding_ = true;
      epoch_ = a.epoch;
      deadline_ = deadline;
      d.transition = Transition::promote;
      d.epoch = a.epoch;
      d.cause = !a.acquired || a.acquired_how.empty() ? "recovered" : a.acquired_how;
      std::ostringstream r;
      r << "promoted: acquired the lease at epoch " << a.epoch;
      if (!a.acquired)
        r << " (renewed a lease this agent had stopped counting on)";
      else if (a.acquired_how == "recovered")
        r << " (a new term of its own lease, which nobody took over while this node was not"
             " counting on it)";
      else if (a.acquired_how == "switchover")
        r << " (handed over to this node by a switchover)";
      else if (a.acquired_how == "handed")
        r << " (handed to this node by the clean stop of the master before it)";
      else if (req.watched_version && a.acquired_how == "expired")
        r << " after watching version " << *req.watched_version << " unchanged for "
          << timing_.ttl.count() << "ms";
      else
        r << " (it was free)";
      if (a.fence_wait_ms > 0 || a.fence_ended > 0) {
        r << "; waited " << a.fence_wait_ms << "ms for application transactions of epoch "
          << a.epoch - 1 << " that passed assert_master";
        if (a.fence_ended > 0) r << ", ended " << a.fence_ended << " of them";
        d.fence_wait_ms = a.fence_wait_ms;
        d.fence_ended = a.fence_ended;
      }
      d.reason = r.str();
      return d;
    }
    if (a.epoch != epoch_) {
      d.notable = true;
      d.reason = "lease renewed at epoch " + std::to_string(a.epoch) + " instead of " +
                 std::to_string(epoch_);
      epoch_ = a.epoch;
    } else {
      d.reason = "renewed the lease at epoch " + std::to_string(a.epoch);
    }
    deadline_ = std::max(deadline_, deadline);
    if (!a.switchover_to.empty() && a.switchover_to != a.holder) {
      // 3b. A switchover asks this master to hand over: stop acting as master now.
      Decision step = step_down_for(a.switchover_to);
      step.warning = d.warning;
      return step;
    }
    return d;
  }

  // 4. Someone else holds it, or nobody does.
  if (req.may_acquire && req.watched_version && a.version == *req.watched_version)
    tried_version_ = a.version;  // not first in line: do not ask again at this version
  std::ostringstream r;
  if (holding_) {
    holding_ = false;
    d.transition = Transition::demote;
    d.ends_mastership = true;
    d.epoch = epoch_;
    d.cause = "lost";
    r << "demoted: the lease is held by " << (a.holder.empty() ? "nobody" : a.holder)
      << " at epoch " << a.epoch;
  }
  epoch_ = a.epoch;
  if (a.holder.empty()) {
    watched_version_.reset();
    if (!a.reserved_for.empty()) {
      // Reserved for a switchover's target: ask again when the reservation lapses.
      regular_next_ = std::min(regular_next_, received + milliseconds(a.reserved_left_ms + 1));
    }
    if (d.transition == Transition::none) {
      r << "the lease is free";
      if (!a.reserved_for.empty())
        r << ", reserved for " << a.reserved_for << " for " << a.reserved_left_ms << "ms more";
      else if (!a.first_in_line.empty())
        r << "; first in line is " << a.first_in_line;
    }
  } else {
    watch(a.version, received);
    if (a.next_in_line_is_me) regular_next_ = after_next_renewal(a, sent, received);
    if (d.transition == Transition::none)
      r << "standby: the lease is held by " << a.holder << " at epoch " << a.epoch;
  }
  d.reason = r.str();
  return d;
}

TimePoint Election::after_next_renewal(const HeartbeatAnswer& a, TimePoint sent, TimePoint received) {
  // The first sight of each version is what a takeover counts from, so the next in line
  // looks just after each renewal: at the renewal the database reported + the holder's
  // renew + a slack. A renewal that is overdue (a slow master, or a dead one) is looked
  // for again after 1, 2, 4 and 8 slacks, then at the regular pace until the version
  // moves. The database's durations only time the look; safety rests on the first
  // sight as always.
  const TimePoint regular = sent + timing_.renew;
  if (a.renewed_ago_ms < 0) return regular;
  const milliseconds period = a.holder_renew_ms > 0 ? milliseconds(a.holder_renew_ms) : timing_.renew;
  const milliseconds slack = std::max(milliseconds(2), timing_.renew / 100);
  const TimePoint expected = received - milliseconds(a.renewed_ago_ms) + period;
  if (a.version != phase_version_) {
    phase_version_ = a.version;
    phase_misses_ = 0;
  }
  if (expected + slack > received) return std::min(expected + slack, received + period + slack);
  constexpr int kLooks = 4;
  if (phase_misses_ < kLooks) return received + slack * (1 << phase_misses_++);
  return regular;
}

Decision Election::on_failure(TimePoint sent, TimePoint now, const std::string& error) {
  Decision d;
  ++failures_;
  last_sent_ = sent;
  // A master retries quickly until its deadline; a standby backs off up to renew.
  milliseconds wait = timing_.retry();
  if (!holding_) {
    for (int i = 1; i < failures_ && wait < timing_.renew; ++i) wait *= 2;
    wait = std::min(wait, timing_.renew);
  }
  regular_next_ = now + wait;
  d.notable = failures_ == 1 || failures_ % 20 == 0;  // the start of an outage, then now and then
  std::ostringstream r;
  r << "heartbeat sent " << ms(now - sent) << "ms ago failed: " << error << "; ";
  if (holding_)
    r << "retrying in " << wait.count() << "ms, master for " << ms(deadline_ - now) << "ms more";
  else
    r << "retrying in " << wait.count() << "ms";
  d.reason = r.str();
  return d;
}

Decision Election::on_notify(std::int64_t version, bool free, TimePoint received) {
  Decision d;
  if (holding_) {
    d.reason = "notification of version " + std::to_string(version) + " while master";
    return d;
  }
  if (free) {
    // Released: the first in line may take it at once, so ask now.
    watched_version_.reset();
    regular_next_ = received;
    d.notable = true;
    d.reason = "the lease was released (version " + std::to_string(version) + ")";
    return d;
  }
  watch(version, received);
  d.reason = "the lease row is at version " + std::to_string(version);
  return d;
}

Decision Election::step_down_for(const std::string& target) {
  Decision d;
  holding_ = false;
  handing_over_ = true;
  d.transition = Transition::demote;
  d.ends_mastership = true;
  d.hand_over = true;
  d.epoch = epoch_;
  d.cause = "switchover";
  d.notable = true;
  d.reason = "demoted: a switchover asks to hand the lease to " + target + " (epoch " +
             std::to_string(epoch_) + ")";
  return d;
}

Decision Election::on_switchover_requested(std::int64_t epoch, const std::string& target,
                                           TimePoint received) {
  if (!holding_ || handing_over_ || epoch != epoch_ || !is_master(received)) {
    Decision d;
    d.reason = "a switchover to " + target + " was requested of the master at epoch " + std::to_string(epoch);
    return d;
  }
  // The hand-over checks under the row's lock that the request stands; stepping down
  // first is safe whatever it finds.
  return step_down_for(target);
}

Decision Election::on_handed(std::int64_t version, std::int64_t epoch, bool to_me, const std::string& how,
                             TimePoint received) {
  Decision d;
  const std::string by = how == "switchover" ? "a switchover" : "the clean stop of the master";
  if (!to_me) {
    if (!holding_) watch(version, received);
    d.reason = "the lease was handed to another node at epoch " + std::to_string(epoch) + " by " + by;
    return d;
  }
  if (holding_) {
    d.reason = "notification of the hand-off to this node while master";
    return d;
  }
  regular_next_ = received;  // renew at once: confirms the term and extends the deadline
  d.notable = true;
  const std::string what = "the lease was handed to this node at epoch " + std::to_string(epoch) + " by " + by;
  if (!answered_sent_ || answered_version_ >= version) {
    d.reason = what + "; no answer of this node from before the hand-off to count from, renewing first";
    return d;
  }
  const TimePoint deadline = *answered_sent_ + timing_.ttl - timing_.margin();
  if (deadline <= received) {
    d.reason = what + "; this node's last answered heartbeat is too old to count from, renewing first";
    return d;
  }
  holding_ = true;
  epoch_ = epoch;
  deadline_ = deadline;
  watched_version_.reset();
  tried_version_.reset();
  d.transition = Transition::promote;
  d.epoch = epoch;
  d.cause = how == "switchover" ? "switchover" : "handed";
  d.reason = "promoted: acquired the lease at epoch " + std::to_string(epoch) + " (handed to this node by " + by +
             "; master from the notification on, without a round trip)";
  return d;
}

Decision Election::on_handed_over(bool handed_over, const std::string& target, bool direct, TimePoint now) {
  Decision d;
  handing_over_ = false;
  d.notable = true;
  if (handed_over) {
    regular_next_ = std::min(regular_next_, now + timing_.renew);
    d.reason = direct ? "handed the lease over to " + target + " (after epoch " + std::to_string(epoch_) +
                            "): it is master from the hand-off on"
                      : "handed the lease over to " + target + " (epoch " + std::to_string(epoch_) +
                            "); it is free for " + target + " alone for ttl";
  } else {
    regular_next_ = now;
    d.reason = "switchover abandoned: no request stands for a live node" +
               (target.empty() ? std::string() : " (" + target + ")") +
               "; the lease is still this node's, a new term may start";
  }
  return d;
}

Decision Election::tick(TimePoint now) {
  Decision d;
  if (holding_ && now >= deadline_) {
    holding_ = false;
    d.transition = Transition::demote;
    d.ends_mastership = true;
    d.epoch = epoch_;
    d.cause = "deadline";
    std::ostringstream r;
    r << "demoted: the lease deadline passed without a successful renewal (epoch " << epoch_;
    if (last_ok_) r << ", last round trip " << ms(now - *last_ok_) << "ms ago";
    r << ")";
    d.reason = r.str();
  }
  return d;
}

Decision Election::resign(TimePoint now) {
  Decision d = tick(now);
  if (d.transition == Transition::none && holding_) {
    holding_ = false;
    d.transition = Transition::demote;
    d.ends_mastership = true;
    d.epoch = epoch_;
    d.cause = "stop";
    d.reason = "demoted: stopping, the lease will be released (epoch " + std::to_string(epoch_) + ")";
  }
  return d;
}

}  // namespace lease_agent
