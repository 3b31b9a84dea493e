// lease-agent: the command line. Reads top to bottom: arguments, settings, the command.
#include <cstdio>
#include <cstring>
#include <iostream>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "daemon.h"
#include "lease_store.h"
#include "log.h"
#include "settings.h"

using namespace lease_agent;

namespace {

int usage_error(const std::string& what) {
  std::fprintf(stderr, "lease-agent: %s\n", what.c_str());
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

StoreOptions store_options(const Settings& s) {
  return StoreOptions{s.dsn, s.cluster, s.node, new_incarnation(), s.address, s.ttl, s.renew};
}

int print_status(const Settings& s, bool json) {
  LeaseStore store(store_options(s));
  store.connect(false);
  const ClusterStatus cs = store.cluster_status();
  if (json) {
    nlohmann::ordered_json j;
    j["cluster"] = cs.cluster;
    j["master"] = cs.holder.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(cs.holder);
    j["epoch"] = cs.epoch;
    j["lease_left_ms"] = cs.lease_left_ms;
    j["nodes"] = nlohmann::ordered_json::array();
    for (const NodeStatus& n : cs.nodes)
      j["nodes"].push_back({{"node", n.node},
                            {"address", n.address},
                            {"role", n.role},
                            {"registered_at", n.registered_at},
                            {"heartbeat_at", n.heartbeat_at}});
    std::cout << j.dump(2) << "\n";
    return kExitClean;
  }
  std::cout << "cluster " << cs.cluster << ": ";
  if (cs.holder.empty())
    std::cout << "no master (epoch " << cs.epoch << ")\n";
  else
    std::cout << "master " << cs.holder << ", epoch " << cs.epoch << ", lease " << cs.lease_left_ms
              << "ms left\n";
  std::printf("%-20s %-22s %-8s %-25s %-25s\n", "NODE", "ADDRESS", "ROLE", "REGISTERED", "LAST HEARTBEAT");
  for (const NodeStatus& n : cs.nodes)
    std::printf("%-20s %-22s %-8s %-25s %-25s\n", n.node.c_str(), n.address.empty() ? "-" : n.address.c_str(),
                n.role.c_str(), n.registered_at.c_str(), n.heartbeat_at.c_str());
  return kExitClean;
}

int apply_schema(const Settings& s) {
  LeaseStore store(store_options(s));
  store.connect(/*listen=*/false, /*check_schema=*/false);
  store.apply_schema();
  std::cout << "schema lease_agent applied (" << schema_files().size() << " files of sql/)\n";
  return kExitClean;
}

}  // namespace

int main(int argc, char** argv) {
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

  CLI::App* schema = app.add_subcommand("schema", "the SQL of sql/, embedded at build time");
  schema->require_subcommand(0, 1);
  CLI::App* schema_apply = schema->add_subcommand("apply", "apply it to the database (idempotent)");
  add_setting_flags(*schema_apply, apply_flags);
  CLI::App* schema_print = schema->add_subcommand("print", "print it");

  CLI::App* switchover = app.add_subcommand("switchover", "ask the master to hand the lease to NODE");
  add_setting_flags(*switchover, switchover_flags);
  std::string switchover_to;
  switchover->add_option("--to", switchover_to, "the live standby to hand over to")->required();

  CLI::App* check = app.add_subcommand("check-config", "validate settings and print the effective ones");
  add_setting_flags(*check, check_flags);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    return usage_error(e.what());
  }
  scrub_dsn_arguments(argc, argv);

  try {
    if (*schema_print) {
      for (const auto& [name, text] : schema_files()) std::cout << "-- sql/" << name << "\n" << text << "\n";
      return kExitClean;
    }
    if (*check) {
      const Settings s = load_settings(check_flags);
      for (const auto& [name, value] : describe(s)) std::cout << name << " = " << value << "\n";
      return kExitClean;
    }
    if (*switchover) {
      load_settings(switchover_flags);
      return usage_error("switchover: not available in this version yet");
    }
    if (*status) return print_status(load_settings(status_flags), status_json);
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
    std::fprintf(stderr, "lease-agent: %s\n", e.what());
    return kExitFault;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lease-agent: %s\n", e.what());
    return kExitFault;
  }
  return usage_error("a command is required: run, status, schema, switchover or check-config (see --help)");
}
