// Settings: the table of settings and how the XML file, flags and defaults fill it.

#include "settings.h"

#include "dsn.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <pugixml.hpp>
#include <sstream>
#include <variant>

namespace lease_agent {
namespace {

// ---------------------------------------------------------------------------
// The table.

enum class Kind { boolean, text, duration, delay, http };  // delay: a duration that may be 0

// Where a setting lives in Settings; its alternative matches the Kind
// (boolean: bool, duration and delay: Millis, text and http: std::string).
using SettingField =
    std::variant<bool Settings::*, std::string Settings::*, Millis Settings::*>;

// One setting: everything flags, the file, describe() and validation need.
struct SettingSpec {
  const char* name;
  Kind kind;
  const char* default_text;  // nullptr: computed (node: the host name)
  const char* help;          // one line, for --help
  SettingField field;
  // A rule beyond the kind's syntax: throws std::invalid_argument with a
  // short reason. nullptr: none.
  void (*check)(const std::string& value);
};

void check_member_name(const std::string& value);
void check_address(const std::string& value);
void check_log_format(const std::string& value);
void check_dsn(const std::string& value);

const SettingSpec kSettings[] = {
    {"active", Kind::boolean, "true",
     "true: a cluster node; false: standalone, no database, always master",
     &Settings::active, nullptr},
    {"cluster", Kind::text, "default",
     "cluster name; many clusters can share one database", &Settings::cluster,
     check_member_name},
    {"node", Kind::text, nullptr,
     "this node's unique name within the cluster (default: the host name)",
     &Settings::node, check_member_name},
    {"address", Kind::text, "",
     "address of the server beside the agent, shown to others and in status",
     &Settings::address, check_address},
    {"dsn", Kind::text, "",
     "libpq connection string or URI; empty: libpq's environment and ~/.pgpass",
     &Settings::dsn, check_dsn},
    {"ttl", Kind::duration, "10s", "lease time to live", &Settings::ttl, nullptr},
    {"renew", Kind::duration, "2s",
     "heartbeat and renew interval; at most half of ttl", &Settings::renew,
     nullptr},
    {"http", Kind::http, "127.0.0.1:8700",
     "HOST:PORT of the role endpoints; off disables them", &Settings::http,
     nullptr},
    {"on-promote", Kind::text, "",
     "command run when this node becomes master", &Settings::on_promote,
     nullptr},
    {"on-demote", Kind::text, "",
     "command run when this node stops being master", &Settings::on_demote,
     nullptr},
    {"hook-timeout", Kind::duration, "30s",
     "longest a hook may run before it is killed", &Settings::hook_timeout,
     nullptr},
    {"handover-delay", Kind::delay, "0ms",
     "on a clean stop or a switchover, how long the master answers 503 (after on-demote) "
     "before it releases the lease; above the load balancer's check interval",
     &Settings::handover_delay, nullptr},
    {"log-format", Kind::text, "text", "log line format: text or json",
     &Settings::log_format, check_log_format},
};

const SettingSpec* find_setting(const std::string& name) {
  for (const SettingSpec& spec : kSettings) {
    if (name == spec.name) return &spec;
  }
  return nullptr;
}

// ---------------------------------------------------------------------------
// Value rules.

constexpr Millis kShortestTtl{100};
constexpr Millis kLongestDuration{24 * 60 * 60 * 1000};  // 1440m
constexpr std::size_t kLongestMemberName = 63;
constexpr std::size_t kLongestAddress = 255;

bool has_control_character(const std::string& value) {
  return std::any_of(value.begin(), value.end(), [](char c) {
    return std::iscntrl(static_cast<unsigned char>(c)) != 0;
  });
}

// Well-formed UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): names and
// addresses go into the database's text columns, JSON logs and HTTP answers, where other
// bytes are refused (by PostgreSQL, for ever: the agent would retry without end).
bool is_utf8(const std::string& value) {
  const auto* p = reinterpret_cast<const unsigned char*>(value.data());
  const auto* end = p + value.size();
  while (p < end) {
    const unsigned char c = *p;
    int more = 0;
    unsigned int code = 0, least = 0;
    if (c < 0x80) {
      ++p;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      more = 1, code = c & 0x1F, least = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
      more = 2, code = c & 0x0F, least = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
      more = 3, code = c & 0x07, least = 0x10000;
    } else {
      return false;
    }
    if (end - p <= more) return false;
    for (int i = 1; i <= more; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
      code = (code << 6) | (p[i] & 0x3F);
    }
    if (code < least || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF)) return false;
    p += more + 1;
  }
  return true;
}

// U+0080..U+009F (C1 controls) in UTF-8: 0xC2 followed by 0x80..0x9F.
bool has_c1_control(const std::string& value) {
  for (std::size_t i = 0; i + 1 < value.size(); ++i)
    if (static_cast<unsigned char>(value[i]) == 0xC2 && static_cast<unsigned char>(value[i + 1]) >= 0x80 &&
        static_cast<unsigned char>(value[i + 1]) <= 0x9F)
      return true;
  return false;
}

// Names and addresses: valid UTF-8 without control characters (C0, DEL or C1), else why not.
std::string text_problem(const std::string& value) {
  if (has_control_character(value)) return "must not contain control characters";
  if (!is_utf8(value)) return "is not valid UTF-8";
  if (has_c1_control(value)) return "must not contain control characters";
  return "";
}

// cluster and node: they are keys in the database and labels in logs.
void check_member_name(const std::string& value) {
  const std::string problem = member_name_problem(value);
  if (!problem.empty()) throw std::invalid_argument(problem);
}

void check_address(const std::string& value) {
  if (value.size() > kLongestAddress) {
    throw std::invalid_argument("longer than " + std::to_string(kLongestAddress) + " bytes");
  }
  const std::string problem = text_problem(value);
  if (!problem.empty()) throw std::invalid_argument(problem);
}

void check_dsn(const std::string& value) {
  const std::string problem = dsn_problem(value);
  if (!problem.empty()) throw std::invalid_argument(problem);
}

void check_log_format(const std::string& value) {
  if (value != "text" && value != "json") {
    throw std::invalid_argument("'" + value + "' is not text or json");
  }
}

bool parse_bool(const std::string& text) {
  if (text == "true") return true;
  if (text == "false") return false;
  throw std::invalid_argument("'" + text + "' is not true or false");
}

bool is_host_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '.' ||
         c == '-' || c == '_';
}

