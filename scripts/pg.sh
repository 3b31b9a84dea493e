#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL for the tests and the demo: one server,
# or a replicated pair (a primary and a streaming replica) that can fail over.
#
#   scripts/pg.sh start [DIR]   initialise and start a server in DIR (a new
#                               temporary directory when DIR is omitted);
#                               prints the environment to use, also written
#                               to DIR/env for `. DIR/env`
#   scripts/pg.sh stop DIR      stop the server (fast shutdown), remove DIR;
#                               of a pair: both servers
#   scripts/pg.sh restart DIR [fast|immediate]
#                               restart the server (for fault injection); of a
#                               pair: the current primary
#   scripts/pg.sh status DIR    exit 0 when the server of DIR is running; of a
#                               pair: the current primary (the replica's state
#                               is printed too)
#
#   scripts/pg.sh start-pair DIR [async|sync]
#       a primary and a streaming replica (pg_basebackup -R, a physical
#       replication slot per replica), each on a free port of 127.0.0.1. DIR
#       must be new or empty; an existing pair in DIR is started again. Prints
#       the environment like `start` (and writes DIR/env).
#       async (default): synchronous_commit = off on both, no synchronous
#         standby: a commit is acknowledged before it is flushed or sent, so a
#         crash of the primary followed by a failover loses acknowledged
#         commits (what the fault suite's pg-failover needs).
#       sync: synchronous_commit = on and synchronous_standby_names names the
#         replica: a commit waits until the replica has flushed it. After a
#         failover the new primary runs without a synchronous standby until the
#         old one is rebuilt and streams again (then commits wait again).
#   scripts/pg.sh failover DIR [immediate|fast] [--no-rebuild]
#       stops the current primary (immediate, the default: a crash, commits not
#       yet replicated are lost in async mode; fast: a planned switchover, the
#       shutdown waits until the replica has every WAL record), promotes the
#       replica (pg_ctl promote -w), then rebuilds the old primary as a replica
#       of the new one (a fresh pg_basebackup) unless --no-rebuild. Prints
#       key=value lines on stdout: primary=a|b, port=P (of the new primary),
#       stopped_at=NS, promoted_at=NS. Both NS are CLOCK_MONOTONIC nanoseconds:
#       when the stop returned, and when pg_ctl promote -w returned (the new
#       primary accepted writes at or before then; pg_ctl polls every 100 ms).
#       The pair survives any number of failovers in a row.
#   scripts/pg.sh rebuild DIR   rebuild the replica from the current primary
#       (after `failover --no-rebuild`, or a replica that broke); waits until
#       it streams (and, in sync mode, is the synchronous standby again)
#
# A pair's DIR holds:
#   DIR/a/, DIR/b/      the two servers: data/ (PGDATA), postgres.log, port
#                       (its port, fixed for the pair's life), its Unix socket
#   DIR/primary         `a` or `b`: which one is primary now
#   DIR/data            a symlink to the primary's data directory, so that
#                       DIR/data/postmaster.pid gives the primary's postmaster
#                       pid (its first line), as for a single server
#   DIR/pair            `async` or `sync` (its presence marks a pair)
#   DIR/promoted_at, DIR/stopped_at
#                       the last failover's times (as printed), one number each
#   DIR/failovers.log   one line per failover
#   DIR/env             LEASE_AGENT_TEST_DSN (multi-host: host=127.0.0.1,127.0.0.1
#                       port=PA,PB ... target_session_attrs=read-write, which
#                       finds the primary whichever it is), LEASE_AGENT_TEST_PW_DSN
#                       likewise, LEASE_AGENT_TEST_PGDIR=DIR,
#                       LEASE_AGENT_TEST_PAIR_PORTS=PA,PB (of a and b),
#                       LEASE_AGENT_TEST_PAIR_MODE, PGHOST/PGPORT as lists and
#                       PGTARGETSESSIONATTRS=read-write. None of it changes at a
#                       failover.
#
# The server listens on 127.0.0.1 on a free port and on a Unix socket in DIR.
# It has a database `lease_agent_test`, the superuser `postgres` (trusted,
# no password) and the role `lease_agent_pw`, which must log in over TCP with
# the password `pw-secret-42` (scram-sha-256), for the tests of
# authentication (on a pair: made on the primary, replicated). fsync is off:
# never keep data here. A pair's servers also run with wal_level = replica,
# hot_standby = on and track_commit_timestamp = on.
#
# LEASE_AGENT_PG_CONF, when set, holds extra postgresql.conf lines that `start`
# appends verbatim to a new single server's configuration (not a pair's), e.g.
#   LEASE_AGENT_PG_CONF="shared_preload_libraries = 'pg_stat_statements'
#   max_connections = 700"
# (scripts/bench.sh does so). A later line overrides an earlier one.
#
# Run as root, the server runs as the `postgres` user; run as anyone else, as
# that user. Only the environment lines (and failover's key=value lines) go
# to standard output, so
#   eval "$(scripts/pg.sh start /tmp/pg)"
# works; progress and errors go to standard error. Every wait is bounded and
# fails with one line naming what did not happen. Set PGBIN to use other
# server binaries than PostgreSQL 15's.
set -euo pipefail

