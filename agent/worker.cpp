// The worker: connect, heartbeat when due, wait for notifications in between.
#include "worker.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <optional>

#include "daemon.h"

namespace lease_agent {
namespace {

long long ms_between(TimePoint a, TimePoint b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

// What a notification means to the election.
Decision on_notice(Election& el, const LeaseNotice& n, TimePoint received) {
  switch (n.kind) {
    case LeaseNotice::Kind::switchover: return el.on_switchover_requested(n.epoch, n.target, received);
    case LeaseNotice::Kind::handed: return el.on_handed(n.version, n.epoch, n.to_me, n.how, received);
    case LeaseNotice::Kind::free: break;
  }
  return el.on_notify(n.version, true, received);
}

}  // namespace

Worker::Worker(AgentState& state, LeaseStore& store, HookRunner& hooks)
    : state_(state), store_(store), hooks_(hooks) {
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
}

Worker::~Worker() {
  if (wake_fd_ >= 0) ::close(wake_fd_);
}

void Worker::wake() {
  const std::uint64_t one = 1;
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void Worker::pause(milliseconds d) {
  pollfd p{wake_fd_, POLLIN, 0};
  ::poll(&p, 1, static_cast<int>(std::max<long long>(0, d.count())));
  std::uint64_t v;
  [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof v);
}

void Worker::failed(TimePoint sent, const StoreError& e) {
  state_.record_error("heartbeat");
  const TimePoint failed = Clock::now();
  state_.change_all([&](Election& el, TimePoint) {
    return std::vector<Decision>{el.tick(failed), el.on_failure(sent, failed, e.what())};
  });
  // (on_failure's sentence is notable at the start of an outage, then now and then.)
}

int Worker::run() {
  const Timing timing = state_.timing();
  milliseconds backoff = timing.retry();
  TimePoint next_connect{};
  bool ever_connected = false;
  int newer_schema_logged = 0;
  // An outage is logged once when it starts, again when its error changes, and once
  // when it ends.
  std::optional<TimePoint> outage_since;
  std::string outage_error;
  auto outage = [&](const std::string& error, TimePoint at) {
    if (!outage_since) outage_since = at;
    if (error != outage_error)
      state_.log(LogLevel::warning,
                 error + "; retrying with backoff up to " + std::to_string(timing.renew.count()) + "ms",
                 {{"event", "database-unreachable"}});
    outage_error = error;
  };

  for (;;) {
    if (state_.stopping()) return kExitClean;
    TimePoint now = Clock::now();

    // 1. Connect, with backoff while the database is away.
    if (!store_.connected()) {
      if (now < next_connect) {
        pause(milliseconds(std::max<long long>(1, ms_between(now, next_connect))));
        continue;
      }
      try {
        store_.connect();
        if (!ever_connected || outage_since) {
          const std::string what =
              outage_since ? "connected to the database again after " +
                                 std::to_string(ms_between(*outage_since, Clock::now())) + "ms"
                           : std::string("connected to the database");
          state_.log(LogLevel::info, what, {{"database", store_.describe_connection()}});
        }
        if (store_.schema_version() > kSchemaVersion && store_.schema_version() != newer_schema_logged) {
          // Served as before (each schema keeps its older agents' functions), but worth saying
          // once: this agent is older than the database's schema, as during a rolling upgrade.
          newer_schema_logged = store_.schema_version();
          state_.log(LogLevel::warning,
                     "the database's lease_agent schema is version " + std::to_string(newer_schema_logged) +
                         ", newer than this agent's " + std::to_string(kSchemaVersion) +
                         ": it keeps serving this agent; upgrade the agent to use what is new",
                     {{"event", "schema-newer"}});
        }
        const std::string life = store_.server_life();
        const bool first = !ever_connected;
        ever_connected = true;
        state_.change([&](Election& el, TimePoint at) {
          Decision d;
          if (el.on_connected(at, life) && !first) {
            // (sql/PROTOCOL.md, "Lost commits": only a new life waits.)
            d.notable = true;
            d.cause = "server-life";
            d.reason = "the database is in a new server life (crash recovery, or another server was "
                       "promoted): acknowledged commits may have been lost, so no term starts here for " +
                       std::to_string(timing.ttl.count()) + "ms";
          }
          return d;
        });
        outage_since.reset();
        outage_error.clear();
        backoff = timing.retry();
      } catch (const StoreError& e) {
        if (e.fatal()) {
          state_.log(LogLevel::error, e.what(), {{"event", "fatal"}});
          return kExitFault;
        }
        state_.record_error("connect");
        outage(e.what(), now);
        next_connect = Clock::now() + backoff;
        backoff = std::min(backoff * 2, timing.renew);
        continue;
      }
    }

    // 2. Until the next heartbeat is due: notifications of the lease row.
    const TimePoint due = state_.read([](const Election& el, TimePoint) { return el.next_heartbeat(); });
    now = Clock::now();
    if (now < due) {
      pollfd p[2] = {{wake_fd_, POLLIN, 0}, {store_.socket(), POLLIN, 0}};
      const long long wait = std::max<long long>(1, ms_between(now, due));
      ::poll(p, 2, static_cast<int>(std::min<long long>(wait, 60000)));
      if (p[0].revents) {
        std::uint64_t v;
        [[maybe_unused]] ssize_t n = ::read(wake_fd_, &v, sizeof v);
      }
      if (p[1].revents) {
        try {
          const std::vector<LeaseNotice> notices = store_.take_notices();
          const TimePoint received = Clock::now();
          state_.change_all([&](Election& el, TimePoint) {
            std::vector<Decision> out;
            for (const LeaseNotice& n : notices) out.push_back(on_notice(el, n, received));
            return out;
          });
        } catch (const StoreError& e) {
          state_.record_error("notification");
          outage(e.what(), Clock::now());
        }
        // A switchover request heard: the hand-over is the next round trip.
        if (state_.read([](const Election& el, TimePoint) { return el.handing_over(); })) hand_over();
      }
      continue;
    }

    // 3. The heartbeat: one statement.
    HeartbeatRequest req;
    const TimePoint sent = Clock::now();
    state_.change([&](Election& el, TimePoint) {
      Decision d = el.tick(sent);
      req = el.request(sent);
      return d;
    });
    if (state_.stopping()) return kExitClean;
    try {
      const HeartbeatAnswer a = store_.heartbeat(req);
      const TimePoint received = Clock::now();
      const std::vector<LeaseNotice> notices = store_.take_notices();
      state_.record_round_trip(sent, received);
      const std::vector<Decision> ds = state_.change_all([&](Election& el, TimePoint) {
        std::vector<Decision> out{el.tick(received), el.on_answer(req, a, sent, received)};
        for (const LeaseNotice& n : notices) out.push_back(on_notice(el, n, received));
        return out;
      });
      if (ds.empty()) return kExitClean;  // stopping: the lease, if ours, is released by leave()
      if (ds[1].transition == Transition::exit_duplicate) return kExitFault;
      if (state_.read([](const Election& el, TimePoint) { return el.handing_over(); })) hand_over();
    } catch (const StoreError& e) {
      if (e.fatal()) {
        state_.log(LogLevel::error, e.what(), {{"event", "fatal"}});
        return kExitFault;
      }
      failed(sent, e);
      if (!store_.connected()) next_connect = Clock::now() + timing.retry();
    }
  }
}

void Worker::hand_over() {
  const TimePoint started = Clock::now();
  // 1. on-demote (queued by the demotion) has run; 2. the load balancers mark this node
  // down while it answers 503; 3. the lease goes to the target.
  hooks_.drain();
  const milliseconds delay = state_.settings().handover_delay;
  if (delay.count() > 0) {
    const TimePoint until = Clock::now() + delay;
    while (!state_.stopping() && Clock::now() < until)
      pause(std::chrono::duration_cast<milliseconds>(until - Clock::now()) + milliseconds(1));
  }
  if (state_.stopping()) {
    // leave() releases the lease (to the next in line; the switchover is abandoned).
    state_.change([](Election& el, TimePoint now) { return el.on_handed_over(false, "", false, now); });
    return;
  }
  try {
    const bool may_hand_off = state_.read([](const Election& el, TimePoint now) { return el.may_acquire(now); });
    const HandOver h = store_.hand_over(may_hand_off);
    state_.change([&](Election& el, TimePoint now) {
      Decision d = el.on_handed_over(h.handed_over, h.target, h.direct, now);
      d.reason += " (" + std::to_string(ms_between(started, now)) + "ms after the request was heard)";
      return d;
    });
  } catch (const StoreError& e) {
    state_.record_error("switchover");
    state_.change([&](Election& el, TimePoint now) {
      Decision d = el.on_handed_over(false, "", false, now);
      d.reason = std::string("switchover abandoned: the hand-over failed: ") + e.what();
      return d;
    });
    if (e.fatal()) state_.log(LogLevel::error, e.what(), {{"event", "fatal"}});
  }
}

void Worker::leave(bool was_master) {
  const milliseconds delay = state_.settings().handover_delay;
  if (was_master && delay.count() > 0) {
    // 503 for that long before the release: the load balancers mark this node down
    // before the next master answers 200. (Not woken by wake(): the stop is under way.)
    const TimePoint until = Clock::now() + delay;
    while (Clock::now() < until) {
      pollfd none{-1, 0, 0};
      ::poll(&none, 0, static_cast<int>(std::max<long long>(1, ms_between(Clock::now(), until))));
    }
  }
  try {
    if (!store_.connected()) store_.connect(false);
    // A hand-off only over a connection to a server life this agent has seen for ttl
    // (sql/PROTOCOL.md, "Hand-off"); otherwise the lease is set free.
    const std::string life = store_.server_life();
    const bool may_hand_off = state_.read(
        [&](const Election& el, TimePoint now) { return el.may_acquire(now) && el.server_life() == life; });
    const Leave l = store_.leave(may_hand_off);
    if (!l.handed_to.empty())
      state_.log(LogLevel::info,
                 "handed the lease to " + l.handed_to + " (epoch " + std::to_string(l.epoch) + ") and left the cluster",
                 {{"event", "leave"}, {"handed_to", l.handed_to}, {"epoch", static_cast<long long>(l.epoch)}});
    else
      state_.log(LogLevel::info, l.released ? "released the lease and left the cluster" : "left the cluster",
                 {{"event", "leave"}});
  } catch (const StoreError& e) {
    state_.log(LogLevel::warning, std::string("could not leave the cluster cleanly: ") + e.what() +
                                      "; the lease and registration expire after ttl");
  }
}

}  // namespace lease_agent
