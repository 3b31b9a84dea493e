// The agent's shared state: decisions applied under the mutex, their effects after it.
#include "agent_state.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <system_error>

namespace lease_agent {
namespace {

long long ms_between(TimePoint a, TimePoint b) {
  return std::chrono::duration_cast<milliseconds>(b - a).count();
}

}  // namespace

AgentState::AgentState(const Settings& s, HookRunner& hooks, SystemdNotifier& systemd)
    : settings_(s),
      hooks_(hooks),
      systemd_(systemd),
      election_(Timing{s.ttl, s.renew}),
      metrics_(s.cluster, s.node) {
  timer_fd_ = ::timerfd_create(CLOCK_BOOTTIME, TFD_CLOEXEC | TFD_NONBLOCK);
  if (timer_fd_ < 0) throw std::system_error(errno, std::generic_category(), "deadline timer: timerfd_create");
  wake_fd_ = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (wake_fd_ < 0) {
    const int err = errno;
    ::close(timer_fd_);
    throw std::system_error(err, std::generic_category(), "deadline timer: eventfd");
  }
}

AgentState::~AgentState() {
  ::close(timer_fd_);
  ::close(wake_fd_);
}

Decision AgentState::change(const std::function<Decision(Election&, TimePoint)>& change) {
  Decision d;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return d;
    const TimePoint now = Clock::now();
    d = change(election_, now);
    apply(d, now);
  }
  perform();
  return d;
}

std::vector<Decision> AgentState::change_all(
    const std::function<std::vector<Decision>(Election&, TimePoint)>& change) {
  std::vector<Decision> ds;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return ds;
    const TimePoint now = Clock::now();
    ds = change(election_, now);
    for (const Decision& d : ds) apply(d, now);
  }
  perform();
  return ds;
}

void AgentState::apply(const Decision& d, TimePoint now) {
  Effects e;
  if (!d.warning.empty()) {
    metrics_.clock_warning();
    e.lines.push_back({LogLevel::warning, d.warning, {{"event", "clock-drift"}}});
  }
  const Settings& s = settings_;
  switch (d.transition) {
    case Transition::promote:
      metrics_.transition("master", d.cause);
      if (d.fence_wait_ms > 0 || d.fence_ended > 0) metrics_.fence_wait(d.fence_wait_ms, d.fence_ended);
      e.lines.push_back({LogLevel::info, d.reason,
                         {{"event", "promote"}, {"role", "master"}, {"epoch", d.epoch}, {"cause", d.cause}}});
      e.hooks.push_back({"on-promote", s.on_promote, "master", d.epoch});
      break;
    case Transition::demote: {
      metrics_.transition("standby", d.cause);
      // A planned demotion (a clean stop, a switchover) is no warning.
      const bool planned = d.cause == "stop" || d.cause == "switchover";
      e.lines.push_back({planned ? LogLevel::info : LogLevel::warning, d.reason,
                         {{"event", "demote"}, {"role", "standby"}, {"epoch", d.epoch}, {"cause", d.cause}}});
      e.hooks.push_back({"on-demote", s.on_demote, "standby", d.epoch});
      break;
    }
    case Transition::exit_duplicate:
      if (d.ends_mastership) {
        metrics_.transition("standby", "duplicate");
        e.hooks.push_back({"on-demote", s.on_demote, "standby", d.epoch});
      }
      e.lines.push_back({LogLevel::error, "node " + s.node + " of cluster " + s.cluster + ": " + d.reason,
                         {{"event", "duplicate-node"}}});
      break;
    case Transition::none:
      if (d.cause == "server-life") {
        metrics_.new_server_life();
        e.lines.push_back({LogLevel::warning, d.reason, {{"event", "server-life"}}});
      } else if (d.notable) {
        e.lines.push_back({LogLevel::info, d.reason, {}});
      }
      break;
  }

  // systemd: READY=1 once registered (in the line of succession), and a STATUS= line
  // whenever the role or the epoch changes.
  std::string message;
  if (!announced_ready_ && election_.registered()) {
    announced_ready_ = true;
    message = "READY=1\n";
  }
  const std::string r = role(now);
  std::string status = r + ", epoch " + std::to_string(election_.epoch());
  if (r != "master" && !election_.last_answer().holder.empty())
    status += ", master " + election_.last_answer().holder;
  if (status != systemd_status_) {
    systemd_status_ = status;
    message += "STATUS=" + status;
  }
  if (!message.empty()) e.systemd = message;

  wake_timer();
  if (!e.lines.empty() || !e.hooks.empty() || e.systemd) pending_.push_back(std::move(e));
}

void AgentState::perform() {
  std::lock_guard<std::mutex> performing(perform_mu_);
  for (;;) {
    Effects e;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (pending_.empty()) return;
      e = std::move(pending_.front());
      pending_.pop_front();
    }
    // Nothing here waits: a hook and a log line are only queued (hooks.h, log.h), and
    // the deadline timer may be next in line for this mutex.
    for (HookCall& h : e.hooks) hooks_.enqueue(std::move(h));
    if (e.systemd) systemd_.notify(*e.systemd);
    for (const Effects::Line& l : e.lines) log_event_at(l.at, l.level, l.message, l.fields);
  }
}

void AgentState::record_round_trip(TimePoint sent, TimePoint received) {
  std::lock_guard<std::mutex> lock(mu_);
  last_latency_ms_ = ms_between(sent, received);
  metrics_.round_trip(std::chrono::duration<double>(received - sent).count());
}