readonly PW_ROLE=lease_agent_pw
readonly PW_PASSWORD=pw-secret-42
readonly DATABASE=lease_agent_test
readonly MARKER=.lease-agent-pg   # marks a directory this script created: only those are removed
readonly PAIR_FILE=pair           # DIR/pair (async or sync) marks a replicated pair
readonly WAIT_S=60                # the bound of every wait for a server

say() { echo "pg.sh: $*" >&2; }
die() { echo "pg.sh: error: $*" >&2; exit 1; }

usage() {
  echo "usage: $0 start [DIR] | stop DIR | restart DIR [fast|immediate] | status DIR" \
    "| start-pair DIR [async|sync] | failover DIR [immediate|fast] [--no-rebuild] | rebuild DIR" >&2
  exit 2
}

find_bindir() {
  local dir
  for dir in "${PGBIN:-}" /usr/lib/postgresql/15/bin; do
    if [ -n "$dir" ] && [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return
    fi
  done
  if command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir)
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then
      echo "$dir"
      return
    fi
  fi
  die "PostgreSQL server binaries (initdb, pg_ctl) not found in ${PGBIN:-/usr/lib/postgresql/15/bin}; install them (apt-get install postgresql-15) or set PGBIN"
}

# Runs a command as the user that owns the server (from /, which that user
# may enter when the current directory is not).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then
    if command -v runuser >/dev/null 2>&1; then
      (cd / && exec runuser -u postgres -- "$@")
    else
      (cd / && exec su -s /bin/bash postgres -c "$(printf '%q ' "$@")")
    fi
  else
    "$@"
  fi
}

# A TCP port on 127.0.0.1 that nothing listens on now, chosen at random below
# the usual ephemeral range (32768 and up) so that outgoing connections do not
# take it in the meantime.
free_port() {
  local port
  for _ in $(seq 1 100); do
    port=$((20000 + RANDOM % 12000))
    if command -v python3 >/dev/null 2>&1; then
      if python3 - "$port" <<'EOF' 2>/dev/null; then
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.close()
EOF
        echo "$port"
        return
      fi
    elif ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return
    fi
  done
  die "no free TCP port found on 127.0.0.1 after 100 tries"
}

env_lines() {
  local dir=$1 port=$2
  cat <<EOF
export LEASE_AGENT_TEST_DSN="host=127.0.0.1 port=$port dbname=$DATABASE user=postgres"
export LEASE_AGENT_TEST_PW_DSN="host=127.0.0.1 port=$port dbname=$DATABASE user=$PW_ROLE password=$PW_PASSWORD"
export LEASE_AGENT_TEST_PGDIR="$dir"
export PGHOST=127.0.0.1
export PGPORT=$port
export PGDATABASE=$DATABASE
export PGUSER=postgres
EOF
}

