// Logging: one line per event on stderr, as text or JSON, through a bounded queue and
// one writer thread (log.h).
#include "log.h"

#include <poll.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

namespace lease_agent {
namespace {

std::mutex log_mutex;  // the format, the origin; taken before Writer::mu
bool json_format = false;
std::string origin_cluster;
std::string origin_node;

std::string utc_at(std::chrono::system_clock::time_point now) {
  const std::time_t t = std::chrono::system_clock::to_time_t(now);
  const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count() % 1000;
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<int>(ms));
  return buf;
}

const char* level_name(LogLevel l) {
  switch (l) {
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "info";
}

// Text values with spaces or quotes are quoted so a line stays one line.
std::string text_value(const std::string& v) {
  bool plain = !v.empty();
  for (char c : v)
    if (c == ' ' || c == '"' || c == '=' || c == '\n' || static_cast<unsigned char>(c) < 0x20) plain = false;
  if (plain) return v;
  return nlohmann::json(v).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// Writes one line to stderr, waiting as long as stderr makes it wait (the writer
// thread only). A stderr someone made non-blocking is waited for, not skipped.
void write_line(const std::string& line) {
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd out{STDERR_FILENO, POLLOUT, 0};
      ::poll(&out, 1, -1);
      continue;
    }
    if (n <= 0) break;  // closed or broken: the line is lost, as it would be anyway
    p += n;
    left -= static_cast<size_t>(n);
  }
}

// The queue between the loggers and the writer thread. Allocated once and never freed:
// the writer may still be blocked in write() while the process exits, and must not
// find its mutex destroyed under it.
struct Writer {
  std::mutex mu;
  std::condition_variable ready;    // a line was queued
  std::condition_variable written;  // a line was written (log_flush)
  std::deque<std::string> lines;
  std::size_t bytes = 0;
  std::uint64_t dropped = 0;        // since the last notice
  std::uint64_t queued_total = 0;
  std::uint64_t written_total = 0;
  bool threaded = false;            // false: no thread could be started; write inline

  bool fits(std::size_t n_lines, std::size_t n_bytes) const {
    return lines.size() + n_lines <= kLogQueueLines && bytes + n_bytes <= kLogQueueBytes;
  }
  void push(std::string line) {  // REQUIRES: mu held
    bytes += line.size();
    lines.push_back(std::move(line));
    ++queued_total;
  }

  void run() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      ready.wait(lock, [this] { return !lines.empty(); });
      std::string line = std::move(lines.front());
      lines.pop_front();
      bytes -= line.size();
      lock.unlock();
      write_line(line);
      lock.lock();
      ++written_total;
      written.notify_all();
    }
  }
};

Writer& writer() {
  static Writer* const w = [] {
    auto* created = new Writer;
    try {
      std::thread([created] { created->run(); }).detach();
      created->threaded = true;
    } catch (...) {
      // No thread: lines are written by their callers, as before there was a queue.
    }
    return created;
  }();
  return *w;
}

nlohmann::ordered_json json_value(const LogValue& v) {
  switch (v.type()) {
    case LogValue::Type::string: return v.text();
    case LogValue::Type::integer: return v.integer();
    case LogValue::Type::real: return v.real();
    case LogValue::Type::boolean: return v.boolean();
  }
  return nullptr;
}

std::string format_locked(LogLevel level, const std::string& message, const LogFields& fields,
                          std::chrono::system_clock::time_point at) {
  std::string line;
  if (json_format) {
    nlohmann::ordered_json j;
    j["ts"] = utc_at(at);
    j["level"] = level_name(level);
    if (!origin_cluster.empty()) j["cluster"] = origin_cluster;
    if (!origin_node.empty()) j["node"] = origin_node;
    j["msg"] = message;
    for (const auto& [k, v] : fields) j[k] = json_value(v);
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = utc_at(at) + " " + level_name(level) + " ";
    if (!origin_node.empty()) line += "[" + origin_cluster + "/" + origin_node + "] ";
    for (char c : message) line += (c == '\n' ? ' ' : c);
    for (const auto& [k, v] : fields) line += " " + k + "=" + text_value(v.plain());
  }
  line += '\n';
  return line;
}

