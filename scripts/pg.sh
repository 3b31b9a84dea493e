#!/usr/bin/env bash
# Starts and stops a throwaway PostgreSQL for the tests and the demo.
#
#   scripts/pg.sh start [DIR]   initialise and start a server in DIR (a new
#                               temporary directory when DIR is omitted);
#                               prints the environment to use, also written
#                               to DIR/env for `. DIR/env`
#   scripts/pg.sh stop DIR      stop the server (fast shutdown), remove DIR
#   scripts/pg.sh restart DIR [fast|immediate]
#                               restart the server (for fault injection)
#   scripts/pg.sh status DIR    exit 0 when the server of DIR is running
#
# The server listens on 127.0.0.1 on a free port and on a Unix socket in DIR.
# It has a database `lease_agent_test`, the superuser `postgres` (trusted,
# no password) and the role `lease_agent_pw`, which must log in over TCP with
# the password `pw-secret-42` (scram-sha-256), for the tests of
# authentication. fsync is off: never keep data here.
#
# Run as root, the server runs as the `postgres` user; run as anyone else, as
# that user. Only the environment lines go to standard output, so
#   eval "$(scripts/pg.sh start /tmp/pg)"
# works; progress and errors go to standard error. Set PGBIN to use other
# server binaries than PostgreSQL 15's.
set -euo pipefail

readonly PW_ROLE=lease_agent_pw
readonly PW_PASSWORD=pw-secret-42
readonly DATABASE=lease_agent_test
readonly MARKER=.lease-agent-pg   # marks a directory this script created: only those are removed

say() { echo "pg.sh: $*" >&2; }
die() { echo "pg.sh: error: $*" >&2; exit 1; }

usage() {
  echo "usage: $0 start [DIR] | stop DIR | restart DIR [fast|immediate] | status DIR" >&2
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
  # pg_ctl restart keeps the options the server was started with (postmaster.opts).
  as_pg "$BIN/pg_ctl" -D "$dir/data" -m "$how" -w -t 60 -l "$dir/postgres.log" restart >/dev/null ||
    die "could not restart the server in $dir"
  say "restarted ($how) the server in $dir"
}

cmd_status() {
  local dir=${1:-}
  [ -n "$dir" ] || usage
  dir=$(realpath -m -- "$dir")
  if is_running "$dir"; then
    say "running on 127.0.0.1:$(configured_port "$dir") ($dir)"
  else
    say "not running ($dir)"
    return 1
  fi
}

[ $# -ge 1 ] || usage
BIN=$(find_bindir)
for tool in initdb pg_ctl pg_isready psql; do
  [ -x "$BIN/$tool" ] || die "$BIN/$tool not found; install postgresql-15 and postgresql-client-15"
done
case "$1" in
  start) shift; cmd_start "$@" ;;
  stop) shift; cmd_stop "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  status) shift; cmd_status "$@" ;;
  *) usage ;;
esac