is_running() {
  local dir=$1
  [ -f "$dir/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
}

configured_port() {
  sed -n 's/^port = \([0-9]*\)$/\1/p' "$1/data/lease_agent_test.conf" 2>/dev/null | tail -n 1
}

wait_ready() {
  local dir=$1 port=$2
  for _ in $(seq 1 100); do
    if "$BIN/pg_isready" -q -h 127.0.0.1 -p "$port" -d postgres -t 1; then
      return 0
    fi
    sleep 0.1
  done
  die "server in $dir is not ready after 10s; see $dir/postgres.log"
}

write_config() {
  local dir=$1 port=$2
  as_pg tee "$dir/data/lease_agent_test.conf" >/dev/null <<EOF
# Written by scripts/pg.sh: a throwaway server for tests.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_connections = off
# A shutdown waits for connections still in their start-up until this (default 60s);
# see write_node_config.
authentication_timeout = '5s'
${LEASE_AGENT_PG_CONF:+# From LEASE_AGENT_PG_CONF:
$LEASE_AGENT_PG_CONF}
EOF
}

start_server() {
  local dir=$1 port=$2
  as_pg "$BIN/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 30 start >/dev/null
}

cmd_start() {
  local dir=${1:-}
  if [ -z "$dir" ]; then
    dir=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-pg.XXXXXX")
    touch "$dir/$MARKER"
  fi
  dir=$(realpath -m -- "$dir")
  [ ! -f "$dir/$PAIR_FILE" ] || die "$dir holds a replicated pair: start it with: $0 start-pair $dir"

  # Already set up: start it if needed and say where it is.
  if [ -f "$dir/data/PG_VERSION" ]; then
    local port
    port=$(configured_port "$dir")
    [ -n "$port" ] || die "$dir/data exists but was not set up by pg.sh"
    if ! is_running "$dir"; then
      say "starting the existing server in $dir"
      start_server "$dir" "$port" || die "could not start the server in $dir; see $dir/postgres.log"
    fi
    wait_ready "$dir" "$port"
    env_lines "$dir" "$port" | tee "$dir/env"
    return
  fi

  if [ -e "$dir" ] && [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -print -quit)" ]; then
    die "$dir exists and is not empty"
  fi
  # The socket path DIR/.s.PGSQL.NNNNN must fit in sun_path (107 bytes).
  [ ${#dir} -le 90 ] || die "$dir is too long a path for a Unix socket directory"
  mkdir -p "$dir"
  touch "$dir/$MARKER"
  chmod 700 "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "user postgres does not exist (install postgresql-15)"
    chown postgres: "$dir"
    as_pg test -w "$dir" -a -x "$dir" ||
      die "$dir is not reachable by user postgres (are its parent directories searchable?)"
  fi

  say "initdb in $dir/data"
  as_pg "$BIN/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$dir/initdb.log" 2>&1 || die "initdb failed; see $dir/initdb.log"

  as_pg tee "$dir/data/pg_hba.conf" >/dev/null <<EOF
# Written by scripts/pg.sh: the password role over TCP, everyone else trusted.
# TYPE DATABASE USER           ADDRESS      METHOD
host   all      $PW_ROLE 127.0.0.1/32 scram-sha-256
host   all      all            127.0.0.1/32 trust
local  all      all                         trust
EOF
  echo "include 'lease_agent_test.conf'" | as_pg tee -a "$dir/data/postgresql.conf" >/dev/null

  # The port is free when chosen but may be taken before the server binds
  # it: try a few.
  local port started=
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    write_config "$dir" "$port"
    if start_server "$dir" "$port"; then
      started=1
      break
    fi
    grep -q "could not bind\|Address already in use" "$dir/postgres.log" 2>/dev/null ||
      die "could not start the server in $dir; see $dir/postgres.log"
    say "port $port was taken, trying another"
  done
  [ -n "$started" ] || die "could not start the server in $dir (no free port); see $dir/postgres.log"
  wait_ready "$dir" "$port"

  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE $PW_ROLE LOGIN PASSWORD '$PW_PASSWORD'" \
    -c "CREATE DATABASE $DATABASE OWNER postgres" >/dev/null ||
    die "could not create the role and database in $dir"

  env_lines "$dir" "$port" >"$dir/env"
  say "PostgreSQL $(cat "$dir/data/PG_VERSION") running on 127.0.0.1:$port, data in $dir; stop with: $0 stop $dir"
  cat "$dir/env"
}

cmd_stop() {
  local dir=${1:-}
  [ -n "$dir" ] || usage
  dir=$(realpath -m -- "$dir")
  if [ ! -e "$dir" ]; then
    say "$dir does not exist: nothing to stop"
    return
  fi
  [ -f "$dir/$MARKER" ] || die "$dir was not created by pg.sh; not touching it"
  if [ -f "$dir/$PAIR_FILE" ]; then
    # Both servers; the replica first, so that the primary's fast shutdown does
    # not wait for it (and neither is left running if the other fails).
    # (A start-pair that failed half-way may have written no DIR/primary yet.)
    local first=b
    [ "$(cat "$dir/primary" 2>/dev/null || true)" != b ] || first=a
    stop_node "$dir" "$first" || die "could not stop the server in $dir/$first"
    stop_node "$dir" "$(other_node "$first")" || die "could not stop the server in $dir/$(other_node "$first")"
    rm -rf -- "$dir"
    say "stopped and removed the pair in $dir"
    return
  fi
  if [ -f "$dir/data/postmaster.pid" ]; then
    # A fault-injection run stopped mid-way may have left the server SIGSTOPped
    # (pg-freeze): resume it first, or it could not act on the shutdown.
    local pm
    pm=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
    if [ -n "$pm" ] && [ "$pm" -gt 1 ] 2>/dev/null; then
      pkill -CONT -P "$pm" 2>/dev/null || true
      kill -CONT "$pm" 2>/dev/null || true
    fi
    if ! as_pg "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
      if is_running "$dir"; then
        say "fast shutdown failed; immediate shutdown"
        as_pg "$BIN/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null ||
          die "could not stop the server in $dir"
      fi
    fi
  fi
  rm -rf -- "$dir"
  say "stopped and removed $dir"
}

cmd_restart() {
  local dir=${1:-} how=${2:-fast}
  [ -n "$dir" ] || usage
  case "$how" in fast|immediate) ;; *) usage ;; esac
  dir=$(realpath -m -- "$dir")
  [ -f "$dir/$MARKER" ] || die "$dir was not created by pg.sh; not touching it"
  if [ -f "$dir/$PAIR_FILE" ]; then
    # The primary; its replica reconnects by itself (wal_retrieve_retry_interval).
    local p
    p=$(current_primary "$dir")
    as_pg "$BIN/pg_ctl" -D "$dir/$p/data" -m "$how" -w -t 60 -l "$dir/$p/postgres.log" restart >/dev/null ||
      die "could not restart the primary $dir/$p"
    say "restarted ($how) the primary $dir/$p"
    return
  fi
  # pg_ctl restart keeps the options the server was started with (postmaster.opts).
  as_pg "$BIN/pg_ctl" -D "$dir/data" -m "$how" -w -t 60 -l "$dir/postgres.log" restart >/dev/null ||
    die "could not restart the server in $dir"
  say "restarted ($how) the server in $dir"
}

cmd_status() {
  local dir=${1:-}
  [ -n "$dir" ] || usage
  dir=$(realpath -m -- "$dir")
  if [ -f "$dir/$PAIR_FILE" ]; then
    pair_status "$dir"
    return
  fi
  if is_running "$dir"; then
    say "running on 127.0.0.1:$(configured_port "$dir") ($dir)"
  else
    say "not running ($dir)"
    return 1
  fi
}

# ---------------------------------------------------------------------------
# A replicated pair (see the top of this file for DIR's layout).

other_node() {
  if [ "$1" = a ]; then echo b; else echo a; fi
}

current_primary() {
  local p
  p=$(cat "$1/primary" 2>/dev/null || true)
  case "$p" in
    a|b) echo "$p" ;;
    *) die "$1/primary does not name a or b: not a pair made by pg.sh" ;;
  esac
}