// The line that says how many were dropped. REQUIRES: log_mutex held.
std::string dropped_notice_locked(std::uint64_t n) {
  return format_locked(LogLevel::warning,
                       std::to_string(n) + " log lines dropped: stderr did not take them in time",
                       {{"event", "log-dropped"}, {"dropped", n}}, std::chrono::system_clock::now());
}

// Queues a formatted line, or counts it dropped; never blocks on stderr. A notice of
// earlier drops goes first, where they were dropped. REQUIRES: log_mutex held.
void enqueue_locked(std::string line) {
  Writer& w = writer();
  if (!w.threaded) {
    write_line(line);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(w.mu);
    if (w.dropped == 0 && w.fits(1, line.size())) {
      w.push(std::move(line));
    } else if (w.dropped > 0) {
      // The notice only with the line after it: one notice per gap.
      std::string notice = dropped_notice_locked(w.dropped);
      if (w.fits(2, notice.size() + line.size())) {
        w.push(std::move(notice));
        w.push(std::move(line));
        w.dropped = 0;
      } else {
        ++w.dropped;
      }
    } else {
      ++w.dropped;
    }
  }
  w.ready.notify_one();
}

}  // namespace

std::string LogValue::plain() const {
  switch (type_) {
    case Type::string: return text_;
    case Type::integer: return std::to_string(integer_);
    case Type::real: {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.1f", real_);
      return buf;
    }
    case Type::boolean: return integer_ ? "true" : "false";
  }
  return text_;
}

void log_set_format(const std::string& format) {
  std::lock_guard<std::mutex> lock(log_mutex);
  json_format = format == "json";
}

void log_set_origin(const std::string& cluster, const std::string& node) {
  std::lock_guard<std::mutex> lock(log_mutex);
  origin_cluster = cluster;
  origin_node = node;
}

void log_event(LogLevel level, const std::string& message, const LogFields& fields) {
  log_event_at(std::chrono::system_clock::now(), level, message, fields);
}

void log_event_at(std::chrono::system_clock::time_point at, LogLevel level, const std::string& message,
                  const LogFields& fields) {
  try {
    std::lock_guard<std::mutex> lock(log_mutex);
    enqueue_locked(format_locked(level, message, fields, at));
  } catch (...) {
    // Logging never throws.
  }
}

bool log_flush(std::chrono::milliseconds limit) {
  try {
    Writer& w = writer();
    std::uint64_t target = 0;
    {
      std::lock_guard<std::mutex> lock(log_mutex);
      std::lock_guard<std::mutex> queue_lock(w.mu);
      // The count of what was dropped is written even over the bound: it is the last
      // word on a queue that overflowed.
      if (w.dropped > 0 && w.threaded) {
        w.push(dropped_notice_locked(w.dropped));
        w.dropped = 0;
        w.ready.notify_one();
      }
      target = w.queued_total;
    }
    std::unique_lock<std::mutex> lock(w.mu);
    return w.written.wait_for(lock, limit, [&] { return w.written_total >= target; });
  } catch (...) {
    return false;
  }
}

std::string log_format_line(LogLevel level, const std::string& message, const LogFields& fields) {
  try {
    std::lock_guard<std::mutex> lock(log_mutex);
    return format_locked(level, message, fields, std::chrono::system_clock::now());
  } catch (...) {
    return {};
  }
}

void log_command_error(const std::string& command, const std::string& message) {
  bool json = false;
  {
    std::lock_guard<std::mutex> lock(log_mutex);
    json = json_format;
  }
  if (json) {
    log_event(LogLevel::error, message, {{"command", command}});
  } else {
    try {
      std::lock_guard<std::mutex> lock(log_mutex);
      enqueue_locked("lease-agent: " + message + "\n");
    } catch (...) {
    }
  }
}

}  // namespace lease_agent
