// The daemon of `lease-agent run`: the election wired to the store, the clock, the
// role endpoints, the hooks and the signals.
#pragma once

#include "settings.h"

namespace lease_agent {

// Exit statuses of INTERFACE.md.
constexpr int kExitClean = 0;
constexpr int kExitUsage = 2;
constexpr int kExitFault = 3;

// Runs until SIGTERM/SIGINT (returns kExitClean) or a fault it cannot wait out
// (returns kExitFault, or kExitUsage when the http address cannot be bound).
// REQUIRES: SIGTERM, SIGINT and SIGHUP are blocked in the calling thread and
// every thread it has started (block_stop_signals()).
int run_daemon(const Settings& settings);

// Blocks SIGTERM, SIGINT and SIGHUP in the calling thread (and so in the
// threads it starts afterwards) and ignores SIGPIPE.
void block_stop_signals();

// A random identity for this process start: 16 hex digits.
std::string new_incarnation();

}  // namespace lease_agent