struct HostPort {
  std::string host;  // without the brackets of an IPv6 literal
  int port = 0;
};

// Parses HOST:PORT (IPv4, host name, or [IPv6]). Throws
// std::invalid_argument with a short reason.
HostPort parse_host_port(const std::string& text) {
  const std::string reason_prefix = "bad address '" + text + "': ";
  std::string host;
  std::string port_text;
  if (!text.empty() && text[0] == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string::npos || close + 1 >= text.size() ||
        text[close + 1] != ':') {
      throw std::invalid_argument(reason_prefix + "needs [IPv6]:PORT");
    }
    host = text.substr(1, close - 1);
    port_text = text.substr(close + 2);
    const bool ipv6_chars = !host.empty() &&
        std::all_of(host.begin(), host.end(), [](char c) {
          return std::isxdigit(static_cast<unsigned char>(c)) != 0 ||
                 c == ':' || c == '.';
        });
    if (!ipv6_chars || host.find(':') == std::string::npos) {
      throw std::invalid_argument(reason_prefix + "bad IPv6 address");
    }
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string::npos) {
      throw std::invalid_argument(reason_prefix + "needs HOST:PORT or off");
    }
    host = text.substr(0, colon);
    port_text = text.substr(colon + 1);
    if (host.empty()) {
      throw std::invalid_argument(reason_prefix +
                                  "needs a host, e.g. 0.0.0.0 for all");
    }
    if (!std::all_of(host.begin(), host.end(), is_host_name_char)) {
      throw std::invalid_argument(reason_prefix + "bad host '" + host + "'");
    }
  }
  const bool digits = !port_text.empty() && port_text.size() <= 5 &&
      std::all_of(port_text.begin(), port_text.end(), [](char c) {
        return std::isdigit(static_cast<unsigned char>(c)) != 0;
      });
  const int port = digits ? std::stoi(port_text) : 0;
  if (port < 1 || port > 65535) {
    throw std::invalid_argument(reason_prefix + "port must be 1..65535");
  }
  return HostPort{host, port};
}

