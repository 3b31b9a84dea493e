#!/usr/bin/env bash
# The main job, end to end: build, start a throwaway PostgreSQL, run three agents each
# beside a tiny application server that answers its node's name, HAProxy in front
# (config/haproxy.cfg), and a client sending requests through HAProxy throughout, while
# the master is killed (agent and server), its agent paused past ttl, stopped cleanly and
# switched over. For each: which node served before and after, and the gap in ms.
#
#   bash scripts/demo.sh            (after bash scripts/install-deps.sh)
#
# The driver is tests/traffic/traffic_check (the same scenario is a test in .ci/run);
# it exits non-zero if any answer came from a node that was not master at the time.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s\n' "$*"; }

command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || {
  echo "demo.sh: haproxy is not installed: run bash scripts/install-deps.sh first" >&2
  exit 2
}

say "building (build/)"
cmake -S . -B build >/dev/null
cmake --build build -j"${JOBS:-2}" --target lease-agent traffic_check traffic_app >/dev/null

work=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-demo.XXXXXX")
chmod 755 "$work"
cleanup() {
  scripts/pg.sh stop "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

say "starting PostgreSQL (scripts/pg.sh, 127.0.0.1, a free port)"
scripts/pg.sh start "$work/pg" >/dev/null
# shellcheck disable=SC1091
source "$work/pg/env"

build/lease-agent schema apply --dsn "$LEASE_AGENT_TEST_DSN"
build/tests/traffic/traffic_check --demo --dsn "$LEASE_AGENT_TEST_DSN"
