// Settings: one declarative table, read from the XML file, flags and defaults.
//
// Every setting has one name, usable as <property name="NAME"> in the config
// file and as the flag --NAME. Precedence: flag > file > default.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "dsn.h"

namespace CLI {
class App;
}

namespace lease_agent {

using Millis = std::chrono::milliseconds;

// The effective, validated settings of one agent.
struct Settings {
  bool active = true;
  std::string cluster = "default";
  std::string node;            // defaults to the host name
  std::string address;         // may be empty
  std::string dsn;             // may be empty: libpq's environment
  Millis ttl{10000};
  Millis renew{2000};
  std::string http = "127.0.0.1:8700";  // "off" disables
  std::string on_promote;      // empty: none
  std::string on_demote;       // empty: none
  Millis hook_timeout{30000};
  Millis handover_delay{0};    // 503 before the release of a clean stop or a switchover
  std::string log_format = "text";  // "text" or "json"

  bool http_enabled() const { return http != "off"; }
  std::string http_host() const;  // REQUIRES: http_enabled()
  int http_port() const;          // REQUIRES: http_enabled()
};

// A bad setting: what() is one line that names the setting and where it came
// from ("agent.xml:12: ttl: ..." or "--ttl: ...").
class SettingsError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Parses "500ms", "2s", "1m". Throws std::invalid_argument with a short reason
// ("needs a unit: ms, s or m") on anything else.
Millis parse_duration(const std::string& text);

// Formats a duration the way parse_duration reads it back ("500ms", "2s", "1m").
std::string format_duration(Millis d);

// The raw values given on the command line, by setting name.
// Filled by the flags that add_setting_flags() registers.
struct FlagValues {
  std::map<std::string, std::string> values;  // only flags actually given
  std::string config_file;                    // -c
  bool config_given = false;                  // -c was given (an empty path is an error)
  // The file's contents, read once by whichever of requested_log_format() and
  // load_settings() comes first (a pipe or /dev/stdin can be read only once), or why it
  // could not be read.
  mutable std::optional<std::string> config_contents;
  mutable std::string config_error;
};

// Empty when `value` is a good cluster or node name (not empty, no control characters,
// valid UTF-8, at most 63 bytes), else why not.
std::string member_name_problem(const std::string& value);

// Registers --NAME for every setting, plus -c FILE and -b ADDRESS, on a
// (sub)command. After CLI11 parsing, `out` holds the flags that were given.
void add_setting_flags(CLI::App& app, FlagValues& out);

// Reads the config file (if any), applies flags over it, fills defaults and
// validates. Throws SettingsError (one line, names file:line or flag).
Settings load_settings(const FlagValues& flags);

// The log format the flags or the config file ask for, even when other settings are
// bad, so that the error that says so is written in it: "json" or "text". Never throws.
std::string requested_log_format(const FlagValues& flags);

// Same, from a file path alone (for check-config and tests).
Settings load_settings_file(const std::string& path);

// Every setting with its effective value, in table order, the DSN masked:
// pairs of (name, value) for check-config and /status.
std::vector<std::pair<std::string, std::string>> describe(const Settings& s);

}  // namespace lease_agent
