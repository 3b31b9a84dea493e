// The dsn: libpq's parser for checking, masking for display, the agent's connection options.
#include "dsn.h"

#include <netdb.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

#include <libpq-fe.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <map>
#include <stdexcept>
#include <vector>

namespace lease_agent {
namespace {

bool is_space(char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; }

bool starts_with_ignoring_case(const std::string& text, std::size_t at, const std::string& prefix) {
  if (text.size() - std::min(at, text.size()) < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(text[at + i])) != prefix[i]) return false;
  }
  return true;
}

bool equals_ignoring_case(const std::string& text, const std::string& lower) {
  return text.size() == lower.size() && starts_with_ignoring_case(text, 0, lower);
}

const char kMask[] = "********";

// A URI component with its %XX escapes decoded, as libpq decodes query keywords
// ("pass%77ord" is password).
std::string percent_decoded(const std::string& text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '%' && i + 2 < text.size() && std::isxdigit(static_cast<unsigned char>(text[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(text[i + 2]))) {
      out += static_cast<char>(std::stoi(text.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += text[i];
    }
  }
  return out;
}

// The keywords whose values are secrets: libpq's password and the passphrase of the
// client's SSL key (a URI's query keyword is compared decoded).
bool is_secret_keyword(const std::string& keyword) {
  const std::string k = percent_decoded(keyword);
  return equals_ignoring_case(k, "password") || equals_ignoring_case(k, "sslpassword");
}

// Masks a URI's user:password@ and ?password=... / ?sslpassword=... (prefix already checked).
std::string mask_dsn_uri(const std::string& dsn, std::size_t authority_begin) {
  std::string masked = dsn;
  // 1. userinfo: libpq ends it at the first '@' before the first '/' (a '?' or '#' does
  //    not end it: "app:s3?cret@db" is user app, password s3?cret). Masked up to the
  //    last '@' before that '/', which covers an unescaped '@' in a password too. A
  //    password with an unescaped '/' ("app:pa/ss@db") is no userinfo to libpq, yet it
  //    is one to whoever wrote it: without an '@' before the first '/', up to the last
  //    '@' before the query. The password begins after the first ':'.
  std::size_t authority_end = masked.find('/', authority_begin);
  if (authority_end == std::string::npos) authority_end = masked.size();
  std::size_t at = authority_end == authority_begin ? std::string::npos : masked.rfind('@', authority_end - 1);
  if (at == std::string::npos || at < authority_begin) {
    const std::size_t query = masked.find_first_of("?#", authority_begin);
    const std::size_t before = query == std::string::npos ? masked.size() : query;
    at = before == authority_begin ? std::string::npos : masked.rfind('@', before - 1);
  }
  if (at != std::string::npos && at >= authority_begin) {
    const std::size_t colon = masked.find(':', authority_begin);
    if (colon != std::string::npos && colon < at) {
      masked.replace(colon + 1, at - colon - 1, kMask);
    }
  }
  // 2. query parameters: password=VALUE and sslpassword=VALUE up to the next '&' or '#'.
  std::size_t query = masked.find('?', authority_begin);
  if (query == std::string::npos) return masked;
  std::size_t parameter = query + 1;
  while (parameter <= masked.size()) {
    std::size_t end = masked.find_first_of("&#", parameter);
    if (end == std::string::npos) end = masked.size();
    const std::size_t equals = masked.find('=', parameter);
    if (equals != std::string::npos && equals < end &&
        is_secret_keyword(masked.substr(parameter, equals - parameter))) {
      masked.replace(equals + 1, end - equals - 1, kMask);
      end = equals + 1 + std::strlen(kMask);
    }
    if (end >= masked.size() || masked[end] == '#') break;
    parameter = end + 1;
  }
  return masked;
}

// Masks password=VALUE and sslpassword=VALUE of a keyword/value connection string, scanning it the
// way libpq does: values are unquoted up to white space or single-quoted,
// with backslash escapes in both.
std::string mask_dsn_keywords(const std::string& dsn) {
  std::string masked;
  std::size_t i = 0;
  const std::size_t n = dsn.size();
  while (i < n) {
    // 1. white space and the keyword.
    const std::size_t keyword_begin = i;
    while (i < n && is_space(dsn[i])) ++i;
    const std::size_t key_begin = i;
    while (i < n && !is_space(dsn[i]) && dsn[i] != '=') ++i;
    const std::string keyword = dsn.substr(key_begin, i - key_begin);
    // 2. '=' with optional white space around it.
    std::size_t j = i;
    while (j < n && is_space(dsn[j])) ++j;
    if (j >= n || dsn[j] != '=') {
      // Not a keyword=value pair: copy it through unchanged.
      masked.append(dsn, keyword_begin, i - keyword_begin);
      continue;
    }
    ++j;
    while (j < n && is_space(dsn[j])) ++j;
    masked.append(dsn, keyword_begin, j - keyword_begin);
    // 3. the value.
    const std::size_t value_begin = j;
    if (j < n && dsn[j] == '\'') {
      ++j;
      while (j < n && dsn[j] != '\'') j += (dsn[j] == '\\' && j + 1 < n) ? 2 : 1;
      if (j < n) ++j;  // the closing quote
    } else {
      while (j < n && !is_space(dsn[j])) j += (dsn[j] == '\\' && j + 1 < n) ? 2 : 1;
    }
    if (is_secret_keyword(keyword)) {
      masked += kMask;
    } else {
      masked.append(dsn, value_begin, j - value_begin);
    }
    i = j;
  }
  return masked;
}


// Quotes a value for a libpq keyword=value string.
std::string conninfo_quote(const std::string& v) {
  std::string out = "'";
  for (char c : v) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}


// libpq's message, on one line, with every quoted fragment that the dsn does not use as a
// keyword (followed by '=') replaced: "missing "=" after "..."" may quote a piece of an
// unquoted password.
std::string scrub_parse_error(std::string message, const std::string& dsn) {
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  std::replace(message.begin(), message.end(), '\n', ' ');
  std::string out;
  std::size_t i = 0;
  while (i < message.size()) {
    const std::size_t open = message.find('"', i);
    if (open == std::string::npos) break;
    const std::size_t close = message.find('"', open + 1);
    if (close == std::string::npos) break;
    const std::string fragment = message.substr(open + 1, close - open - 1);
    bool keyword = false;
    for (std::size_t at = dsn.find(fragment); !fragment.empty() && at != std::string::npos;
         at = dsn.find(fragment, at + 1)) {
      std::size_t j = at + fragment.size();
      while (j < dsn.size() && is_space(dsn[j])) ++j;
      const bool starts_word = at == 0 || is_space(dsn[at - 1]) || dsn[at - 1] == '?' || dsn[at - 1] == '&';
      if (starts_word && j < dsn.size() && dsn[j] == '=') keyword = true;
    }
    out += message.substr(i, open + 1 - i);
    out += (keyword || fragment == "=") ? fragment : "...";
    out += '"';
    i = close + 1;
  }
  out += message.substr(std::min(i, message.size()));
  return out;
}

// One connection option's value, and where it came from ("dsn" or the name of libpq's
// environment variable).
struct OptionValue {
  std::string value;
  std::string origin;
};

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> parts;
  std::size_t begin = 0;
  for (;;) {
    const std::size_t comma = text.find(',', begin);
    parts.push_back(text.substr(begin, comma == std::string::npos ? std::string::npos : comma - begin));
    if (comma == std::string::npos) return parts;
    begin = comma + 1;
  }
}

// An integer as libpq's parse_int_param reads one: strtol, white space around it, an int.
bool is_libpq_int(const std::string& text, long* out = nullptr) {
  errno = 0;
  char* end = nullptr;
  const long n = std::strtol(text.c_str(), &end, 10);
  if (end == text.c_str() || errno != 0 || n != static_cast<int>(n)) return false;
  while (*end != '\0' && is_space(*end)) ++end;
  if (*end != '\0') return false;
  if (out != nullptr) *out = n;
  return true;
}

// The values libpq checks only when it connects (PostgreSQL 15's connectOptions2,
// parse_int_param and the hostaddr lookup), checked here so that a typo is bad config
// (exit 2) instead of a connection retried for ever. Empty when all are good. Stricter
// than libpq in three places, taken as typos: keepalives* and tcp_user_timeout are
// checked also for a Unix-socket host (libpq ignores them there), and an out-of-range
// port or an unparsable hostaddr in a list is refused (libpq skips that host).
// `masked_dsn` is the dsn as mask_dsn() shows it: a value it does not show (libpq read a
// piece of a password as a port, say) is not quoted. With a service file (a `service`
// keyword or PGSERVICE) the count of hosts and ports is not checked: the file may give
// them.
std::string option_value_problem(const std::map<std::string, OptionValue>& values, const std::string& masked_dsn,
                                 bool service) {
  auto found = [&](const char* keyword) -> const OptionValue* {
    const auto it = values.find(keyword);
    return it == values.end() ? nullptr : &it->second;
  };
  auto bad = [&](const char* keyword, const OptionValue& v, const std::string& why) {
    const std::string where = v.origin == "dsn" ? "" : " (from " + v.origin + ")";
    const bool shown = v.origin != "dsn" || masked_dsn.find(v.value) != std::string::npos;
    return "connection option " + std::string(keyword) + (shown ? " '" + v.value + "'" : "") + where + ": " + why;
  };
  for (const char* keyword :
       {"connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
        "tcp_user_timeout"}) {
    const OptionValue* v = found(keyword);
    if (v != nullptr && !is_libpq_int(v->value)) return bad(keyword, *v, "not an integer");
  }
  struct Choice {
    const char* keyword;
    std::vector<const char*> allowed;
    bool ignore_case;
  };
  const Choice choices[] = {
      {"sslmode", {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}, false},
      {"gssencmode", {"disable", "prefer", "require"}, false},
      {"channel_binding", {"disable", "prefer", "require"}, false},
      {"target_session_attrs", {"any", "read-write", "read-only", "primary", "standby", "prefer-standby"}, false},
      {"ssl_min_protocol_version", {"", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}, true},
      {"ssl_max_protocol_version", {"", "TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}, true},
  };
  for (const Choice& c : choices) {
    const OptionValue* v = found(c.keyword);
    if (v == nullptr) continue;
    std::string list;
    bool ok = false;
    for (const char* a : c.allowed) {
      std::string lower = a;
      std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char ch) { return std::tolower(ch); });
      if (c.ignore_case ? equals_ignoring_case(v->value, lower) : v->value == a) ok = true;
      if (*a != '\0') list += (list.empty() ? "" : ", ") + std::string(a);
    }
    if (!ok) return bad(c.keyword, *v, "not one of " + list);
  }
  // A TLS version range that holds a version (libpq: "invalid SSL protocol version range").
  const OptionValue* tls_min = found("ssl_min_protocol_version");
  const OptionValue* tls_max = found("ssl_max_protocol_version");
  if (tls_min != nullptr && tls_max != nullptr && !tls_min->value.empty() && !tls_max->value.empty()) {
    auto rank = [](const std::string& v) {
      int r = 0;
      for (const char* t : {"tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"}) {
        if (equals_ignoring_case(v, t)) return r;
        ++r;
      }
      return r;
    };
    if (rank(tls_min->value) > rank(tls_max->value))
      return "connection options ssl_min_protocol_version '" + tls_min->value + "' and ssl_max_protocol_version '" +
             tls_max->value + "': no TLS version in between";
  }
  // Hosts, their numeric addresses and ports: one port for all, or one per host.
  const OptionValue* host = found("host");
  const OptionValue* hostaddr = found("hostaddr");
  const OptionValue* port = found("port");
  std::size_t hosts = 1;
  if (hostaddr != nullptr && !hostaddr->value.empty()) {
    const std::vector<std::string> addrs = split_commas(hostaddr->value);
    for (const std::string& a : addrs) {
      // As libpq reads it: getaddrinfo with AI_NUMERICHOST ("fe80::1%lo" and "127.1" too).
      addrinfo hints{};
      hints.ai_flags = AI_NUMERICHOST;
      hints.ai_socktype = SOCK_STREAM;
      addrinfo* result = nullptr;
      const int rc = a.empty() ? 0 : ::getaddrinfo(a.c_str(), nullptr, &hints, &result);
      if (result != nullptr) ::freeaddrinfo(result);
      if (rc != 0)
        return bad("hostaddr", *hostaddr,
                   (addrs.size() == 1 ? "" : "'" + a + "' is ") + "not a numeric IPv4 or IPv6 address");
    }
    hosts = addrs.size();
  }
  if (host != nullptr && !host->value.empty()) {
    const std::size_t names = split_commas(host->value).size();
    if (!service && hostaddr != nullptr && !hostaddr->value.empty() && names != hosts)
      return "connection options host and hostaddr: " + std::to_string(names) + " host names but " +
             std::to_string(hosts) + " hostaddr values";
    hosts = names;
  }
  if (port != nullptr && !port->value.empty()) {
    const std::vector<std::string> ports = split_commas(port->value);
    for (const std::string& p : ports) {
      long n = 0;
      if (p.empty()) continue;  // libpq's default port
      if (!is_libpq_int(p, &n) || n < 1 || n > 65535)
        return bad("port", *port, (ports.size() == 1 ? "" : "'" + p + "' is ") + "not a port number (1..65535)");
    }
    if (!service && ports.size() != 1 && ports.size() != hosts)
      return bad("port", *port, std::to_string(ports.size()) + " ports for " + std::to_string(hosts) +
                                    " hosts (give one port, or one per host)");
  }
  return "";
}

}  // namespace

