// lease-agent: the command line. Reads top to bottom: arguments, settings, the command.
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <optional>
#include <string>
#include <vector>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "daemon.h"
#include "lease_store.h"
#include "log.h"
#include "settings.h"

using namespace lease_agent;

namespace {

// The command being run, for error lines in the JSON log format.
std::string g_command = "lease-agent";

int usage_error(const std::string& what) {
  log_command_error(g_command, what);
  return kExitUsage;
}

// Overwrites the password of a --dsn argument in this process's argv, so that `ps`
// and /proc/PID/cmdline never show it.
void scrub_dsn_arguments(int argc, char** argv) {
  auto scrub = [](char* value) {
    const std::string original = value;
    std::string masked = mask_dsn(original);
    if (masked == original) return;
    masked.resize(original.size(), ' ');
    std::memcpy(value, masked.data(), original.size());
  };
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dsn") == 0 && i + 1 < argc) {
      scrub(argv[i + 1]);
    } else if (std::strncmp(argv[i], "--dsn=", 6) == 0) {
      scrub(argv[i] + 6);
    }
  }
}

// `text` (a CLI11 parse error, which quotes arguments) with every argument that holds a
// password shown masked: a whole argument ("host=db password=x") or the value of a
// --name=VALUE one.
std::string mask_arguments_in(std::string text, const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    std::vector<std::string> candidates{arg};
    const std::size_t equals = arg.find('=');
    if (arg.compare(0, 2, "--") == 0 && equals != std::string::npos) candidates.push_back(arg.substr(equals + 1));
    for (const std::string& original : candidates) {
      const std::string masked = mask_dsn(original);
      if (masked == original || original.empty()) continue;
      for (std::size_t at = text.find(original); at != std::string::npos; at = text.find(original, at + masked.size()))
        text.replace(at, original.size(), masked);
    }
  }
  return text;
}

// A setting's value on one line of check-config: control characters (a hook command
// written over several lines of the XML file) as \n, \t, \r or \xNN.
std::string one_line_value(const std::string& value) {
  std::string out;
  for (const char c : value) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (u < 0x20 || u == 0x7f) {
      char hex[5];
      std::snprintf(hex, sizeof hex, "\\x%02x", u);
      out += hex;
    } else out += c;
  }
  return out;
}

StoreOptions store_options(const Settings& s) {
  return StoreOptions{s.dsn, s.cluster, s.node, new_incarnation(), s.address, s.ttl, s.renew};
}

// One view of the cluster, as text or JSON.
void print_cluster(const ClusterStatus& cs, bool json) {
  if (json) {
    nlohmann::ordered_json j;
    j["cluster"] = cs.cluster;
    j["master"] = cs.holder.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(cs.holder);
    j["epoch"] = cs.epoch;
    j["lease_left_ms"] = cs.lease_left_ms;
    j["reserved_for"] = cs.reserved_for.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(cs.reserved_for);
    j["switchover_to"] = cs.switchover_to.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(cs.switchover_to);
    j["nodes"] = nlohmann::ordered_json::array();
    for (const NodeStatus& n : cs.nodes)
      j["nodes"].push_back({{"node", n.node},
                            {"address", n.address},
                            {"role", n.role},
                            {"state", n.state},
                            {"registered_at", n.registered_at},
                            {"heartbeat_at", n.heartbeat_at},
                            {"heartbeat_age_ms", n.heartbeat_age_ms}});
    std::cout << j.dump(2) << "\n";
    return;
  }
  if (cs.nodes.empty()) {
    std::cout << "cluster " << cs.cluster << " has no node: no agent has registered in it (check --cluster)\n";
    return;
  }
  std::cout << "cluster " << cs.cluster << ": ";
  if (cs.holder.empty()) {
    std::cout << "no master (epoch " << cs.epoch << ")";
    if (!cs.reserved_for.empty()) std::cout << ", the lease is free, reserved for " << cs.reserved_for;
    std::cout << "\n";
  } else {
    std::cout << "master " << cs.holder << ", epoch " << cs.epoch << ", lease " << cs.lease_left_ms << "ms left";
    if (!cs.switchover_to.empty()) std::cout << ", switchover to " << cs.switchover_to << " requested";
    std::cout << "\n";
  }
  std::printf("%-20s %-22s %-8s %-6s %-25s %s\n", "NODE", "ADDRESS", "ROLE", "STATE", "REGISTERED",
              "LAST HEARTBEAT");
  for (const NodeStatus& n : cs.nodes)
    std::printf("%-20s %-22s %-8s %-6s %-25s %s (%lldms ago)\n", n.node.c_str(),
                n.address.empty() ? "-" : n.address.c_str(), n.role.c_str(), n.state.c_str(),
                n.registered_at.c_str(), n.heartbeat_at.c_str(), static_cast<long long>(n.heartbeat_age_ms));
  std::fflush(stdout);
}

