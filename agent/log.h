// Logging: one line per event on stderr, as text or JSON. Thread-safe.
//
// Never blocks the caller: a line is formatted and appended to a bounded queue in
// memory, which one writer thread writes to stderr. stderr can stall (journald's
// backpressure, a pipe nobody reads), and a thread that waited for it could hold up the
// deadline (agent_state.h). When the queue is full, lines are dropped and counted; the
// writer says how many in a line of its own, where they were dropped. At exit,
// log_flush() waits a bounded time for what is queued.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace lease_agent {

enum class LogLevel { info, warning, error };

// The value of one field: a string, an integer, a real or a boolean. JSON lines keep
// the type (an epoch is a number); text lines print it plainly.
class LogValue {
 public:
  enum class Type { string, integer, real, boolean };

  LogValue(std::string v) : type_(Type::string), text_(std::move(v)) {}
  LogValue(const char* v) : type_(Type::string), text_(v ? v : "") {}
  LogValue(bool v) : type_(Type::boolean), integer_(v ? 1 : 0) {}
  LogValue(double v) : type_(Type::real), real_(v) {}
  template <typename T,
            typename std::enable_if<std::is_integral<T>::value && !std::is_same<T, bool>::value, int>::type = 0>
  LogValue(T v) : type_(Type::integer), integer_(static_cast<std::int64_t>(v)) {}

  Type type() const { return type_; }
  const std::string& text() const { return text_; }
  std::int64_t integer() const { return integer_; }
  double real() const { return real_; }
  bool boolean() const { return integer_ != 0; }
  // The value as a text line prints it (before quoting).
  std::string plain() const;

 private:
  Type type_;
  std::string text_;
  std::int64_t integer_ = 0;
  double real_ = 0;
};

// Extra key=value fields of one event, in order.
using LogFields = std::vector<std::pair<std::string, LogValue>>;

// Selects the format for every later line: "text" (the default) or "json".
void log_set_format(const std::string& format);
// Names this agent (cluster/node) in every later line.
void log_set_origin(const std::string& cluster, const std::string& node);

// Writes one line: UTC wall time, level, message, fields. Never throws.
void log_event(LogLevel level, const std::string& message, const LogFields& fields = {});
// The same, stamped with `at` (the moment the event happened) instead of now.
void log_event_at(std::chrono::system_clock::time_point at, LogLevel level, const std::string& message,
                  const LogFields& fields = {});

// Waits until every line logged so far has been written to stderr, at most `limit`.
// Returns whether all were written (false: stderr is stalled; the rest is lost at exit).
bool log_flush(std::chrono::milliseconds limit = std::chrono::milliseconds(1000));

// The bound of the queue: lines beyond either are dropped (and counted).
constexpr std::size_t kLogQueueLines = 1000;
constexpr std::size_t kLogQueueBytes = 1 << 20;

// Formats one line without writing it (for tests). Never throws.
std::string log_format_line(LogLevel level, const std::string& message, const LogFields& fields = {});

inline void log_info(const std::string& m, const LogFields& f = {}) { log_event(LogLevel::info, m, f); }
inline void log_warning(const std::string& m, const LogFields& f = {}) { log_event(LogLevel::warning, m, f); }
inline void log_error(const std::string& m, const LogFields& f = {}) { log_event(LogLevel::error, m, f); }

// A command's fatal error before or outside the daemon: "lease-agent: MESSAGE" in the
// text format, one JSON error line (field "command") in the JSON format.
void log_command_error(const std::string& command, const std::string& message);

}  // namespace lease_agent