pair_mode() {
  local m
  m=$(cat "$1/$PAIR_FILE" 2>/dev/null || true)
  case "$m" in
    async|sync) echo "$m" ;;
    *) die "$1/$PAIR_FILE does not say async or sync" ;;
  esac
}

node_port() {
  local port
  port=$(cat "$1/$2/port" 2>/dev/null || true)
  [ -n "$port" ] || die "$1/$2/port is missing"
  echo "$port"
}

node_running() {
  local dir=$1 node=$2
  [ -f "$dir/$node/data/postmaster.pid" ] && as_pg "$BIN/pg_ctl" -D "$dir/$node/data" status >/dev/null 2>&1
}

# CLOCK_MONOTONIC in nanoseconds, the clock every process of the machine shares
# (the benchmark and the fault suite time against it). perl comes with
# postgresql-common; python3 as a fallback.
mono_ns() {
  if perl -MTime::HiRes=clock_gettime,CLOCK_MONOTONIC \
    -e 'printf "%.0f\n", clock_gettime(CLOCK_MONOTONIC) * 1e9' 2>/dev/null; then
    return
  fi
  python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC))' 2>/dev/null ||
    die "cannot read CLOCK_MONOTONIC: neither perl's Time::HiRes nor python3 works"
}

# One query as the superuser on 127.0.0.1:PORT, unaligned, tuples only. A
# frozen server must not hang us: statement and connection are bounded.
sql_at() {
  local port=$1 query=$2
  PGCONNECT_TIMEOUT=5 PGOPTIONS="-c statement_timeout=10000" \
    as_pg "$BIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres -c "$query"
}

