#!/usr/bin/env bash
# The long run of the fault-injection suite (tests/fault/README.md): builds, starts a
# throwaway PostgreSQL (which the suite restarts as one of its faults), runs
#
#   build/tests/fault/fault_suite --duration 30m --ttl 500ms --renew 125ms [ARGS...]
#
# (a short ttl: about 70 faults a minute, some 2000 in the half hour)
# and stops PostgreSQL however the run ends. Arguments are the suite's own, e.g.
#   scripts/fault.sh --duration 5m --seed 42
# (a later --duration, --ttl or --renew wins), and one of this script's:
#   scripts/fault.sh --pair [ARGS...]
# starts a primary and an asynchronous streaming replica instead (scripts/pg.sh
# start-pair), so that pg-failover and pg-switchover are among the faults.
# The exit status is the suite's: 0 no violation.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

pair=
args=()
for a in "$@"; do
  if [ "$a" = "--pair" ]; then pair=1; else args+=("$a"); fi
done

echo "== configure and build (build/)"
cmake -S . -B build >/dev/null
cmake --build build -j"${JOBS:-2}" --target fault_suite

pgdir=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$pgdir" ]; then
    echo "== stop PostgreSQL"
    "$root/scripts/pg.sh" stop "$pgdir" || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pgdir=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-fault.XXXXXX")
if [ -n "$pair" ]; then
  echo "== start a PostgreSQL pair (primary and asynchronous replica)"
  "$root/scripts/pg.sh" start-pair "$pgdir" async >/dev/null
else
  echo "== start PostgreSQL"
  "$root/scripts/pg.sh" start "$pgdir" >/dev/null
fi
# shellcheck disable=SC1091
. "$pgdir/env"

echo "== fault suite"
status=0
build/tests/fault/fault_suite --duration 30m --ttl 500ms --renew 125ms ${pair:+--pair} ${args[@]+"${args[@]}"} || status=$?
exit "$status"
