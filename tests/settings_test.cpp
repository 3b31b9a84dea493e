// Tests of settings: durations, the XML file, flags over the file, validation, DSN masking.

#include "settings.h"

#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <catch2/catch.hpp>
#include <climits>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

using namespace lease_agent;

namespace {

// A fresh directory under /tmp, removed with everything in it on destruction.
class TempDir {
 public:
  TempDir() {
    char pattern[] = "/tmp/settings_test.XXXXXX";
    const char* made = mkdtemp(pattern);
    REQUIRE(made != nullptr);
    path_ = made;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  // Writes `contents` to the file `name` in this directory; returns its path.
  std::string write(const std::string& name, const std::string& contents) const {
    const std::string file = path_ + "/" + name;
    std::ofstream out(file, std::ios::binary);
    out << contents;
    REQUIRE(out.good());
    return file;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Parses `args` (without the program name) with the setting flags, then
// loads the settings.
Settings load_from_args(const std::vector<std::string>& args) {
  CLI::App app{"settings test"};
  FlagValues flags;
  add_setting_flags(app, flags);
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  app.parse(reversed);
  return load_settings(flags);
}

// The what() of the SettingsError that `load` throws; fails the test if it
// throws nothing.
template <typename Load>
std::string settings_error_of(Load load) {
  try {
    load();
  } catch (const SettingsError& e) {
    return e.what();
  }
  FAIL("no SettingsError thrown");
  return "";
}

std::string value_of(const Settings& s, const std::string& name) {
  for (const auto& [key, value] : describe(s)) {
    if (key == name) return value;
  }
  FAIL("describe() has no " << name);
  return "";
}

std::string this_host_name() {
  char buffer[HOST_NAME_MAX + 1] = {};
  REQUIRE(gethostname(buffer, sizeof buffer - 1) == 0);
  return buffer;
}

}  // namespace

TEST_CASE("parse_duration reads ms, s and m") {
  struct Case {
    const char* text;
    long long ms;
  };
  const Case cases[] = {
      {"500ms", 500}, {"1ms", 1},     {"2s", 2000},     {"10s", 10000},
      {"1m", 60000},  {"90s", 90000}, {"007s", 7000},   {"1440m", 86400000},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    CHECK(parse_duration(c.text).count() == c.ms);
  }
}

TEST_CASE("parse_duration rejects what is not a positive duration with a unit") {
  struct Case {
    const char* text;
    const char* reason;  // a part of the message
  };
  const Case cases[] = {
      {"5", "needs a unit: ms, s or m"},
      {"", "needs a positive whole number"},
      {"s", "needs a positive whole number"},
      {"0s", "must be positive"},
      {"0ms", "must be positive"},
      {"-1s", "needs a positive whole number"},
      {"+1s", "needs a positive whole number"},
      {"1.5s", "unknown unit"},
      {"2h", "unknown unit"},
      {"2S", "unknown unit"},
      {"2 s", "unknown unit"},
      {" 2s", "needs a positive whole number"},
      {"2s ", "unknown unit"},
      {"abc", "needs a positive whole number"},
      {"1441m", "at most 1440m"},
      {"99999999999999999999999s", "at most"},
  };
  for (const Case& c : cases) {
    INFO("'" << c.text << "'");
    try {
      parse_duration(c.text);
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(c.reason));
    }
  }
  CHECK_THROWS_WITH(parse_duration("5"), "bad duration '5': needs a unit: ms, s or m");
}

TEST_CASE("format_duration writes what parse_duration reads back") {
  CHECK(format_duration(Millis(500)) == "500ms");
  CHECK(format_duration(Millis(2000)) == "2s");
  CHECK(format_duration(Millis(60000)) == "1m");
  CHECK(format_duration(Millis(90000)) == "90s");
  CHECK(format_duration(Millis(1500)) == "1500ms");
  for (const char* text : {"500ms", "2s", "1m", "90s", "1500ms", "120m"}) {
    CHECK(format_duration(parse_duration(text)) == text);
  }
}

TEST_CASE("defaults apply when nothing is given") {
  const Settings s = load_settings(FlagValues{});
  CHECK(s.active);
  CHECK(s.cluster == "default");
  CHECK(s.node == this_host_name());
  CHECK(s.address.empty());
  CHECK(s.dsn.empty());
  CHECK(s.ttl == Millis(10000));
  CHECK(s.renew == Millis(2000));
  CHECK(s.http == "127.0.0.1:8700");
  CHECK(s.http_enabled());
  CHECK(s.http_host() == "127.0.0.1");
  CHECK(s.http_port() == 8700);
  CHECK(s.on_promote.empty());
  CHECK(s.on_demote.empty());
  CHECK(s.hook_timeout == Millis(30000));
  CHECK(s.log_format == "text");
}

TEST_CASE("the agent's own file sets every setting, values trimmed") {
  TempDir dir;
  const std::string path = dir.write("agent.xml", R"(<?xml version="1.0"?>
<lease-agent>
  <property name="active">false</property>
  <property name="cluster"> billing </property>
  <property name="node">app2</property>
  <property name="address">10.0.0.12:8080</property>
  <property name="dsn">host=db1,db2 dbname=app target_session_attrs=read-write</property>
  <property name="ttl">
     6s
  </property>
  <property name="renew">1s</property>
  <property name="http">0.0.0.0:9000</property>
  <property name="on-promote">/usr/local/bin/promote --now</property>
  <property name="on-demote">/usr/local/bin/demote</property>
  <property name="hook-timeout">1m</property>
  <property name="log-format">json</property>
</lease-agent>
)");
  const Settings s = load_settings_file(path);
  CHECK_FALSE(s.active);
  CHECK(s.cluster == "billing");
  CHECK(s.node == "app2");
  CHECK(s.address == "10.0.0.12:8080");
  CHECK(s.dsn == "host=db1,db2 dbname=app target_session_attrs=read-write");
  CHECK(s.ttl == Millis(6000));
  CHECK(s.renew == Millis(1000));
  CHECK(s.http_host() == "0.0.0.0");
  CHECK(s.http_port() == 9000);
  CHECK(s.on_promote == "/usr/local/bin/promote --now");
  CHECK(s.on_demote == "/usr/local/bin/demote");
  CHECK(s.hook_timeout == Millis(60000));
  CHECK(s.log_format == "json");
}

TEST_CASE("OpenMobster's openmobster-config.xml shape is read") {
  TempDir dir;
  const std::string path = dir.write("openmobster-config.xml", R"(<?xml version="1.0" encoding="UTF-8"?>

<deployment xmlns="urn:jboss:bean-deployer:2.0">
   <bean name="clustering://ClusterService" class="org.openmobster.core.cluster.ClusterService">
   	  <!-- Make this value true to activate this node as a Cluster node -->
   	  <property name="active">false</property>
   	  <property name="cluster">mobile</property>
   </bean>
</deployment>
)");
  const Settings s = load_settings_file(path);
  CHECK_FALSE(s.active);
  CHECK(s.cluster == "mobile");
  CHECK(s.ttl == Millis(10000));
}

TEST_CASE("a <value> child holds a property's value") {
  TempDir dir;
  const std::string path = dir.write("value.xml", R"(<deployment>
  <bean name="x" class="y">
    <property name="cluster"><value> shop </value></property>
    <property name="renew">
      <value>3s</value>
    </property>
  </bean>
</deployment>
)");
  const Settings s = load_settings_file(path);
  CHECK(s.cluster == "shop");
  CHECK(s.renew == Millis(3000));
}

TEST_CASE("file errors are one line naming the file and line") {
  TempDir dir;
  struct Case {
    const char* name;
    const char* contents;
    const char* message;  // after "<path>:"
  };
  const Case cases[] = {
      {"unknown.xml",
       "<lease-agent>\n"
       "  <property name=\"ttl\">10s</property>\n"
       "\n"
       "  <property name=\"tll\">10s</property>\n"
       "</lease-agent>\n",
       "4: unknown setting 'tll'"},
      {"duplicate.xml",
       "<lease-agent>\n"
       "  <property name=\"ttl\">10s</property>\n"
       "  <bean>\n"
       "    <property name=\"ttl\">12s</property>\n"
       "  </bean>\n"
       "</lease-agent>\n",
       "4: setting 'ttl' given twice (first at line 2)"},
      {"nameless.xml",
       "<lease-agent>\n"
       "  <property>10s</property>\n"
       "</lease-agent>\n",
       "2: <property> without a name attribute"},
      {"malformed.xml",
       "<lease-agent>\n"
       "  <property name=\"ttl\">10s</property>\n"
       "  <property name=\"renew\">2s</propert>\n"
       "</lease-agent>\n",
       "3: malformed XML: Start-end tags mismatch"},
      {"empty.xml", "", "1: malformed XML: No document element found"},
      {"two-roots.xml",
       "<lease-agent>\n"
       "  <property name=\"node\">a</property>\n"
       "</lease-agent>\n"
       "<more>\n"
       "  <property name=\"ttl\">20s</property>\n"
       "</more>\n",
       "4: malformed XML: a second root element <more> (a config file has one, e.g. <lease-agent>)"},
      {"latin1-node.xml",
       "<lease-agent>\n"
       "  <property name=\"node\">caf\xe9</property>\n"
       "</lease-agent>\n",
       "2: node: is not valid UTF-8"},
      {"bad-value.xml",
       "<lease-agent>\n"
       "  <property name=\"active\">true</property>\n"
       "  <property name=\"ttl\">5</property>\n"
       "</lease-agent>\n",
       "3: ttl: bad duration '5': needs a unit: ms, s or m"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    const std::string path = dir.write(c.name, c.contents);
    const std::string message =
        settings_error_of([&] { load_settings_file(path); });
    CHECK(message == path + ":" + c.message);
    CHECK(message.find('\n') == std::string::npos);
  }
}

TEST_CASE("a missing file is an error naming it") {
  TempDir dir;
  const std::string path = dir.path() + "/absent.xml";
  const std::string message = settings_error_of([&] { load_settings_file(path); });
  CHECK(message == path + ": cannot read: No such file or directory");
  CHECK(settings_error_of([&] { load_settings_file(dir.path()); }) ==
        dir.path() + ": cannot read: Is a directory");
}

TEST_CASE("flags win over the file; only given flags are stored") {
  TempDir dir;
  const std::string path = dir.write("agent.xml", R"(<lease-agent>
  <property name="cluster">from-file</property>
  <property name="node">file-node</property>
  <property name="ttl">20s</property>
  <property name="log-format">json</property>
</lease-agent>
)");
  CLI::App app{"settings test"};
  FlagValues flags;
  add_setting_flags(app, flags);
  std::vector<std::string> args{"-c", path, "--cluster", "from-flag",
                                "-b", "10.0.0.5:80", "--ttl", "4s"};
  std::reverse(args.begin(), args.end());
  app.parse(args);

  CHECK(flags.config_file == path);
  CHECK(flags.values ==
        std::map<std::string, std::string>{{"address", "10.0.0.5:80"},
                                           {"cluster", "from-flag"},
                                           {"ttl", "4s"}});
  const Settings s = load_settings(flags);
  CHECK(s.cluster == "from-flag");      // flag over file
  CHECK(s.node == "file-node");         // file over default
  CHECK(s.address == "10.0.0.5:80");    // -b is --address
  CHECK(s.ttl == Millis(4000));
  CHECK(s.log_format == "json");
  CHECK(s.renew == Millis(2000));       // default
}

TEST_CASE("flags work without a file, and a repeated flag takes the last") {
  const Settings s = load_from_args({"--active", "false", "--http", "off",
                                     "--address", "a", "--address", "b",
                                     "--on-promote", "promote.sh"});
  CHECK_FALSE(s.active);
  CHECK_FALSE(s.http_enabled());
  CHECK(s.address == "b");
  CHECK(s.on_promote == "promote.sh");
}

TEST_CASE("validation errors name the flag or file line of the value") {
  struct Case {
    std::vector<std::string> args;
    std::string message;
  };
  const Case cases[] = {
      {{"--ttl", "5"}, "--ttl: bad duration '5': needs a unit: ms, s or m"},
      {{"--renew", "6s"}, "--renew: renew 6s must be at most half of ttl 10s"},
      {{"--ttl", "3s"}, "--ttl: renew 2s must be at most half of ttl 3s"},
      {{"--ttl", "3s", "--renew", "2s"},
       "--renew: renew 2s must be at most half of ttl 3s"},
      {{"--ttl", "50ms", "--renew", "10ms"},
       "--ttl: ttl 50ms is too short: at least 100ms"},
      {{"--hook-timeout", "0s"}, "--hook-timeout: bad duration '0s': must be positive"},
      {{"--active", "yes"}, "--active: 'yes' is not true or false"},
      {{"--log-format", "xml"}, "--log-format: 'xml' is not text or json"},
      {{"--http", "8700"}, "--http: bad address '8700': needs HOST:PORT or off"},
      {{"--http", ":8700"},
       "--http: bad address ':8700': needs a host, e.g. 0.0.0.0 for all"},
      {{"--http", "localhost:0"},
       "--http: bad address 'localhost:0': port must be 1..65535"},
      {{"--http", "localhost:65536"},
       "--http: bad address 'localhost:65536': port must be 1..65535"},
      {{"--http", "localhost:http"},
       "--http: bad address 'localhost:http': port must be 1..65535"},
      {{"--http", "local host:80"},
       "--http: bad address 'local host:80': bad host 'local host'"},
      {{"--http", "::1:8700"},
       "--http: bad address '::1:8700': bad host '::1'"},
      {{"--http", "[::1]"}, "--http: bad address '[::1]': needs [IPv6]:PORT"},
      {{"--cluster", ""}, "--cluster: must not be empty"},
      {{"--node", std::string(64, 'n')},
       "--node: '" + std::string(64, 'n') + "' is longer than 63 bytes"},
      {{"--node", "a\tb"}, "--node: must not contain control characters"},
      {{"--handover-delay", "300"}, "--handover-delay: bad duration '300': needs a unit: ms, s or m"},
      {{"--node", "caf\xe9"}, "--node: is not valid UTF-8"},
      {{"--cluster", "\xc0\xaf"}, "--cluster: is not valid UTF-8"},          // overlong '/'
      {{"--node", "\xed\xa0\x80"}, "--node: is not valid UTF-8"},           // a surrogate
      {{"--node", "a\xc2\x85" "b"}, "--node: must not contain control characters"},  // U+0085, a C1 control
      {{"--handover-delay", ""}, "--handover-delay: bad duration '': needs a positive whole number and a unit: ms, s or m"},
      {{"--address", "10.0.0.1\xff"}, "-b/--address: is not valid UTF-8"},
      {{"-b", "10.0.0.1\xff"}, "-b/--address: is not valid UTF-8"},
      {{"-c", ""}, "--config: must not be empty (the path of an XML config file)"},
      {{"--dsn", "host=db port=abc"}, "--dsn: connection option port 'abc': not a port number (1..65535)"},
      {{"--dsn", "host=db port=70000"}, "--dsn: connection option port '70000': not a port number (1..65535)"},
      {{"--dsn", "host=a,b port=5432,x"}, "--dsn: connection option port '5432,x': 'x' is not a port number (1..65535)"},
      {{"--dsn", "host=a,b port=1,2,3"},
       "--dsn: connection option port '1,2,3': 3 ports for 2 hosts (give one port, or one per host)"},
      {{"--dsn", "host=a,b hostaddr=127.0.0.1"},
       "--dsn: connection options host and hostaddr: 2 host names but 1 hostaddr values"},
      {{"--dsn", "hostaddr=db.example"},
       "--dsn: connection option hostaddr 'db.example': not a numeric IPv4 or IPv6 address"},
      {{"--dsn", "host=db connect_timeout=abc"}, "--dsn: connection option connect_timeout 'abc': not an integer"},
      {{"--dsn", "host=db keepalives_idle=2x"}, "--dsn: connection option keepalives_idle '2x': not an integer"},
      {{"--dsn", "host=db sslmode=REQUIRE"},
       "--dsn: connection option sslmode 'REQUIRE': not one of disable, allow, prefer, require, verify-ca, verify-full"},
      {{"--dsn", "postgresql://db/app?target_session_attrs=readwrite"},
       "--dsn: connection option target_session_attrs 'readwrite': not one of any, read-write, read-only, primary, "
       "standby, prefer-standby"},
      {{"--dsn", "host=db gssencmode=yes"}, "--dsn: connection option gssencmode 'yes': not one of disable, prefer, require"},
      {{"--dsn", "host=db ssl_min_protocol_version=TLSv1.3 ssl_max_protocol_version=tlsv1.2"},
       "--dsn: connection options ssl_min_protocol_version 'TLSv1.3' and ssl_max_protocol_version 'tlsv1.2': no TLS "
       "version in between"},
      {{"--dsn", "host=db ssl_min_protocol_version=TLSv2"},
       "--dsn: connection option ssl_min_protocol_version 'TLSv2': not one of TLSv1, TLSv1.1, TLSv1.2, TLSv1.3"},
      {{"--dsn", "host=db dbnme=app"},
       "--dsn: not a valid libpq connection string: invalid connection option \"dbnme\""},
      {{"--dsn", "postgresql://db/app?sslmod=require"},
       "--dsn: not a valid libpq connection string: invalid URI query parameter: \"sslmod\""},
  };
  for (const Case& c : cases) {
    INFO(c.message);
    CHECK(settings_error_of([&] { load_from_args(c.args); }) == c.message);
  }
}

TEST_CASE("connection options libpq accepts are accepted") {
  for (const std::string& dsn :
       {std::string("host=a,b port=5432"), std::string("host=a,b port=5432,5433"), std::string("host=a,b port=5432,"),
        std::string("host=a port=' 5432 '"), std::string("host=a,b hostaddr=127.0.0.1,::1 port=5432"),
        std::string("host=db sslmode=verify-full connect_timeout=3 keepalives=0 tcp_user_timeout=-5"),
        std::string("host=db ssl_min_protocol_version=tlsv1.2 target_session_attrs=prefer-standby"),
        std::string("postgresql://a:5432,b:5433/app?target_session_attrs=read-write"),
        // libpq reads hostaddr with getaddrinfo(AI_NUMERICHOST): a scoped IPv6 address, "127.1".
        std::string("host=a,b hostaddr=fe80::1%lo,127.1"),
        // A service file may give the hosts: their count is not checked.
        std::string("service=nonesuch port=5432,5433")}) {
    CAPTURE(dsn);
    CHECK(load_from_args({"--dsn", dsn}).dsn == dsn);
  }
  CHECK(load_from_args({"--node", "café-ü"}).node == "café-ü");
  // effective_conninfo always sets connect_timeout: libpq never reads PGCONNECT_TIMEOUT.
  ::setenv("PGCONNECT_TIMEOUT", "abc", 1);
  const std::string why = [] {
    try {
      load_from_args({"--dsn", "host=db"});
      return std::string();
    } catch (const SettingsError& e) {
      return std::string(e.what());
    }
  }();
  ::unsetenv("PGCONNECT_TIMEOUT");
  CHECK(why.empty());
}

TEST_CASE("a piece of a password that libpq reads as a port is not quoted") {
  // "app:pa/ss@db": to libpq host app, port "pa" (the '/' ends the authority).
  const std::string why = settings_error_of([] { load_from_args({"--dsn", "postgresql://app:pa/ss@db/app"}); });
  CHECK(why == "--dsn: connection option port: not a port number (1..65535)");
}

TEST_CASE("validation accepts the edges") {
  CHECK(load_from_args({"--ttl", "4s", "--renew", "2s"}).renew == Millis(2000));
  CHECK(load_from_args({"--ttl", "100ms", "--renew", "50ms"}).ttl == Millis(100));
  CHECK(load_from_args({"--node", std::string(63, 'n')}).node.size() == 63);
  const Settings v6 = load_from_args({"--http", "[::1]:8701"});
  CHECK(v6.http_host() == "::1");
  CHECK(v6.http_port() == 8701);
  const Settings named = load_from_args({"--http", "agent-1.example.com:65535"});
  CHECK(named.http_host() == "agent-1.example.com");
  CHECK(named.http_port() == 65535);
}

TEST_CASE("a renew/ttl conflict in the file names the file line") {
  TempDir dir;
  const std::string path = dir.write("timing.xml",
                                     "<lease-agent>\n"
                                     "  <property name=\"ttl\">10s</property>\n"
                                     "  <property name=\"renew\">6s</property>\n"
                                     "</lease-agent>\n");
  CHECK(settings_error_of([&] { load_settings_file(path); }) ==
        path + ":3: renew: renew 6s must be at most half of ttl 10s");
}

TEST_CASE("mask_dsn hides every password and changes nothing else") {
  struct Case {
    const char* dsn;
    const char* masked;
  };
  const Case cases[] = {
      {"", ""},
      {"host=db user=app", "host=db user=app"},
      {"host=db password=s3cret user=app", "host=db password=******** user=app"},
      {"password=s3cret", "password=********"},
      {"host=db password = s3cret", "host=db password = ********"},
      {"host=db password='se cret' dbname=app", "host=db password=******** dbname=app"},
      {"password='it\\'s s3cret' user=app", "password=******** user=app"},
      {"password=s3\\ cret user=app", "password=******** user=app"},
      {"password='unterminated s3cret", "password=********"},
      {"passfile=/etc/pgpass host=db", "passfile=/etc/pgpass host=db"},
      {"postgresql://app:s3cret@db:5432/app", "postgresql://app:********@db:5432/app"},
      {"postgres://app:s3cret@db/app", "postgres://app:********@db/app"},
      {"postgresql://app@db/app", "postgresql://app@db/app"},
      {"postgresql://db/app", "postgresql://db/app"},
      {"postgresql://app:s3cret@db1:5432,db2:5432/app?target_session_attrs=read-write",
       "postgresql://app:********@db1:5432,db2:5432/app?target_session_attrs=read-write"},
      {"postgresql://db/app?user=app&password=s3cret&sslmode=require",
       "postgresql://db/app?user=app&password=********&sslmode=require"},
      {"postgresql://db/app?password=s3cret", "postgresql://db/app?password=********"},
      {"postgresql://app:s3%40cret@db/app?password=s3cret",
       "postgresql://app:********@db/app?password=********"},
      // libpq ends the userinfo at '@' (or '/'), not at '?' or '#'.
      {"postgresql://app:s3?cret@db/app", "postgresql://app:********@db/app"},
      {"postgresql://app:s3#cret@db", "postgresql://app:********@db"},
      {"postgresql://app:s3@cret@db/app", "postgresql://app:********@db/app"},
      // libpq decodes a query keyword's %XX escapes: pass%77ord is password.
      {"postgresql://db/app?pass%77ord=s3cret", "postgresql://db/app?pass%77ord=********"},
      {"postgresql://db/app?%73slpassword=s3cret", "postgresql://db/app?%73slpassword=********"},
      // An unescaped '/' in a password: no userinfo to libpq, but masked all the same.
      {"postgresql://app:s3/cret@db/app", "postgresql://app:********@db/app"},
      // An '@' in the query is no userinfo.
      {"postgresql://db:5432/app?user=me@corp", "postgresql://db:5432/app?user=me@corp"},
      // The passphrase of the client's SSL key is a secret too.
      {"host=db sslpassword=s3cret sslkey=/k", "host=db sslpassword=******** sslkey=/k"},
      {"postgresql://db/app?sslpassword=s3cret&sslmode=require",
       "postgresql://db/app?sslpassword=********&sslmode=require"},
  };
  for (const Case& c : cases) {
    INFO(c.dsn);
    const std::string masked = mask_dsn(c.dsn);
    CHECK(masked == c.masked);
    CHECK(masked.find("s3") == std::string::npos);
    CHECK(masked.find("cret") == std::string::npos);
  }
}

TEST_CASE("describe lists every setting in table order, DSN masked") {
  Settings s;
  s.node = "app1";
  s.dsn = "host=db password=s3cret";
  s.ttl = Millis(1500);
  s.renew = Millis(60000);
  const auto described = describe(s);
  std::vector<std::string> names;
  for (const auto& entry : described) names.push_back(entry.first);
  CHECK(names == std::vector<std::string>{"active", "cluster", "node", "address",
                                          "dsn", "ttl", "renew", "http",
                                          "on-promote", "on-demote",
                                          "hook-timeout", "handover-delay",
                                          "log-format"});
  CHECK(value_of(s, "active") == "true");
  CHECK(value_of(s, "node") == "app1");
  CHECK(value_of(s, "address") == "");
  CHECK(value_of(s, "dsn") == "host=db password=********");
  CHECK(value_of(s, "ttl") == "1500ms");
  CHECK(value_of(s, "renew") == "1m");
  CHECK(value_of(s, "hook-timeout") == "30s");
  CHECK(value_of(s, "on-promote") == "");
  for (const auto& entry : described) CHECK(entry.second.find("s3cret") == std::string::npos);
}

TEST_CASE("the example config files of config/ load") {
#ifdef LEASE_AGENT_SOURCE_DIR
  const std::string source_dir = LEASE_AGENT_SOURCE_DIR;
  const Settings agent = load_settings_file(source_dir + "/config/agent.xml");
  // agent.xml sets every setting to its default.
  const Settings defaults = load_settings(FlagValues{});
  CHECK(describe(agent) == describe(defaults));

  const Settings openmobster =
      load_settings_file(source_dir + "/config/openmobster-config.xml");
  CHECK(openmobster.active);
  CHECK(openmobster.cluster == "openmobster");
  CHECK(openmobster.address == "10.0.0.11:8080");
#else
  WARN("LEASE_AGENT_SOURCE_DIR is not defined: skipped");
#endif
}

TEST_CASE("a malformed dsn is named without quoting what could be its password") {
  // libpq says: missing "=" after "word" in connection info string.
  const std::string why = settings_error_of([] { load_from_args({"--dsn", "host=db password=two words"}); });
  CHECK(why.rfind("--dsn: not a valid libpq connection string: missing \"=\" after ", 0) == 0);
  CHECK(why.find("words") == std::string::npos);
  CHECK(why.find("two") == std::string::npos);
  // A file names its line.
  TempDir dir;
  const std::string path =
      dir.write("dsn.xml", "<lease-agent>\n  <property name=\"dsn\">host=db port</property>\n</lease-agent>\n");
  CHECK(settings_error_of([&] { load_settings_file(path); }).rfind(path + ":2: dsn: not a valid libpq", 0) == 0);
}

TEST_CASE("handover-delay: 0 by default, and a duration otherwise") {
  CHECK(load_settings(FlagValues{}).handover_delay == Millis(0));
  CHECK(load_from_args({"--handover-delay", "300ms"}).handover_delay == Millis(300));
  for (const char* zero : {"0", "0ms", "00ms", "0s", "0m", "000"})
    CHECK(load_from_args({"--handover-delay", zero}).handover_delay == Millis(0));
  CHECK(settings_error_of([] { load_from_args({"--handover-delay", "0h"}); }) ==
        "--handover-delay: bad duration '0h': unknown unit 'h': use ms, s or m");
  CHECK(value_of(load_from_args({"--handover-delay", "1s"}), "handover-delay") == "1s");
  // Below ttl: a stopping master does not renew, its lease must outlast the delay.
  CHECK(settings_error_of([] { load_from_args({"--ttl", "2s", "--renew", "500ms", "--handover-delay", "2s"}); }) ==
        "--handover-delay: handover-delay 2s must be below ttl 2s (the lease would run out before the release)");
  CHECK(load_from_args({"--ttl", "2s", "--renew", "500ms", "--handover-delay", "1900ms"}).handover_delay == Millis(1900));
}

// Runs `body` in a child process bounded by `seconds` of wall time (SIGALRM) and, when
// `memory_mb` > 0, that much address space: a regression that blocks or reads without
// end fails the test instead of hanging it. The child's exit status, or 128 + signal.
template <typename Body>
int in_bounded_child(Body body, unsigned seconds, long memory_mb = 0) {
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::alarm(seconds);
    if (memory_mb > 0) {
      const rlimit limit{static_cast<rlim_t>(memory_mb) << 20, static_cast<rlim_t>(memory_mb) << 20};
      ::setrlimit(RLIMIT_AS, &limit);
    }
    int status = 1;
    try {
      status = body() ? 0 : 1;
    } catch (...) {
      status = 2;
    }
    ::_exit(status);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST_CASE("the config file is read once: a pipe serves both the log format and the settings") {
  TempDir dir;
  const std::string fifo = dir.path() + "/agent.xml";
  REQUIRE(::mkfifo(fifo.c_str(), 0600) == 0);
  // The child reads; a second read of the pipe would block (no writer): SIGALRM.
  const int status = in_bounded_child(
      [&] {
        std::thread writer([&] {
          std::ofstream(fifo) << "<lease-agent>\n  <property name=\"log-format\">json</property>\n"
                                 "  <property name=\"node\">from-pipe</property>\n</lease-agent>\n";
        });
        FlagValues flags;
        flags.config_file = fifo;
        flags.config_given = true;
        const bool json = requested_log_format(flags) == "json";
        const Settings s = load_settings(flags);
        writer.join();
        return json && s.node == "from-pipe" && s.log_format == "json";
      },
      20);
  CHECK(status == 0);
}

TEST_CASE("a config file larger than 1 MiB is refused, not read into memory") {
  // In a child with 512 MiB of address space: reading /dev/zero without a bound fails it.
  const int status = in_bounded_child(
      [] {
        FlagValues flags;
        flags.config_file = "/dev/zero";
        flags.config_given = true;
        if (requested_log_format(flags) != "text") return false;
        try {
          load_settings(flags);
        } catch (const SettingsError& e) {
          return std::string(e.what()) == "/dev/zero: larger than 1 MiB: not a config file";
        }
        return false;
      },
      20, 512);
  CHECK(status == 0);
  TempDir dir;
  const std::string big = dir.write("big.xml", "<lease-agent>" + std::string(1 << 20, ' ') + "</lease-agent>");
  CHECK(settings_error_of([&] { load_settings_file(big); }) == big + ": larger than 1 MiB: not a config file");
}