void check_http(const std::string& text) {
  if (text != "off") parse_host_port(text);
}

// ---------------------------------------------------------------------------
// Raw values and where they came from.

// One value as given, before validation.
struct RawValue {
  std::string text;
  // Names the origin for error messages: "agent.xml:12: ttl", "--ttl",
  // "ttl (default)".
  std::string where;
  bool is_default = true;
};

std::string host_name() {
  char buffer[HOST_NAME_MAX + 1] = {};
  if (gethostname(buffer, sizeof buffer - 1) != 0) return "";
  return buffer;
}

std::string trim(const std::string& text) {
  const char* space = " \t\r\n";
  const std::size_t first = text.find_first_not_of(space);
  if (first == std::string::npos) return "";
  const std::size_t last = text.find_last_not_of(space);
  return text.substr(first, last - first + 1);
}

// The 1-based line of a byte offset into `contents`.
int line_of(const std::string& contents, std::ptrdiff_t offset) {
  if (offset < 0) return 1;
  const auto end = contents.begin() +
      static_cast<std::ptrdiff_t>(
          std::min<std::size_t>(static_cast<std::size_t>(offset), contents.size()));
  return 1 + static_cast<int>(std::count(contents.begin(), end, '\n'));
}

// Every <property> element of `document`, wherever it stands, in document
// order.
std::vector<pugi::xml_node> property_elements(const pugi::xml_document& document) {
  std::vector<pugi::xml_node> found;
  std::vector<pugi::xml_node> pending{document.document_element()};
  while (!pending.empty()) {
    const pugi::xml_node element = pending.back();
    pending.pop_back();
    if (std::strcmp(element.name(), "property") == 0) found.push_back(element);
    // Children in reverse, so the first child is visited next.
    for (pugi::xml_node child = element.last_child(); child;
         child = child.previous_sibling()) {
      if (child.type() == pugi::node_element) pending.push_back(child);
    }
  }
  return found;
}

constexpr std::size_t kLargestConfigFile = 1 << 20;

