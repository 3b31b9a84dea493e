// Logging: one line per event on stderr, as text or JSON.
#include "log.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <nlohmann/json.hpp>

namespace lease_agent {
namespace {

std::mutex log_mutex;
bool json_format = false;
std::string origin_cluster;
std::string origin_node;

std::string utc_now() {
  const auto now = std::chrono::system_clock::now();
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

void write_line(const std::string& line) {
  // One write per line, so that lines of concurrent threads never interleave.
  const char* p = line.data();
  size_t left = line.size();
  while (left > 0) {
    const ssize_t n = ::write(STDERR_FILENO, p, left);
    if (n <= 0) break;
    p += n;
    left -= static_cast<size_t>(n);
  }
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

std::string format_locked(LogLevel level, const std::string& message, const LogFields& fields) {
  std::string line;
  if (json_format) {
    nlohmann::ordered_json j;
    j["ts"] = utc_now();
    j["level"] = level_name(level);
    if (!origin_cluster.empty()) j["cluster"] = origin_cluster;
    if (!origin_node.empty()) j["node"] = origin_node;
    j["msg"] = message;
    for (const auto& [k, v] : fields) j[k] = json_value(v);
    line = j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } else {
    line = utc_now() + " " + level_name(level) + " ";
    if (!origin_node.empty()) line += "[" + origin_cluster + "/" + origin_node + "] ";
    for (char c : message) line += (c == '\n' ? ' ' : c);
    for (const auto& [k, v] : fields) line += " " + k + "=" + text_value(v.plain());
  }
  line += '\n';
  return line;
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
  try {
    std::lock_guard<std::mutex> lock(log_mutex);
    write_line(format_locked(level, message, fields));
  } catch (...) {
    // Logging never throws.
  }
}

std::string log_format_line(LogLevel level, const std::string& message, const LogFields& fields) {
  try {
    std::lock_guard<std::mutex> lock(log_mutex);
    return format_locked(level, message, fields);
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
      write_line("lease-agent: " + message + "\n");
    } catch (...) {
    }
  }
}

}  // namespace lease_agent