void AgentState::record_error(const std::string& kind) {
  std::lock_guard<std::mutex> lock(mu_);
  metrics_.error(kind);
}

void AgentState::log(LogLevel level, const std::string& message, const LogFields& fields) {
  log_event(level, message, fields);
}

bool AgentState::request_stop() {
  bool was_master = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const TimePoint now = Clock::now();
    if (!stopping_) {
      was_master = election_.is_master(now);
      systemd_status_.clear();  // say "stopping"
    }
    stopping_ = true;
    apply(election_.resign(now), now);
    pending_.push_back(Effects{{}, {}, std::string("STOPPING=1\nSTATUS=stopping")});
  }
  perform();
  return was_master;
}

bool AgentState::stopping() {
  std::lock_guard<std::mutex> lock(mu_);
  return stopping_;
}

void AgentState::deadline_loop() {
  const std::optional<milliseconds> ping_every = systemd_.watchdog_interval();
  TimePoint next_ping = Clock::now();
  for (;;) {
    TimePoint until = TimePoint::max();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (timer_done_) return;
      // Consumes the wakes of every change up to now (this thread's own too): the
      // deadline read below is as of now, and a later change wakes the wait again.
      std::uint64_t wakes;
      [[maybe_unused]] ssize_t n = ::read(wake_fd_, &wakes, sizeof wakes);
      if (election_.holding()) until = election_.deadline();
      if (ping_every) until = std::min(until, next_ping);
    }
    wait_timer(until);
    bool ping = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (timer_done_) return;
      const TimePoint now = Clock::now();
      apply(election_.tick(now), now);
      if (ping_every && now >= next_ping) {
        ping = true;
        next_ping = now + *ping_every;
      }
    }
    if (ping) systemd_.notify("WATCHDOG=1");
    perform();
  }
}

void AgentState::stop_timer() {
  std::lock_guard<std::mutex> lock(mu_);
  timer_done_ = true;
  wake_timer();
}

void AgentState::wake_timer() {
  const std::uint64_t one = 1;
  // Never blocks (EFD_NONBLOCK); fails only when the counter is full, and then the
  // timer is awake anyway.
  [[maybe_unused]] ssize_t n = ::write(wake_fd_, &one, sizeof one);
}

void AgentState::wait_timer(TimePoint until) {
  // Absolute on CLOCK_BOOTTIME: the kernel fires it at `until` even when a suspend
  // came in between, or at once on resuming when the suspend went past it.
  itimerspec at{};
  if (until != TimePoint::max()) {
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(until.time_since_epoch()).count();
    at.it_value.tv_sec = static_cast<time_t>(ns / 1000000000);
    at.it_value.tv_nsec = static_cast<long>(ns % 1000000000);
    if (at.it_value.tv_sec <= 0 && at.it_value.tv_nsec <= 0) at.it_value.tv_nsec = 1;  // zero would disarm
  }
  // Cannot fail with a valid descriptor and value; disarmed (zero) when there is no limit.
  ::timerfd_settime(timer_fd_, TFD_TIMER_ABSTIME, &at, nullptr);
  pollfd fds[2] = {{timer_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
  while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
  }
  std::uint64_t expirations;
  [[maybe_unused]] ssize_t n = ::read(timer_fd_, &expirations, sizeof expirations);
}

std::string AgentState::role(TimePoint now) const {
  if (stopping_) return "stopping";
  if (election_.is_master(now)) return "master";
  if (election_.handing_over()) return "handing-over";
  if (election_.is_connected_standby(now)) return "standby";
  if (election_.healthy(now) && !election_.registered()) return "registering";
  return "disconnected";
}

RoleView AgentState::view() {
  std::lock_guard<std::mutex> lock(mu_);
  const TimePoint now = Clock::now();
  RoleView v;
  v.cluster = settings_.cluster;
  v.node = settings_.node;
  v.address = settings_.address;
  v.role = role(now);
  v.master = v.role == "master";
  v.connected_standby = v.role == "standby";
  v.healthy = election_.healthy(now);
  v.epoch = election_.epoch();
  v.may_acquire = !stopping_ && election_.may_acquire(now);
  const HeartbeatAnswer& a = election_.last_answer();
  if (v.master) {
    v.master_node = settings_.node;
    v.master_address = settings_.address;
    v.lease_left_ms = ms_between(now, election_.deadline());
  } else if (election_.last_success()) {
    v.master_node = a.holder;
    v.master_address = a.holder_address;
    v.lease_left_ms = std::max<long long>(0, a.lease_left_ms - ms_between(*election_.last_success(), now));
  }
  if (election_.last_success()) {
    v.last_round_trip_ago_ms = ms_between(*election_.last_success(), now);
    v.last_round_trip_latency_ms = last_latency_ms_;
  }
  return v;
}

std::string AgentState::metrics() {
  std::lock_guard<std::mutex> lock(mu_);
  const TimePoint now = Clock::now();
  MetricsView m;
  m.role = role(now);
  if (m.role == "handing-over") m.role = "stopping";  // not master, not yet a standby
  m.epoch = election_.epoch();
  m.healthy = election_.healthy(now);
  if (m.role == "master") {
    m.lease_left_seconds = std::chrono::duration<double>(election_.deadline() - now).count();
  } else if (election_.last_success()) {
    const double left = static_cast<double>(election_.last_answer().lease_left_ms -
                                            ms_between(*election_.last_success(), now));
    m.lease_left_seconds = std::max(0.0, left / 1000.0);
  }
  return metrics_.render(m);
}

}  // namespace lease_agent