# Resumes a server left SIGSTOPped (pg-freeze of a run stopped mid-way), so
# that it can act on a shutdown.
resume_server() {
  local pidfile=$1/postmaster.pid pm
  [ -f "$pidfile" ] || return 0
  pm=$(head -n 1 "$pidfile" 2>/dev/null || true)
  if [ -n "$pm" ] && [ "$pm" -gt 1 ] 2>/dev/null; then
    pkill -CONT -P "$pm" 2>/dev/null || true
    kill -CONT "$pm" 2>/dev/null || true
  fi
}

# Stops one server of a pair if it runs (fast, else immediate).
stop_node() {
  local dir=$1 node=$2 data=$1/$2/data
  [ -f "$data/postmaster.pid" ] || return 0
  resume_server "$data"
  as_pg "$BIN/pg_ctl" -D "$data" -m fast -w -t 30 stop >/dev/null 2>&1 && return 0
  node_running "$dir" "$node" || return 0
  say "fast shutdown of $data failed; immediate shutdown"
  as_pg "$BIN/pg_ctl" -D "$data" -m immediate -w -t 30 stop >/dev/null
}

start_node() {
  local dir=$1 node=$2
  as_pg "$BIN/pg_ctl" -D "$dir/$node/data" -l "$dir/$node/postgres.log" -w -t "$WAIT_S" start >/dev/null
}

# The configuration of one server of a pair, DIR/N/data/lease_agent_test.conf
# (included by postgresql.conf; a base backup copies it, so a rebuilt server's
# is written again). sync_names: synchronous_standby_names, on the primary of
# a sync pair once its replica streams.
write_node_config() {
  local dir=$1 node=$2 port=$3 sync_names=${4:-} commit=off
  [ "$(pair_mode "$dir")" = sync ] && commit=on
  as_pg tee "$dir/$node/data/lease_agent_test.conf" >/dev/null <<CONF
# Written by scripts/pg.sh: server $node of a replicated pair for tests.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/$node'
max_connections = 300
fsync = off
synchronous_commit = $commit
full_page_writes = off
password_encryption = 'scram-sha-256'
log_min_messages = warning
log_connections = off
wal_level = replica
hot_standby = on
track_commit_timestamp = on
max_wal_senders = 10
max_replication_slots = 10
# A replica whose primary restarted reconnects within this (default 5s).
wal_retrieve_retry_interval = '100ms'
wal_receiver_status_interval = '1s'
synchronous_standby_names = '$sync_names'
# A fast or immediate shutdown of PostgreSQL 15 waits for every connection still in its
# start-up (the postmaster does not signal them, and stops accepting others meanwhile)
# until authentication_timeout, default 60s: one client cut off in the middle of its
# handshake held a failover of the fault suite for a minute. Bounded here at 5s.
authentication_timeout = '5s'
CONF
}

# Polls QUERY on PORT until it prints `t`, at most WAIT_S seconds.
wait_for_sql() {
  local port=$1 query=$2 what=$3
  for _ in $(seq 1 $((WAIT_S * 10))); do
    if [ "$(sql_at "$port" "$query" 2>/dev/null || true)" = t ]; then
      return 0
    fi
    sleep 0.1
  done
  die "timed out after ${WAIT_S}s waiting for $what"
}

# Until REPLICA streams from PRIMARY (and, in sync mode, is its synchronous
# standby: then synchronous_standby_names is set on the primary first).
wait_streaming() {
  local dir=$1 primary=$2 replica=$3 pport
  pport=$(node_port "$dir" "$primary")
  wait_for_sql "$pport" \
    "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = '$replica' AND state = 'streaming'" \
    "replica $dir/$replica to stream from $dir/$primary (see $dir/$replica/postgres.log)"
  if [ "$(pair_mode "$dir")" = sync ]; then
    write_node_config "$dir" "$primary" "$pport" "$replica"
    as_pg "$BIN/pg_ctl" -D "$dir/$primary/data" reload >/dev/null || die "could not reload $dir/$primary"
    wait_for_sql "$pport" \
      "SELECT count(*) = 1 FROM pg_stat_replication WHERE application_name = '$replica' AND sync_state = 'sync'" \
      "replica $dir/$replica to be the synchronous standby of $dir/$primary"
  fi
}

