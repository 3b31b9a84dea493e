#!/usr/bin/env bash
# compose.yaml is accepted by docker-compose (no engine needed: `config` only parses),
# and puts HAProxy, with config/haproxy.cfg itself, in front of the three nodes.
#   compose_check.sh DOCKER_COMPOSE SOURCE_DIR
set -euo pipefail
compose=$1 src=$2
out=$("$compose" -f "$src/compose.yaml" config)
fail() { echo "compose.yaml: $*" >&2; exit 1; }
grep -q 'image: haproxy:' <<<"$out" || fail "no HAProxy service"
grep -q -- "- $src/config/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg" <<<"$out" ||
  fail "HAProxy does not run config/haproxy.cfg"
for n in 1 2 3; do
  grep -q "NODE${n}_APP: node${n}:8080" <<<"$out" || fail "HAProxy has no server for node$n"
  grep -q "network_mode: service:node${n}" <<<"$out" || fail "app$n does not share node$n's address"
done
echo "compose.yaml: accepted; HAProxy with config/haproxy.cfg in front of node1, node2, node3"