// `status`: once, or every `watch` until SIGINT/SIGTERM (exit 0).
int print_status(const Settings& s, bool json, const std::string& watch_text) {
  std::optional<Millis> watch;
  if (!watch_text.empty()) {
    try {
      watch = parse_duration(watch_text);
    } catch (const std::invalid_argument& e) {
      throw SettingsError(std::string("--watch: ") + e.what());
    }
  }
  LeaseStore store(store_options(s));
  store.connect(false);
  if (!watch) {
    print_cluster(store.cluster_status(), json);
    return kExitClean;
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const bool tty = ::isatty(STDOUT_FILENO) == 1;
  for (;;) {
    if (!store.connected()) store.connect(false);
    ClusterStatus cs;
    std::string error;
    try {
      cs = store.cluster_status();
    } catch (const StoreError& e) {
      if (e.fatal()) throw;
      error = e.what();
    }
    if (tty) std::cout << "\033[H\033[2J";
    else std::cout << "\n";
    if (error.empty()) print_cluster(cs, json);
    else std::cout << "lease-agent: " << error << " (retrying)\n" << std::flush;
    const timespec wait{static_cast<time_t>(watch->count() / 1000), static_cast<long>(watch->count() % 1000) * 1000000};
    if (sigtimedwait(&set, nullptr, &wait) > 0) return kExitClean;
  }
}

// `switchover`: the request, then waits until the target holds the lease.
int lease_agent_switchover(const Settings& s, const std::string& to, const std::string& from, const std::string& timeout_text) {
  Millis timeout = 2 * s.ttl;
  if (!timeout_text.empty()) {
    try {
      timeout = parse_duration(timeout_text);
    } catch (const std::invalid_argument& e) {
      throw SettingsError(std::string("--timeout: ") + e.what());
    }
  }
  LeaseStore store(store_options(s));
  store.connect(/*listen=*/true);
  SwitchoverRequest r;
  try {
    r = store.request_switchover(to, from);
  } catch (const SwitchoverRefused& e) {
    std::fprintf(stderr, "switchover: %s\n", e.what());
    return kExitFault;
  }
  if (!r.requested) {
    std::printf("switchover: %s already is master of %s at epoch %lld; nothing changes\n", r.target.c_str(),
                s.cluster.c_str(), static_cast<long long>(r.epoch));
    return kExitClean;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const MasterRow m = store.master();
    // Handed off: the target is master once it heard it, which its first renewal confirms.
    if (m.node == r.target && m.epoch > r.epoch && m.confirmed) {
      std::printf("switchover: %s is master of %s at epoch %lld, %.1f ms after the request\n", m.node.c_str(),
                  s.cluster.c_str(), static_cast<long long>(m.epoch), m.acquired_at_ms - r.requested_at_ms);
      return kExitClean;
    }
    const auto now = std::chrono::steady_clock::now();
    if (now >= deadline) {
      std::string who = m.node.empty() ? "there is no master now"
                        : !m.confirmed ? "the lease was handed to " + m.node + " at epoch " + std::to_string(m.epoch) +
                                             ", which has not renewed it"
                                       : "the master is " + m.node + " at epoch " + std::to_string(m.epoch);
      std::fprintf(stderr, "switchover: %s did not take the lease of %s within %s; %s\n", r.target.c_str(),
                   s.cluster.c_str(), format_duration(timeout).c_str(), who.c_str());
      return kExitFault;
    }
    // Every change of the lease row is notified; look again at each, and now and then.
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count();
    pollfd p{store.socket(), POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<long long>(left + 1, 100)));
    if (p.revents) store.take_notices();
  }
}

int apply_schema(const Settings& s) {
  LeaseStore store(store_options(s));
  store.connect(/*listen=*/false, /*check_schema=*/false);
  store.apply_schema();
  std::cout << "schema lease_agent applied (" << schema_files().size() << " files of sql/)\n";
  return kExitClean;
}

