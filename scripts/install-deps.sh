#!/usr/bin/env bash
# Installs what lease-agent needs to build, test and run its demo, from Debian 12's packages.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libpqxx-dev libpq-dev libcli11-dev libpugixml-dev catch2 libcpp-httplib-dev nlohmann-json3-dev
  postgresql faketime curl ca-certificates procps locales
  systemd haproxy prometheus lintian docker-compose dpkg-dev file fakeroot
  etcd-server etcd-client gnuplot-nox zookeeper libzookeeper-mt-dev
)

sudo=
if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
fi

echo "+ apt-get update"
$sudo apt-get update
echo "+ apt-get install -y --no-install-recommends ${packages[*]}"
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${packages[@]}"

# robust_test runs a PostgreSQL that answers in German (lc_messages), to show that a refused
# password is told by its SQLSTATE, not by English words.
echo "+ localedef -i de_DE -f UTF-8 de_DE.UTF-8"
$sudo localedef -i de_DE -f UTF-8 de_DE.UTF-8