// The contents of the config file at `path`, read once (a pipe or /dev/stdin can be
// read only once), at most kLargestConfigFile bytes. Throws SettingsError naming path.
std::string read_config_text(const std::string& path) {
  if (path.empty()) throw SettingsError("--config: must not be empty (the path of an XML config file)");
  std::error_code ignored;
  if (std::filesystem::is_directory(path, ignored)) {
    throw SettingsError(path + ": cannot read: " + std::strerror(EISDIR));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw SettingsError(path + ": cannot read: " + std::strerror(errno));
  }
  std::string contents;
  char chunk[65536];
  while (in && contents.size() <= kLargestConfigFile) {
    in.read(chunk, sizeof chunk);
    contents.append(chunk, static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad()) {
    throw SettingsError(path + ": cannot read: " + std::strerror(errno));
  }
  if (contents.size() > kLargestConfigFile) {
    throw SettingsError(path + ": larger than " + std::to_string(kLargestConfigFile >> 20) +
                        " MiB: not a config file");
  }
  return contents;
}

// The config file's contents, read at the first call for these flags and kept (with the
// error, if reading failed) for the next.
const std::string& config_text(const FlagValues& flags) {
  if (!flags.config_contents) {
    try {
      flags.config_contents = read_config_text(flags.config_file);
    } catch (const SettingsError& e) {
      flags.config_error = e.what();
      flags.config_contents.emplace();
    }
  }
  if (!flags.config_error.empty()) throw SettingsError(flags.config_error);
  return *flags.config_contents;
}

// Reads every <property name="NAME"> of the XML text `contents` of the file `path` into
// `values`. Throws SettingsError naming path:line on malformed XML, more than one root
// element, an unknown or missing name, or a setting given twice.
void read_file_values(const std::string& path, const std::string& contents,
                      std::map<std::string, RawValue>& values) {
  pugi::xml_document document;
  const pugi::xml_parse_result parsed = document.load_buffer(
      contents.data(), contents.size(), pugi::parse_default, pugi::encoding_utf8);
  if (!parsed) {
    throw SettingsError(path + ":" +
                        std::to_string(line_of(contents, parsed.offset)) +
                        ": malformed XML: " + parsed.description());
  }
  // pugixml reads a fragment of several top-level elements; a config file has one root,
  // and properties after it must not be silently ignored.
  int roots = 0;
  for (pugi::xml_node top = document.first_child(); top; top = top.next_sibling()) {
    if (top.type() != pugi::node_element) continue;
    if (++roots > 1) {
      throw SettingsError(path + ":" + std::to_string(line_of(contents, top.offset_debug())) +
                          ": malformed XML: a second root element <" + top.name() +
                          "> (a config file has one, e.g. <lease-agent>)");
    }
  }

  std::map<std::string, int> line_by_name;
  for (const pugi::xml_node& property : property_elements(document)) {
    const int line = line_of(contents, property.offset_debug());
    const std::string where_line = path + ":" + std::to_string(line);
    const pugi::xml_attribute name_attribute = property.attribute("name");
    if (!name_attribute) {
      throw SettingsError(where_line + ": <property> without a name attribute");
    }
    const std::string name = name_attribute.value();
    if (find_setting(name) == nullptr) {
      throw SettingsError(where_line + ": unknown setting '" + name + "'");
    }
    const auto [previous, inserted] = line_by_name.emplace(name, line);
    if (!inserted) {
      throw SettingsError(where_line + ": setting '" + name +
                          "' given twice (first at line " +
                          std::to_string(previous->second) + ")");
    }
    const pugi::xml_node value_child = property.child("value");
    const std::string text =
        value_child ? value_child.text().get() : property.text().get();
    values[name] = RawValue{trim(text), where_line + ": " + name, false};
  }
}

// The defaults of every setting, by name.
std::map<std::string, RawValue> default_values() {
  std::map<std::string, RawValue> values;
  for (const SettingSpec& spec : kSettings) {
    if (spec.default_text != nullptr) {
      values[spec.name] =
          RawValue{spec.default_text, std::string(spec.name) + " (default)", true};
    } else {
      values[spec.name] =
          RawValue{host_name(), std::string(spec.name) + " (host name)", true};
    }
  }
  return values;
}

// "0", or 0 in any unit and with any count of zeros ("0ms", "00s", "0m").
bool is_zero_duration(const std::string& text) {
  if (text.empty()) return false;
  const std::size_t digits = text.find_first_not_of('0');
  if (digits == 0) return false;
  const std::string unit = digits == std::string::npos ? "" : text.substr(digits);
  return unit.empty() || unit == "ms" || unit == "s" || unit == "m";
}

// Validates `raw` against `spec` and stores it into `settings`. Throws
// SettingsError "<where>: <reason>".
void apply_setting(const SettingSpec& spec, const RawValue& raw,
                   Settings& settings) {
  try {
    switch (spec.kind) {
      case Kind::boolean:
        settings.*std::get<bool Settings::*>(spec.field) = parse_bool(raw.text);
        break;
      case Kind::duration:
        settings.*std::get<Millis Settings::*>(spec.field) =
            parse_duration(raw.text);
        break;
      case Kind::delay:
        settings.*std::get<Millis Settings::*>(spec.field) =
            is_zero_duration(raw.text) ? Millis(0) : parse_duration(raw.text);
        break;
      case Kind::http:
        check_http(raw.text);
        settings.*std::get<std::string Settings::*>(spec.field) = raw.text;
        break;
      case Kind::text:
        settings.*std::get<std::string Settings::*>(spec.field) = raw.text;
        break;
    }
    if (spec.check != nullptr) spec.check(raw.text);
  } catch (const std::invalid_argument& e) {
    throw SettingsError(raw.where + ": " + e.what());
  }
}

// Rules that involve more than one setting, or a bound on one duration.
void check_timing(const Settings& settings,
                  const std::map<std::string, RawValue>& values) {
  const RawValue& ttl = values.at("ttl");
  const RawValue& renew = values.at("renew");
  if (settings.ttl < kShortestTtl) {
    throw SettingsError(ttl.where + ": ttl " + format_duration(settings.ttl) +
                        " is too short: at least " +
                        format_duration(kShortestTtl));
  }
  if (settings.renew * 2 > settings.ttl) {
    // Name the value the operator gave; renew's when both were given.
    const std::string& where = !renew.is_default ? renew.where : ttl.where;
    throw SettingsError(where + ": renew " + format_duration(settings.renew) +
                        " must be at most half of ttl " +
                        format_duration(settings.ttl));
  }
}

// handover-delay below ttl: a stopping master does not renew, so a longer delay would
// let its lease run out first and cost the cluster a crash's takeover time.
void check_handover_delay(const Settings& settings, const std::map<std::string, RawValue>& values) {
  if (settings.handover_delay < settings.ttl) return;
  const RawValue& delay = values.at("handover-delay");
  throw SettingsError(delay.where + ": handover-delay " + format_duration(settings.handover_delay) +
                      " must be below ttl " + format_duration(settings.ttl) +
                      " (the lease would run out before the release)");
}

Settings settings_from(const std::map<std::string, RawValue>& values) {
  Settings settings;
  for (const SettingSpec& spec : kSettings) {
    apply_setting(spec, values.at(spec.name), settings);
  }
  check_timing(settings, values);
  check_handover_delay(settings, values);
  return settings;
}

std::string type_name_of(Kind kind) {
  switch (kind) {
    case Kind::boolean: return "true|false";
    case Kind::duration:
    case Kind::delay: return "DURATION";
    case Kind::http: return "HOST:PORT|off";
    case Kind::text: return "TEXT";
  }
  return "TEXT";
}

}  // namespace