# Makes NODE a fresh streaming replica of PRIMARY: a base backup with its own
# replication slot (so the primary keeps the WAL it has not received), started
# on its own port. A fresh copy rather than pg_rewind: with fsync and
# full_page_writes off, and after an immediate stop, pg_rewind cannot be
# trusted; the pair is small.
make_replica() {
  local dir=$1 node=$2 primary=$3 pport port slot="pair_$2"
  pport=$(node_port "$dir" "$primary")
  port=$(node_port "$dir" "$node")
  stop_node "$dir" "$node" || die "could not stop $dir/$node"
  rm -rf -- "$dir/$node/data"
  # A slot of that name left from an earlier life of the pair: drop it (its
  # walsender may take a moment to go).
  wait_for_sql "$pport" \
    "SELECT NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot' AND active)" \
    "the replication slot $slot on $dir/$primary to become inactive"
  sql_at "$pport" "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$slot'" \
    >/dev/null || die "could not drop the replication slot $slot on $dir/$primary"
  as_pg timeout 120 "$BIN/pg_basebackup" -h 127.0.0.1 -p "$pport" -U postgres -D "$dir/$node/data" \
    -R -X stream -C -S "$slot" --checkpoint=fast --no-sync >"$dir/$node/basebackup.log" 2>&1 ||
    die "pg_basebackup of $dir/$node from $dir/$primary failed; see $dir/$node/basebackup.log"
  # -R appended its primary_conninfo to the copy of the primary's
  # postgresql.auto.conf (which holds the lines of its own time as a replica):
  # keep one of each, with an application_name that names this server for
  # pg_stat_replication and synchronous_standby_names.
  local auto=$dir/$node/data/postgresql.auto.conf
  {
    grep -v -E '^[[:space:]]*(primary_conninfo|primary_slot_name)[[:space:]]*=' "$auto" || true
    echo "primary_conninfo = 'host=127.0.0.1 port=$pport user=postgres application_name=$node'"
    echo "primary_slot_name = '$slot'"
  } | as_pg tee "$auto.new" >/dev/null
  as_pg mv -f "$auto.new" "$auto"
  [ -f "$dir/$node/data/standby.signal" ] || die "pg_basebackup -R wrote no standby.signal in $dir/$node/data"
  write_node_config "$dir" "$node" "$port"
  start_node "$dir" "$node" || die "could not start the replica $dir/$node on port $port; see $dir/$node/postgres.log"
  wait_ready "$dir/$node" "$port"
  wait_streaming "$dir" "$primary" "$node"
}

# Records NODE as the primary: DIR/primary and the DIR/data symlink, each
# replaced in one rename so that a reader never sees them missing.
set_primary() {
  local dir=$1 node=$2
  echo "$node" >"$dir/primary.new"
  mv -f "$dir/primary.new" "$dir/primary"
  ln -sfn "$node/data" "$dir/data.new"
  mv -fT "$dir/data.new" "$dir/data"
}

pair_env_lines() {
  local dir=$1 pa pb
  pa=$(node_port "$dir" a)
  pb=$(node_port "$dir" b)
  cat <<ENV
export LEASE_AGENT_TEST_DSN="host=127.0.0.1,127.0.0.1 port=$pa,$pb dbname=$DATABASE user=postgres target_session_attrs=read-write"
export LEASE_AGENT_TEST_PW_DSN="host=127.0.0.1,127.0.0.1 port=$pa,$pb dbname=$DATABASE user=$PW_ROLE password=$PW_PASSWORD target_session_attrs=read-write"
export LEASE_AGENT_TEST_PGDIR="$dir"
export LEASE_AGENT_TEST_PAIR_PORTS=$pa,$pb
export LEASE_AGENT_TEST_PAIR_MODE=$(pair_mode "$dir")
export PGHOST=127.0.0.1,127.0.0.1
export PGPORT=$pa,$pb
export PGTARGETSESSIONATTRS=read-write
export PGDATABASE=$DATABASE
export PGUSER=postgres
ENV
}

