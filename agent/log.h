// Logging: one line per event on stderr, as text or JSON. Thread-safe.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace lease_agent {

enum class LogLevel { info, warning, error };

// Extra key=value fields of one event, in order.
using LogFields = std::vector<std::pair<std::string, std::string>>;

// Selects the format for every later line: "text" (the default) or "json".
void log_set_format(const std::string& format);
// Names this agent (cluster/node) in every later line.
void log_set_origin(const std::string& cluster, const std::string& node);

// Writes one line: UTC wall time, level, message, fields. Never throws.
void log_event(LogLevel level, const std::string& message, const LogFields& fields = {});

inline void log_info(const std::string& m, const LogFields& f = {}) { log_event(LogLevel::info, m, f); }
inline void log_warning(const std::string& m, const LogFields& f = {}) { log_event(LogLevel::warning, m, f); }
inline void log_error(const std::string& m, const LogFields& f = {}) { log_event(LogLevel::error, m, f); }

}  // namespace lease_agent
