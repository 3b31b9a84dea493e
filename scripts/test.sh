#!/usr/bin/env bash
# Builds lease-agent and runs every test against a throwaway PostgreSQL.
#
#   scripts/test.sh [CTEST ARGS...]     e.g. scripts/test.sh -R hooks_test
#
# Builds into build/ with CMake, starts PostgreSQL with scripts/pg.sh unless
# LEASE_AGENT_TEST_DSN already names one, runs ctest, and stops PostgreSQL
# again however the run ends. The exit status is ctest's.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

echo "== configure and build (build/)"
cmake -S . -B build
cmake --build build -j"${JOBS:-2}"

pgdir=
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [ -n "$pgdir" ]; then
    echo "== stop PostgreSQL"
    "$root/scripts/pg.sh" stop "$pgdir" || rmdir "$pgdir" 2>/dev/null || true
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

if [ -n "${LEASE_AGENT_TEST_DSN:-}" ]; then
  echo "== using the PostgreSQL of LEASE_AGENT_TEST_DSN"
else
  echo "== start PostgreSQL"
  pgdir=$(mktemp -d "${TMPDIR:-/tmp}/lease-agent-test.XXXXXX")
  "$root/scripts/pg.sh" start "$pgdir" >/dev/null
  # shellcheck disable=SC1091
  . "$pgdir/env"
fi

echo "== ctest"
status=0
ctest --test-dir build --output-on-failure "$@" || status=$?
exit "$status"