std::string mask_dsn(const std::string& dsn) {
  std::size_t start = 0;
  while (start < dsn.size() && is_space(dsn[start])) ++start;
  for (const std::string scheme : {"postgresql://", "postgres://"}) {
    if (starts_with_ignoring_case(dsn, start, scheme)) {
      return mask_dsn_uri(dsn, start + scheme.size());
    }
  }
  return mask_dsn_keywords(dsn);
}

std::string dsn_problem(const std::string& dsn) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (opts == nullptr) {
    std::string why = err ? scrub_parse_error(err, dsn) : "out of memory";
    if (err) PQfreemem(err);
    return "not a valid libpq connection string: " + why;
  }
  // The value libpq will use for each option: the dsn's, else its environment
  // variable's (PGPORT, PGSSLMODE, ...), else none (libpq's built-in default).
  std::map<std::string, OptionValue> values;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
    if (o->val != nullptr) values[o->keyword] = OptionValue{o->val, "dsn"};
  PQconninfoFree(opts);
  // Not where a service file comes between the dsn and the environment, nor for the
  // options effective_conninfo() always sets.
  const bool service = values.count("service") != 0 || std::getenv("PGSERVICE") != nullptr;
  PQconninfoOption* defaults = service ? nullptr : PQconndefaults();
  if (defaults != nullptr) {
    for (PQconninfoOption* o = defaults; o->keyword != nullptr; ++o) {
      if (o->envvar == nullptr || o->val == nullptr || values.count(o->keyword) != 0) continue;
      if (std::strcmp(o->keyword, "connect_timeout") == 0 || std::strncmp(o->keyword, "keepalives", 10) == 0 ||
          std::strcmp(o->keyword, "tcp_user_timeout") == 0)
        continue;
      const char* env = std::getenv(o->envvar);
      if (env != nullptr && std::strcmp(env, o->val) == 0) values[o->keyword] = OptionValue{o->val, o->envvar};
    }
    PQconninfoFree(defaults);
  }
  return option_value_problem(values, mask_dsn(dsn), service);
}