// The command line, run; main() flushes the log after it.
int run_command_line(int argc, char** argv) {
  CLI::App app{"lease-agent: failover agent for servers that share one PostgreSQL database"};
  app.set_version_flag("--version", std::string("lease-agent ") + LEASE_AGENT_VERSION);
  app.require_subcommand(0, 1);  // none is reported below, naming the commands

  FlagValues run_flags, status_flags, apply_flags, switchover_flags, check_flags;
  CLI::App* run = app.add_subcommand("run", "the daemon: register, heartbeat, contend, serve the role endpoints");
  add_setting_flags(*run, run_flags);

  CLI::App* status = app.add_subcommand("status", "one-shot view of every node of the cluster");
  add_setting_flags(*status, status_flags);
  bool status_json = false;
  status->add_flag("--json", status_json, "print JSON for scripts");
  std::string status_watch;
  status->add_option("--watch", status_watch, "redraw every DURATION until interrupted")->type_name("DURATION");

  CLI::App* schema = app.add_subcommand("schema", "the SQL of sql/, embedded at build time");
  schema->require_subcommand(0, 1);
  CLI::App* schema_apply = schema->add_subcommand("apply", "apply it to the database (idempotent)");
  add_setting_flags(*schema_apply, apply_flags);
  CLI::App* schema_print = schema->add_subcommand("print", "print it");

  CLI::App* switchover = app.add_subcommand("switchover", "ask the master to hand the lease to NODE");
  add_setting_flags(*switchover, switchover_flags);
  std::string switchover_to, switchover_from, switchover_timeout;
  CLI::Option* to_option =
      switchover->add_option("--to", switchover_to, "the live standby to hand over to (default: the next in line)")
          ->type_name("NODE");
  CLI::Option* from_option =
      switchover->add_option("--from", switchover_from, "refuse unless this node is the master now")
          ->type_name("NODE");
  switchover->add_option("--timeout", switchover_timeout, "how long to wait for NODE to take the lease (default: 2 x ttl)")
      ->type_name("DURATION");

  CLI::App* check = app.add_subcommand("check-config", "validate settings and print the effective ones");
  add_setting_flags(*check, check_flags);

  // The arguments are copied and argv scrubbed before anything else, so that `ps` shows a
  // --dsn's password for as short a time as can be; CLI11 parses the copy.
  const std::vector<std::string> args(argv, argv + argc);
  scrub_dsn_arguments(argc, argv);
  std::vector<char*> arg_pointers;
  for (const std::string& a : args) arg_pointers.push_back(const_cast<char*>(a.c_str()));
  arg_pointers.push_back(nullptr);
  try {
    app.parse(argc, arg_pointers.data());
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    // The command line did not parse, yet the error follows a --log-format json given on it.
    for (std::size_t i = 1; i < args.size(); ++i) {
      if (args[i] == "--log-format=json" || (args[i] == "--log-format" && i + 1 < args.size() && args[i + 1] == "json"))
        log_set_format("json");
      for (const char* name : {"run", "status", "switchover", "check-config", "schema"})
        if (g_command == "lease-agent" && args[i] == name) g_command = name;
      if (g_command == "schema" && args[i] == "apply") g_command = "schema apply";
    }
    return usage_error(mask_arguments_in(e.what(), args));
  }

  // Errors follow the log format asked for, even before the settings are valid.
  for (auto [sub, flags] : {std::pair<CLI::App*, FlagValues*>{run, &run_flags}, {status, &status_flags},
                            {schema_apply, &apply_flags}, {switchover, &switchover_flags}, {check, &check_flags}}) {
    if (*sub) {
      g_command = sub == schema_apply ? "schema apply" : sub->get_name();
      log_set_format(requested_log_format(*flags));
    }
  }

  try {
    if (*schema_print) {
      for (const auto& [name, text] : schema_files()) std::cout << "-- sql/" << name << "\n" << text << "\n";
      return kExitClean;
    }
    if (*check) {
      const Settings s = load_settings(check_flags);
      for (const auto& [name, value] : describe(s)) std::cout << name << " = " << one_line_value(value) << "\n";
      return kExitClean;
    }
    if (*switchover) {
      // A node name given is checked as the node setting is ("--to ''" is not "the next in line").
      for (const auto& [option, value] : {std::pair{to_option, &switchover_to}, {from_option, &switchover_from}}) {
        if (option->count() == 0) continue;
        const std::string problem = member_name_problem(*value);
        if (!problem.empty()) throw SettingsError(option->get_name() + ": " + problem);
      }
    }
    if (*switchover)
      return lease_agent_switchover(load_settings(switchover_flags), switchover_to, switchover_from, switchover_timeout);
    if (*status) return print_status(load_settings(status_flags), status_json, status_watch);
    if (*schema_apply) return apply_schema(load_settings(apply_flags));
    if (*schema) return usage_error("schema: apply or print is required");
    if (*run) {
      const Settings s = load_settings(run_flags);
      block_stop_signals();
      return run_daemon(s);
    }
  } catch (const SettingsError& e) {
    return usage_error(e.what());
  } catch (const StoreError& e) {
    log_command_error(g_command, e.what());
    return kExitFault;
  } catch (const std::exception& e) {
    log_command_error(g_command, e.what());
    return kExitFault;
  }
  return usage_error("a command is required: run, status, schema, switchover or check-config (see --help)");
}

}  // namespace

// libpq loads libldap, and Debian's libldap loads GnuTLS, whose load-time constructor
// initialises it in full (its crypto back ends, ASN.1 trees, the priority file): ~850 kB
// of every agent's resident memory (VmRSS with and without, 3 idle agents), for a
// library the agent uses only if a DSN names an ldap:// service, and libldap then calls
// gnutls_global_init() itself. This is GnuTLS's own switch (GNUTLS_SKIP_GLOBAL_INIT in
// <gnutls/gnutls.h>): the library calls this function, exported from the executable
// (CMakeLists.txt: --export-dynamic-symbol), before its implicit initialisation.
extern "C" int _gnutls_global_init_skip(void);
extern "C" int _gnutls_global_init_skip(void) { return 1; }

int main(int argc, char** argv) {
  const int status = run_command_line(argc, argv);
  // Log lines still queued for stderr (log.h) are written before the exit, but for a
  // bounded time: a process whose stderr is stalled must still exit.
  log_flush(std::chrono::milliseconds(1000));
  return status;
}