// ---------------------------------------------------------------------------
// Public functions.

std::string member_name_problem(const std::string& value) {
  if (value.empty()) return "must not be empty";
  const std::string problem = text_problem(value);
  if (!problem.empty()) return problem;
  if (value.size() > kLongestMemberName)
    return "'" + value + "' is longer than " + std::to_string(kLongestMemberName) + " bytes";
  return "";
}

Millis parse_duration(const std::string& text) {
  std::size_t digits = 0;
  while (digits < text.size() &&
         std::isdigit(static_cast<unsigned char>(text[digits])) != 0) {
    ++digits;
  }
  const std::string unit = text.substr(digits);
  if (digits == 0) {
    throw std::invalid_argument("bad duration '" + text +
                                "': needs a positive whole number and a unit: ms, s or m");
  }
  if (unit.empty()) {
    throw std::invalid_argument("bad duration '" + text +
                                "': needs a unit: ms, s or m");
  }
  long long per_unit = 0;
  if (unit == "ms") {
    per_unit = 1;
  } else if (unit == "s") {
    per_unit = 1000;
  } else if (unit == "m") {
    per_unit = 60 * 1000;
  } else {
    throw std::invalid_argument("bad duration '" + text + "': unknown unit '" +
                                unit + "': use ms, s or m");
  }
  const std::string number = text.substr(0, digits);
  const std::size_t significant = number.find_first_not_of('0');
  if (significant == std::string::npos) {
    throw std::invalid_argument("bad duration '" + text + "': must be positive");
  }
  // More than 9 significant digits is beyond the limit below anyway.
  const long long count = number.size() - significant > 9
      ? LLONG_MAX
      : std::stoll(number.substr(significant));
  if (count > kLongestDuration.count() / per_unit) {
    throw std::invalid_argument("bad duration '" + text + "': at most " +
                                format_duration(kLongestDuration));
  }
  return Millis(count * per_unit);
}