cmd_start_pair() {
  local dir=${1:-} mode=${2:-async}
  if [ -z "$dir" ] || [ $# -gt 2 ]; then usage; fi
  case "$mode" in async|sync) ;; *) usage ;; esac
  [ -x "$BIN/pg_basebackup" ] || die "$BIN/pg_basebackup not found; install postgresql-15"
  dir=$(realpath -m -- "$dir")

  # An existing pair: start what is stopped, the primary first.
  if [ -f "$dir/$PAIR_FILE" ]; then
    [ "$(pair_mode "$dir")" = "$mode" ] || die "$dir holds a pair in $(pair_mode "$dir") mode, not $mode"
    local p r
    p=$(current_primary "$dir")
    r=$(other_node "$p")
    if ! node_running "$dir" "$p"; then
      say "starting the primary $dir/$p"
      start_node "$dir" "$p" || die "could not start $dir/$p; see $dir/$p/postgres.log"
    fi
    wait_ready "$dir/$p" "$(node_port "$dir" "$p")"
    if ! node_running "$dir" "$r"; then
      say "starting the replica $dir/$r"
      start_node "$dir" "$r" || make_replica "$dir" "$r" "$p"
    fi
    wait_streaming "$dir" "$p" "$r"
    pair_env_lines "$dir" | tee "$dir/env"
    return
  fi

  if [ -e "$dir" ] && [ -n "$(find "$dir" -mindepth 1 -maxdepth 1 ! -name "$MARKER" -print -quit)" ]; then
    die "$dir exists and is not empty"
  fi
  # The socket path DIR/N/.s.PGSQL.NNNNN must fit in sun_path (107 bytes).
  [ ${#dir} -le 88 ] || die "$dir is too long a path for a Unix socket directory"
  mkdir -p "$dir/a" "$dir/b"
  touch "$dir/$MARKER"
  echo "$mode" >"$dir/$PAIR_FILE"
  chmod 700 "$dir" "$dir/a" "$dir/b"
  if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || die "user postgres does not exist (install postgresql-15)"
    chown postgres: "$dir" "$dir/a" "$dir/b"
    as_pg test -w "$dir" -a -x "$dir" ||
      die "$dir is not reachable by user postgres (are its parent directories searchable?)"
  fi

  say "initdb in $dir/a/data"
  as_pg "$BIN/initdb" -D "$dir/a/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
    >"$dir/a/initdb.log" 2>&1 || die "initdb failed; see $dir/a/initdb.log"
  as_pg tee "$dir/a/data/pg_hba.conf" >/dev/null <<HBA
# Written by scripts/pg.sh: the password role over TCP, everyone else trusted,
# replication connections too (the other server of the pair, pg_basebackup).
# TYPE DATABASE    USER     ADDRESS      METHOD
host   all         $PW_ROLE 127.0.0.1/32 scram-sha-256
host   all         all      127.0.0.1/32 trust
host   replication all      127.0.0.1/32 trust
local  all         all                   trust
local  replication all                   trust
HBA
  echo "include 'lease_agent_test.conf'" | as_pg tee -a "$dir/a/data/postgresql.conf" >/dev/null

  # Each port is free when chosen but may be taken before the server binds it:
  # try a few. Node b only needs a port here; it starts as a replica below.
  local port started=
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    write_node_config "$dir" a "$port"
    if start_node "$dir" a; then
      started=1
      break
    fi
    grep -q "could not bind\|Address already in use" "$dir/a/postgres.log" 2>/dev/null ||
      die "could not start the server in $dir/a; see $dir/a/postgres.log"
    say "port $port was taken, trying another"
  done
  [ -n "$started" ] || die "could not start the server in $dir/a (no free port); see $dir/a/postgres.log"
  echo "$port" >"$dir/a/port"
  wait_ready "$dir/a" "$port"
  set_primary "$dir" a

  as_pg "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/a" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE $PW_ROLE LOGIN PASSWORD '$PW_PASSWORD'" \
    -c "CREATE DATABASE $DATABASE OWNER postgres" >/dev/null ||
    die "could not create the role and database in $dir/a"

  local bport
  for _ in 1 2 3 4 5; do
    bport=$(free_port)
    [ "$bport" != "$port" ] && break
  done
  echo "$bport" >"$dir/b/port"
  make_replica "$dir" b a

  pair_env_lines "$dir" >"$dir/env"
  say "PostgreSQL $(cat "$dir/a/data/PG_VERSION") pair ($mode): primary a on 127.0.0.1:$port, replica b on" \
    "127.0.0.1:$bport, data in $dir; stop with: $0 stop $dir"
  cat "$dir/env"
}

cmd_failover() {
  local dir=${1:-} how=immediate rebuild=1 arg
  [ -n "$dir" ] || usage
  shift
  for arg in "$@"; do
    case "$arg" in
      immediate|fast) how=$arg ;;
      --no-rebuild) rebuild= ;;
      *) usage ;;
    esac
  done
  dir=$(realpath -m -- "$dir")
  [ -f "$dir/$MARKER" ] || die "$dir was not created by pg.sh; not touching it"
  [ -f "$dir/$PAIR_FILE" ] || die "$dir is not a pair (made by: $0 start-pair DIR)"
  local old new oport nport
  old=$(current_primary "$dir")
  new=$(other_node "$old")
  oport=$(node_port "$dir" "$old")
  nport=$(node_port "$dir" "$new")
  # Only a running replica can take over; checked before the primary goes.
  [ "$(sql_at "$nport" "SELECT pg_is_in_recovery()" 2>/dev/null || true)" = t ] ||
    die "the replica $dir/$new (port $nport) is not running as a replica; rebuild it first: $0 rebuild $dir"

  resume_server "$dir/$old/data"
  # A fast shutdown waits until the walsenders have sent every WAL record up to
  # the shutdown checkpoint and the replica confirmed it; an immediate one is a
  # crash: what was not yet sent is lost to the replica.
  as_pg "$BIN/pg_ctl" -D "$dir/$old/data" -m "$how" -w -t "$WAIT_S" stop >/dev/null ||
    die "could not stop the primary $dir/$old ($how)"
  local stopped_at promoted_at
  stopped_at=$(mono_ns)
  as_pg "$BIN/pg_ctl" -D "$dir/$new/data" -w -t "$WAIT_S" promote >/dev/null ||
    die "could not promote $dir/$new within ${WAIT_S}s; see $dir/$new/postgres.log"
  promoted_at=$(mono_ns)
  set_primary "$dir" "$new"
  echo "$stopped_at" >"$dir/stopped_at"
  echo "$promoted_at" >"$dir/promoted_at"
  echo "$how $old->$new port=$nport stopped_at=$stopped_at promoted_at=$promoted_at" >>"$dir/failovers.log"
  printf 'primary=%s\nport=%s\nstopped_at=%s\npromoted_at=%s\n' "$new" "$nport" "$stopped_at" "$promoted_at"
  say "failover ($how): $dir/$new (127.0.0.1:$nport) is primary, $dir/$old (127.0.0.1:$oport) stopped"
  if [ -n "$rebuild" ]; then
    make_replica "$dir" "$old" "$new"
    say "rebuilt $dir/$old as a replica of $dir/$new"
  fi
}

