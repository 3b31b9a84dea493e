#!/usr/bin/env bash
# The main job, end to end: build, start a local PostgreSQL, run three agents, kill the
# master with kill -9, and show the takeover in the lease table.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

say "building"
cmake -S . -B build -DLEASE_AGENT_TESTS=OFF >/dev/null
cmake --build build -j2 --target lease-agent >/dev/null
agent=$PWD/build/lease-agent

work=$(mktemp -d /tmp/lease-agent-demo.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  scripts/pg.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

say "starting PostgreSQL"
scripts/pg.sh start "$work/pg" >/dev/null
# shellcheck disable=SC1091
source "$work/pg/env"
dsn=$LEASE_AGENT_TEST_DSN
psql() { command psql "$dsn" -X -q "$@"; }

say "lease-agent schema apply"
"$agent" schema apply --dsn "$dsn"

# Waits (at most 10 s) until NODE answers 200 on PATH.
await() {
  local port=$1 path=$2
  for _ in $(seq 1 500); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port$path")" = 200 ] && return 0
    sleep 0.02
  done
  echo "timed out waiting for 127.0.0.1:$port$path" >&2
  return 1
}

# Waits (at most 10 s) until NODE's connection is ttl old: only then may it take the
# lease (a new connection starts no term for ttl).
await_eligible() {
  local port=$1
  for _ in $(seq 1 500); do
    curl -s "http://127.0.0.1:$port/status" | grep -q '"may_acquire":true' && return 0
    sleep 0.02
  done
  echo "timed out waiting for 127.0.0.1:$port/status to say may_acquire" >&2
  return 1
}

say "three agents, ttl=2s renew=500ms, started in order"
for i in 1 2 3; do
  "$agent" run --dsn "$dsn" --cluster demo --node "node$i" -b "10.0.0.$i:8080" \
    --ttl 2s --renew 500ms --http "127.0.0.1:$((8710 + i))" \
    --on-promote 'echo "on-promote: $LEASE_AGENT_NODE is master at epoch $LEASE_AGENT_EPOCH"' \
    2>"$work/node$i.log" &
  pids+=($!)
  disown "$!"  # no job-control chatter when the demo kills it
  if [ "$i" = 1 ]; then await 8711 /master; else await "$((8710 + i))" /standby; fi
done
await_eligible 8712
await_eligible 8713
"$agent" status --dsn "$dsn" --cluster demo
psql -c "SELECT cluster, node, address, epoch FROM lease_agent.master"

say "kill -9 node1 (the master)"
start=$(date +%s%N)
kill -9 "${pids[0]}"
await 8712 /master
end=$(date +%s%N)
echo "node2 answers 200 on /master $(( (end - start) / 1000000 )) ms after the kill"
psql -c "SELECT * FROM lease_agent.master"
"$agent" status --dsn "$dsn" --cluster demo

say "SIGTERM node2 (clean stop): node3 takes over at once"
start=$(date +%s%N)
kill -TERM "${pids[1]}"
await 8713 /master
end=$(date +%s%N)
echo "node3 answers 200 on /master $(( (end - start) / 1000000 )) ms after SIGTERM"
psql -c "SELECT * FROM lease_agent.master"

say "what node2 and node3 logged"
cat "$work/node2.log" "$work/node3.log"