std::string format_duration(Millis d) {
  const long long ms = d.count();
  if (ms != 0 && ms % 60000 == 0) return std::to_string(ms / 60000) + "m";
  if (ms != 0 && ms % 1000 == 0) return std::to_string(ms / 1000) + "s";
  return std::to_string(ms) + "ms";
}

std::string Settings::http_host() const { return parse_host_port(http).host; }

int Settings::http_port() const { return parse_host_port(http).port; }

void add_setting_flags(CLI::App& app, FlagValues& out) {
  app.add_option_function<std::string>(
         "-c,--config",
         [&out](const std::string& path) {
           out.config_file = path;
           out.config_given = true;
         },
         "XML config file of <property name=\"NAME\"> elements")
      ->type_name("FILE")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  for (const SettingSpec& spec : kSettings) {
    const std::string name = spec.name;
    const std::string flag =
        name == "address" ? "-b,--" + name : "--" + name;
    std::string help = spec.help;
    if (spec.default_text != nullptr) {
      help += std::string(" (default: ") +
              (*spec.default_text != '\0' ? spec.default_text : "empty") + ")";
    }
    app.add_option_function<std::string>(
           flag,
           [&out, name](const std::string& value) { out.values[name] = value; },
           help)
        ->type_name(type_name_of(spec.kind))
        ->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  }
}

Settings load_settings(const FlagValues& flags) {
  std::map<std::string, RawValue> values = default_values();
  if (flags.config_given) read_file_values(flags.config_file, config_text(flags), values);
  for (const auto& [name, text] : flags.values) {
    if (find_setting(name) == nullptr) {
      throw SettingsError("--" + name + ": unknown setting");
    }
    // (-b is the one short form; the error names both, as the flag's value does not say which.)
    values[name] = RawValue{text, name == "address" ? "-b/--address" : "--" + name, false};
  }
  return settings_from(values);
}

std::string requested_log_format(const FlagValues& flags) {
  const auto flag = flags.values.find("log-format");
  if (flag != flags.values.end()) return flag->second == "json" ? "json" : "text";
  if (!flags.config_given) return "text";
  try {
    std::map<std::string, RawValue> values;
    read_file_values(flags.config_file, config_text(flags), values);
    const auto found = values.find("log-format");
    if (found != values.end() && found->second.text == "json") return "json";
  } catch (const std::exception&) {
    // An unreadable or bad file: the error itself is reported in text.
  }
  return "text";
}

Settings load_settings_file(const std::string& path) {
  if (path.empty()) throw SettingsError("no config file given");
  FlagValues flags;
  flags.config_file = path;
  flags.config_given = true;
  return load_settings(flags);
}

std::vector<std::pair<std::string, std::string>> describe(const Settings& s) {
  std::vector<std::pair<std::string, std::string>> described;
  for (const SettingSpec& spec : kSettings) {
    std::string value;
    switch (spec.kind) {
      case Kind::boolean:
        value = s.*std::get<bool Settings::*>(spec.field) ? "true" : "false";
        break;
      case Kind::duration:
      case Kind::delay:
        value = format_duration(s.*std::get<Millis Settings::*>(spec.field));
        break;
      case Kind::http:
      case Kind::text:
        value = s.*std::get<std::string Settings::*>(spec.field);
        break;
    }
    if (std::string(spec.name) == "dsn") value = mask_dsn(value);
    described.emplace_back(spec.name, value);
  }
  return described;
}

}  // namespace lease_agent