std::string effective_conninfo(const std::string& dsn, std::chrono::milliseconds ttl,
                               std::chrono::milliseconds renew,
                               const std::string& application_name) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(dsn.c_str(), &err);
  if (opts == nullptr) {
    if (err) PQfreemem(err);
    throw std::invalid_argument(dsn_problem(dsn));
  }
  std::map<std::string, std::string> given;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o)
    if (o->val != nullptr) given[o->keyword] = o->val;
  PQconninfoFree(opts);

  auto secs = [](std::chrono::milliseconds d) { return std::to_string(std::max<long long>(1, (d.count() + 999) / 1000)); };
  const std::map<std::string, std::string> defaults = {
      {"connect_timeout", std::to_string(std::max<long long>(2, (ttl.count() + 999) / 1000))},
      {"keepalives", "1"},
      {"keepalives_idle", secs(renew)},
      {"keepalives_interval", "1"},
      {"keepalives_count", "3"},
      {"tcp_user_timeout", std::to_string(std::max(renew, ttl / 2).count())},
      {"application_name", application_name},
  };
  for (const auto& [k, v] : defaults) given.emplace(k, v);  // the user's own win
  // No GSSAPI encryption unless asked for (the dsn's gssencmode, or PGGSSENCMODE): libpq's
  // default "prefer" probes for Kerberos credentials at every TCP connect, which loads and
  // initialises libkrb5: 600 kB of every agent's resident memory, measured (VmRSS of idle
  // agents 9.7 MB instead of 10.3 MB), on machines without Kerberos as well.
  if (std::getenv("PGGSSENCMODE") == nullptr) given.emplace("gssencmode", "disable");

  std::string out;
  for (const auto& [k, v] : given) {
    if (!out.empty()) out += ' ';
    out += k + "=" + conninfo_quote(v);
  }
  return out;
}


}  // namespace lease_agent