cmd_rebuild() {
  local dir=${1:-}
  if [ -z "$dir" ] || [ $# -ne 1 ]; then usage; fi
  dir=$(realpath -m -- "$dir")
  [ -f "$dir/$MARKER" ] || die "$dir was not created by pg.sh; not touching it"
  [ -f "$dir/$PAIR_FILE" ] || die "$dir is not a pair (made by: $0 start-pair DIR)"
  local p r
  p=$(current_primary "$dir")
  r=$(other_node "$p")
  node_running "$dir" "$p" || die "the primary $dir/$p is not running"
  make_replica "$dir" "$r" "$p"
  say "rebuilt $dir/$r as a replica of $dir/$p"
}

pair_status() {
  local dir=$1 p r pport rport state
  p=$(current_primary "$dir")
  r=$(other_node "$p")
  pport=$(node_port "$dir" "$p")
  rport=$(node_port "$dir" "$r")
  if ! node_running "$dir" "$p"; then
    say "pair ($(pair_mode "$dir")): primary $p not running ($dir)"
    return 1
  fi
  state=$(sql_at "$pport" "SELECT state || ' ' || sync_state FROM pg_stat_replication WHERE application_name = '$r'" \
    2>/dev/null || true)
  say "pair ($(pair_mode "$dir")): primary $p running on 127.0.0.1:$pport, replica $r on 127.0.0.1:$rport:" \
    "${state:-not streaming} ($dir)"
}

[ $# -ge 1 ] || usage
# What a sourced DIR/env exports must not steer our own connections, nor the
# servers (PGPORT as a list is no port; target_session_attrs refuses a replica).
unset PGHOST PGPORT PGDATABASE PGUSER PGTARGETSESSIONATTRS PGSERVICE PGOPTIONS
BIN=$(find_bindir)
for tool in initdb pg_ctl pg_isready psql; do
  [ -x "$BIN/$tool" ] || die "$BIN/$tool not found; install postgresql-15 and postgresql-client-15"
done
case "$1" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  status) shift; cmd_status "$@" ;;
  start-pair) shift; cmd_start_pair "$@" ;;
  failover) shift; cmd_failover "$@" ;;
  rebuild) shift; cmd_rebuild "$@" ;;
  *) usage ;;
esac
