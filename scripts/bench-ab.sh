#!/bin/bash
# The hand-off and switchover times of two versions of the agent, side by side, on one
# machine in one run: the lease-agent of git revision REV (built in a temporary worktree)
# and this checkout's build/lease-agent, alternately, with build/scale_bench, on one
# PostgreSQL with today's schema (an older agent runs on it as it does during an upgrade).
#
#   bash scripts/bench-ab.sh --rev fd53771            # 1x300, 100x3, 1x10; 2 rounds of 10 runs
#   bash scripts/bench-ab.sh --rev HEAD~3 --sizes "1x3" --rounds 1 --runs 2
#
# Prints scale_bench's term and switchover lines for each size, revision and round.
# Exit status: 0, or 2 if a build, PostgreSQL or a scale_bench run failed.
set -u
root=$(cd "$(dirname "$0")/.." && pwd)
rev=""
sizes="1x300 100x3 1x10"
rounds=2
runs=10

usage() {
  echo "usage: $0 --rev REV [--sizes \"MxN ...\"] [--rounds N] [--runs N]" >&2
  exit 2
}
while [ $# -gt 0 ]; do
  case "$1" in
    --rev) [ $# -ge 2 ] || usage; rev=$2; shift ;;
    --sizes) [ $# -ge 2 ] || usage; sizes=$2; shift ;;
    --rounds) [ $# -ge 2 ] || usage; rounds=$2; shift ;;
    --runs) [ $# -ge 2 ] || usage; runs=$2; shift ;;
    *) echo "bench-ab.sh: unknown argument '$1'" >&2; usage ;;
  esac
  shift
done
[ -n "$rev" ] || usage
case "$rounds$runs" in *[!0-9]*) echo "bench-ab.sh: --rounds and --runs take a number" >&2; exit 2 ;; esac
for spec in $sizes; do
  case "$spec" in [0-9]*x[0-9]*) ;; *) echo "bench-ab.sh: size '$spec' is not MxN" >&2; exit 2 ;; esac
done

work=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-ab.XXXXXX")
pgdir=""
cleanup() {
  [ -n "$pgdir" ] && "$root/scripts/pg.sh" stop "$pgdir" >/dev/null 2>&1
  git -C "$root" worktree remove --force "$work/src" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

echo "== build this checkout and $rev"
if ! cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >"$work/build.log" 2>&1 ||
  ! cmake --build "$root/build" -j"${JOBS:-2}" --target lease-agent scale_bench >>"$work/build.log" 2>&1 ||
  ! git -C "$root" worktree add -q --detach "$work/src" "$rev" >>"$work/build.log" 2>&1 ||
  ! cmake -S "$work/src" -B "$work/src/build" -DCMAKE_BUILD_TYPE=Release >>"$work/build.log" 2>&1 ||
  ! cmake --build "$work/src/build" -j"${JOBS:-2}" --target lease-agent >>"$work/build.log" 2>&1; then
  tail -20 "$work/build.log" >&2
  echo "bench-ab.sh: the build failed" >&2
  exit 2
fi
old="$work/src/build/lease-agent"
new="$root/build/lease-agent"
echo "   $rev: $(git -C "$root" rev-parse --short "$rev"); this checkout: $(git -C "$root" rev-parse --short HEAD)$(git -C "$root" diff --quiet HEAD -- agent sql || echo ' (modified)')"

echo "== start PostgreSQL"
pgdir=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-ab-pg.XXXXXX")
export LEASE_AGENT_PG_CONF="shared_preload_libraries = 'pg_stat_statements'
max_connections = 700
pg_stat_statements.track = top"
if ! "$root/scripts/pg.sh" start "$pgdir" >"$work/pg.log" 2>&1; then
  cat "$work/pg.log" >&2
  exit 2
fi
# shellcheck disable=SC1091
. "$pgdir/env"
if ! psql -X -q -d "$LEASE_AGENT_TEST_DSN" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >>"$work/pg.log" 2>&1 ||
  ! "$new" schema apply --dsn "$LEASE_AGENT_TEST_DSN" >>"$work/pg.log" 2>&1; then
  cat "$work/pg.log" >&2
  exit 2
fi

status=0
for round in $(seq 1 "$rounds"); do
  for spec in $sizes; do
    for which in "$rev" this; do
      bin=$new
      [ "$which" = this ] || bin=$old
      echo "== round $round, $spec, $which"
      if ! timeout 900 "$root/build/scale_bench" --binary "$bin" --clusters "${spec%%x*}" --agents "${spec##*x}" \
        --ttl 2s --renew 500ms --window 2s --runs "$runs" --scenario term,switchover --label "$spec" \
        >"$work/run.log" 2>&1; then
        status=2
        tail -5 "$work/run.log"
      fi
      grep -E "^term|^switchover|request commit" "$work/run.log"
    done
  done
done
exit "$status"
