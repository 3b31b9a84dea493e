#!/usr/bin/env bash
# package_deb: the Debian package of cmake/package.cmake, for real, on this machine.
#
#   package_test.sh BUILD_DIR SOURCE_DIR VERSION CMAKE CPACK
#
# Builds lease-agent, runs cpack -G DEB into BUILD_DIR/tests/package/out, checks the control
# fields and the contents, runs lintian (fails on any E:), installs the .deb with apt-get, checks
# the installed package (binary and --version, the lease-agent user, the conffile, permissions,
# the unit not enabled nor started, systemd-analyze verify of the unit), reinstalls it over a
# changed conffile (postinst twice), removes it, purges it, and checks that nothing is left.
#
# It needs root (CI runs as root) and refuses to touch a machine where lease-agent is installed
# or /etc/lease-agent exists already. However it ends, the EXIT trap purges the package and
# removes the user, group and /etc/lease-agent if this test made them.
set -euo pipefail

if [ $# -ne 5 ]; then
  echo "usage: $0 BUILD_DIR SOURCE_DIR VERSION CMAKE CPACK" >&2
  exit 2
fi
build=$1 src=$2 version=$3 cmake=$4 cpack=$5
pkg=lease-agent
unit=/lib/systemd/system/lease-agent.service
conf=/etc/lease-agent/agent.xml
out=$build/tests/package/out

step() { echo "== $*"; }
ok() { echo "   ok: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}
# The package's state in dpkg's database: installed, config-files, not-installed, ...
pkg_status() { dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || echo not-installed; }
# apt-get, non-interactive and bounded in time.
apt() { timeout 240 env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o DPkg::Lock::Timeout=60 "$@"; }

if [ "$(id -u)" -ne 0 ]; then
  fail "package_deb must run as root: it installs, checks and purges the .deb with apt-get and dpkg (run ctest as root, as CI does)"
fi
for tool in dpkg dpkg-deb dpkg-query apt-get lintian systemd-analyze systemctl readelf gzip getent \
            md5sum runuser timeout; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (bash scripts/install-deps.sh)"
done

# --- A clean machine first: this test installs and purges lease-agent system-wide.
[ "$(pkg_status)" = not-installed ] ||
  fail "the package lease-agent is on this machine already ($(pkg_status)): the test would replace and purge it; remove it first (apt-get purge lease-agent)"
[ ! -e /etc/lease-agent ] ||
  fail "/etc/lease-agent exists: a purge would delete it; move it away first"
[ ! -e /usr/bin/lease-agent ] || fail "/usr/bin/lease-agent exists and belongs to no package"
user_existed=0 group_existed=0
getent passwd lease-agent >/dev/null && user_existed=1
getent group lease-agent >/dev/null && group_existed=1

tmp=$(mktemp -d "${TMPDIR:-/tmp}/package_deb.XXXXXX")
installed=0
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  local rc=$?
  trap - EXIT
  if [ "$installed" = 1 ] && [ "$(pkg_status)" != not-installed ]; then
    echo "== cleanup: dpkg --purge $pkg (the test stopped with the package on the machine)"
    if ! timeout 120 dpkg --purge "$pkg"; then
      # A failing prerm/postrm must not leave the package half there: neutralize them.
      echo "   dpkg --purge failed: purging again without the maintainer scripts"
      for s in prerm postrm; do
        [ -e "/var/lib/dpkg/info/$pkg.$s" ] && printf '#!/bin/sh\nexit 0\n' >"/var/lib/dpkg/info/$pkg.$s"
      done
      timeout 120 dpkg --purge --force-remove-reinstreq "$pkg" || true
    fi
  fi
  if [ "$installed" = 1 ]; then
    if [ "$user_existed" = 0 ] && getent passwd lease-agent >/dev/null; then
      echo "== cleanup: userdel lease-agent"
      userdel lease-agent || true
    fi
    if [ "$group_existed" = 0 ] && getent group lease-agent >/dev/null; then
      echo "== cleanup: groupdel lease-agent"
      groupdel lease-agent || true
    fi
    rm -rf /etc/lease-agent
  fi
  rm -rf "$tmp"
  if [ "$rc" -eq 0 ]; then echo "package_deb: PASS"; else echo "package_deb: FAIL (status $rc)" >&2; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Build and package.
step "cmake --build $build --target lease-agent lease_agent_packaging_files"
"$cmake" --build "$build" --target lease-agent lease_agent_packaging_files

step "cpack -G DEB -B $out"
rm -rf "$out"
(cd "$build" && "$cpack" -G DEB -B "$out")
arch=$(dpkg --print-architecture)
deb=$out/${pkg}_${version}_${arch}.deb
[ -f "$deb" ] || fail "cpack made no $deb (made: $(ls "$out"))"
[ "$(find "$out" -maxdepth 1 -name '*.deb' | wc -l)" -eq 1 ] || fail "more than one .deb in $out"
ok "$(basename "$deb") ($(stat -c %s "$deb") bytes)"

# --- The control fields.
step "control fields"
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = "$pkg" ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), not $version"
[ "$(field Architecture)" = "$arch" ] || fail "Architecture: $(field Architecture)"
[ "$(field Section)" = admin ] || fail "Section: '$(field Section)'"
[ "$(field Priority)" = optional ] || fail "Priority: '$(field Priority)'"
field Maintainer | grep -Eq '^[^<]+ <[^@ ]+@[^> ]+>$' || fail "Maintainer: '$(field Maintainer)'"
depends=$(field Depends)
for d in adduser 'libc6 (>=' 'libstdc++6 (>=' 'libpqxx-' 'libpq5' 'libpugixml'; do
  case ", $depends" in *", $d"*) ;; *) fail "Depends lacks $d (dpkg-shlibdeps computed?): $depends" ;; esac
done
# The agent speaks sd_notify and HTTP itself (agent/systemd_notify.cpp, role_endpoints.cpp):
# libsystemd and cpp-httplib are not loaded, so not depended on.
for d in libsystemd0 libcpp-httplib; do
  case ", $depends" in *", $d"*) fail "Depends has $d, which the agent does not load: $depends" ;; esac
done
description=$(field Description)
[ "$(printf '%s\n' "$description" | wc -l)" -ge 5 ] || fail "Description has no long description"
ok "Depends: $depends"

# --- The contents.
step "contents"
dpkg-deb -c "$deb" | awk '{print $NF}' | sed 's|^\./|/|' >"$tmp/contents"
expect=(/usr/bin/lease-agent "$unit" "$conf"
        /usr/share/doc/lease-agent/README.md /usr/share/doc/lease-agent/PROTOCOL.md
        /usr/share/doc/lease-agent/copyright /usr/share/doc/lease-agent/changelog.gz
        /usr/share/doc/lease-agent/examples/agent.xml /usr/share/doc/lease-agent/examples/haproxy.cfg
        /usr/share/doc/lease-agent/examples/alerts.yml /usr/share/man/man1/lease-agent.1.gz
        /usr/share/lintian/overrides/lease-agent)
sql_files=()
for f in "$src"/sql/*.sql; do
  sql_files+=("$(basename "$f")")
  expect+=("/usr/share/lease-agent/sql/$(basename "$f")")
done
[ "${#sql_files[@]}" -ge 1 ] || fail "no sql/*.sql in $src"
for f in "${expect[@]}"; do
  grep -qxF "$f" "$tmp/contents" || fail "the package lacks $f"
done
# Nothing under /usr/local, nothing of the build tree.
if grep -E '^/usr/local|/home/|/work/' "$tmp/contents"; then fail "files in the wrong place (above)"; fi
dpkg-deb -I "$deb" conffiles >"$tmp/conffiles"
[ "$(cat "$tmp/conffiles")" = "$conf" ] || fail "conffiles is '$(cat "$tmp/conffiles")', not $conf"
for s in postinst prerm postrm; do
  dpkg-deb -I "$deb" "$s" >"$tmp/$s" || fail "no $s in the package"
  head -1 "$tmp/$s" | grep -qx '#!/bin/sh' || fail "$s does not start with #!/bin/sh"
  grep -qx 'set -e' "$tmp/$s" || fail "$s has no set -e"
  if command -v checkbashisms >/dev/null 2>&1; then checkbashisms "$tmp/$s"; fi
  sh -n "$tmp/$s" || fail "$s: sh -n"
done
# The package never enables nor starts the unit: systemctl only for daemon-reload, and
# deb-systemd-helper enable only behind was-enabled (an admin's own enable, kept as dh does).
for s in postinst prerm postrm; do
  if grep -nE 'systemctl' "$tmp/$s" | grep -v 'daemon-reload' | grep -vE '^[0-9]+:[[:space:]]*#'; then
    fail "$s calls systemctl for more than daemon-reload (above)"
  fi
  if grep -nE 'deb-systemd-invoke[^#]*(start|restart)' "$tmp/$s"; then fail "$s starts the unit (above)"; fi
done
grep -B1 'deb-systemd-helper enable' "$tmp/postinst" | head -1 | grep -q 'was-enabled' ||
  fail "postinst runs deb-systemd-helper enable other than behind was-enabled"
dpkg-deb -x "$deb" "$tmp/root"
# gzip -9n: no file name (FLG 00), no time stamp (MTIME 0), maximum compression (XFL 02).
for gz in usr/share/doc/lease-agent/changelog.gz usr/share/man/man1/lease-agent.1.gz; do
  gzip -t "$tmp/root/$gz" || fail "$gz is no gzip file"
  header=$(od -An -tx1 -N10 "$tmp/root/$gz" | tr -d ' \n')
  if [ "${header:6:2}" != 00 ] || [ "${header:8:8}" != 00000000 ] || [ "${header:16:2}" != 02 ]; then
    fail "$gz is not gzip -9n (header $header)"
  fi
done
top=$(gzip -dc "$tmp/root/usr/share/doc/lease-agent/changelog.gz" | head -1)
case "$top" in "lease-agent ($version) "*) ;; *) fail "changelog's first entry is '$top', not version $version" ;; esac
ok "${#expect[@]} files, conffiles $conf, maintainer scripts, changelog $version"

# --- lintian: no E: at all. Its whole output goes into the test log.
step "lintian -I --pedantic --show-overrides $(basename "$deb")"
lrc=0
lintian -I --pedantic --show-overrides "$deb" >"$tmp/lintian" 2>&1 || lrc=$?
sed 's/^/   | /' "$tmp/lintian"
[ "$lrc" -le 1 ] || fail "lintian did not run (status $lrc)"
if grep -q '^E:' "$tmp/lintian"; then fail "lintian reports errors (E: above)"; fi
# Proof that lintian checked this package, overrides file included.
grep -q '^O: lease-agent: package-supports-alternative-init-but-no-init.d-script' "$tmp/lintian" ||
  fail "lintian did not read /usr/share/lintian/overrides/lease-agent (no O: line)"
ok "no E: (status $lrc; $(grep -c '^W:' "$tmp/lintian" || true) W:, $(grep -c '^I:' "$tmp/lintian" || true) I:, $(grep -c '^P:' "$tmp/lintian" || true) P:)"

# --- Install.
step "apt-get install $deb"
installed=1
apt install "$deb"
[ "$(pkg_status)" = installed ] || fail "after apt-get install the package is '$(pkg_status)'"
ok "installed"

step "the installed package"
[ "$(command -v lease-agent)" = /usr/bin/lease-agent ] || fail "lease-agent on PATH is '$(command -v lease-agent || true)'"
got=$(/usr/bin/lease-agent --version)
[ "$got" = "lease-agent $version" ] || fail "lease-agent --version printed '$got', not 'lease-agent $version'"
ok "lease-agent --version: $got"
readelf -S --wide /usr/bin/lease-agent >"$tmp/sections"
if grep -E ' \.(symtab|debug_[a-z_]+|comment) ' "$tmp/sections"; then fail "/usr/bin/lease-agent is not stripped (above)"; fi
ok "/usr/bin/lease-agent stripped"

passwd=$(getent passwd lease-agent) || fail "getent passwd lease-agent: no such user"
IFS=: read -r _ _ uid gid _ home shell <<<"$passwd"
[ "$uid" -lt 1000 ] || fail "lease-agent is no system user (uid $uid)"
[ "$home" = /nonexistent ] || fail "lease-agent's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "lease-agent's shell is $shell"
[ "$(getent group lease-agent | cut -d: -f3)" = "$gid" ] || fail "lease-agent's primary group is not lease-agent"
ok "user: $passwd"

conffiles=$(dpkg-query -W -f='${Conffiles}\n' "$pkg")
sum=$(md5sum <"$src/config/agent.xml" | cut -d' ' -f1)
printf '%s\n' "$conffiles" | grep -qx " $conf $sum" ||
  fail "$conf is no conffile with config/agent.xml's md5 $sum: '$conffiles'"
cmp -s "$conf" "$src/config/agent.xml" || fail "$conf differs from config/agent.xml"
[ "$(stat -c '%a %U %G' /etc/lease-agent)" = "750 root lease-agent" ] ||
  fail "/etc/lease-agent is $(stat -c '%a %U %G' /etc/lease-agent)"
[ "$(stat -c '%a %U %G' "$conf")" = "640 root lease-agent" ] || fail "$conf is $(stat -c '%a %U %G' "$conf")"
# The lease-agent user reads its config (and it is valid as shipped); others may not read it.
runuser -u lease-agent -- /usr/bin/lease-agent check-config -c "$conf" >"$tmp/check-config" ||
  fail "lease-agent check-config -c $conf as the lease-agent user failed: $(cat "$tmp/check-config")"
if runuser -u nobody -- cat "$conf" >/dev/null 2>&1; then fail "the user nobody can read $conf"; fi
ok "conffile:$conffiles (0640 root:lease-agent; check-config as lease-agent passes)"

for f in "${sql_files[@]}"; do
  cmp "/usr/share/lease-agent/sql/$f" "$src/sql/$f" || fail "/usr/share/lease-agent/sql/$f differs"
done
if command -v man >/dev/null 2>&1; then
  [ "$(man -w lease-agent)" = /usr/share/man/man1/lease-agent.1.gz ] || fail "man -w lease-agent: $(man -w lease-agent)"
  MANWIDTH=80 man --warnings=all lease-agent 2>"$tmp/man-warnings" | grep -q '^NAME' || fail "man lease-agent shows nothing"
  [ ! -s "$tmp/man-warnings" ] || fail "man lease-agent warns: $(cat "$tmp/man-warnings")"
fi
ok "sql/ (${sql_files[*]}), docs, man page"

# The unit: as config/lease-agent.service, never enabled nor started.
cmp "$unit" "$src/config/lease-agent.service" || fail "$unit differs from config/lease-agent.service"
for line in 'Type=notify' 'User=lease-agent' 'ExecStart=/usr/bin/lease-agent run -c /etc/lease-agent/agent.xml'; do
  grep -qxF "$line" "$unit" || fail "$unit lacks the line $line"
done
enabled=$(systemctl is-enabled lease-agent.service 2>&1 || true)
[ "$enabled" = disabled ] || fail "systemctl is-enabled lease-agent.service: '$enabled', not disabled"
if find /etc/systemd/system -name lease-agent.service 2>/dev/null | grep .; then
  fail "the package enabled the unit (symlinks above)"
fi
if [ -d /run/systemd/system ]; then
  active=$(systemctl is-active lease-agent.service 2>&1 || true)
  [ "$active" = inactive ] || fail "systemctl is-active lease-agent.service: $active"
fi
if pgrep -a -f '^/usr/bin/lease-agent( |$)'; then fail "an installed lease-agent runs (above): the package started it"; fi
ok "unit: Type=notify, User=lease-agent, ExecStart as expected; $enabled, not running"

# --- systemd-analyze verify. It works offline, without systemd as PID 1. Its parse warnings
# (unknown keys, bad values) exit 0, so every line naming our unit fails the test; lines about
# other units (dependencies of ours) are shown and let pass. Documentation=man: is checked too
# when man is there.
verify() {  # verify UNIT_FILE OUTPUT_FILE -> verify's status
  local args=()
  command -v man >/dev/null 2>&1 || args+=(--man=no)
  (cd "$tmp" && timeout 60 systemd-analyze verify "${args[@]}" "$1") >"$2" 2>&1
}
step "systemd-analyze verify $unit"
# First a broken copy, to see that verify really checks here (an unknown key, a missing binary).
sed -e 's|^User=|Usr=|' -e 's|^ExecStart=/usr/bin/lease-agent |ExecStart=/usr/bin/lease-agent-missing |' \
  "$unit" >"$tmp/lease-agent-broken.service"
brc=0
verify "$tmp/lease-agent-broken.service" "$tmp/verify-broken" || brc=$?
if [ "$brc" -eq 0 ] || ! grep -q "Unknown key 'Usr'" "$tmp/verify-broken" ||
   ! grep -q 'lease-agent-missing' "$tmp/verify-broken"; then
  fail "systemd-analyze verify did not catch a broken unit here (status $brc): $(cat "$tmp/verify-broken")"
fi
vrc=0
verify "$unit" "$tmp/verify" || vrc=$?
sed 's/^/   | /' "$tmp/verify"
if grep -F 'lease-agent.service' "$tmp/verify"; then fail "systemd-analyze verify reports on our unit (above)"; fi
if [ "$vrc" -ne 0 ]; then
  # Only other units' trouble may make it fail: then each line names another unit.
  if [ ! -s "$tmp/verify" ] || grep -Ev '\.(service|target|socket|timer|mount|path|slice|scope|device|swap)\b' "$tmp/verify"; then
    fail "systemd-analyze verify failed (status $vrc) without naming another unit"
  fi
  echo "   note: systemd-analyze verify exits $vrc for other units only (above)"
fi
ok "systemd-analyze verify: nothing about lease-agent.service (status $vrc)"

# --- Install again over a changed conffile: postinst runs a second time (idempotent), the
# admin's agent.xml is kept.
step "dpkg -i again, agent.xml changed"
echo '<!-- changed by package_deb -->' >>"$conf"
timeout 120 dpkg -i --force-confold "$deb"
[ "$(pkg_status)" = installed ] || fail "after dpkg -i again the package is '$(pkg_status)'"
grep -q 'changed by package_deb' "$conf" || fail "the reinstall replaced the changed $conf"
[ "$(getent passwd lease-agent | cut -d: -f3)" = "$uid" ] || fail "the reinstall changed the user's uid"
[ "$(getent passwd | grep -c '^lease-agent:')" -eq 1 ] || fail "two lease-agent users"
[ "$(stat -c '%a %U %G' "$conf")" = "640 root lease-agent" ] || fail "$conf is $(stat -c '%a %U %G' "$conf") after the reinstall"
ok "postinst ran twice; the changed agent.xml kept"

# --- Remove: the binary goes, the conffile and the user stay.
step "apt-get remove $pkg"
apt remove "$pkg"
[ "$(pkg_status)" = config-files ] || fail "after apt-get remove the package is '$(pkg_status)'"
[ ! -e /usr/bin/lease-agent ] || fail "/usr/bin/lease-agent is still there after remove"
[ ! -e "$unit" ] || fail "$unit is still there after remove"
[ -f "$conf" ] || fail "remove deleted the conffile $conf"
getent passwd lease-agent >/dev/null || fail "remove deleted the user"
ok "binary and unit gone; $conf and the user kept"

# --- Purge: nothing is left.
step "apt-get purge $pkg"
apt purge "$pkg"
[ "$(pkg_status)" = not-installed ] || fail "after apt-get purge the package is '$(pkg_status)'"
if command -v lease-agent; then fail "lease-agent is still on PATH after purge"; fi
[ ! -e /usr/bin/lease-agent ] || fail "/usr/bin/lease-agent is still there"
[ ! -e /etc/lease-agent ] || fail "/etc/lease-agent is still there after purge"
[ ! -e /usr/share/doc/lease-agent ] || fail "/usr/share/doc/lease-agent is still there after purge"
if [ "$user_existed" = 0 ]; then
  if getent passwd lease-agent; then fail "purge left the user lease-agent"; fi
  if getent group lease-agent; then fail "purge left the group lease-agent"; fi
else
  echo "   note: the user lease-agent existed before the test; purge keeps it"
fi
if find /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked \
     -name '*lease-agent*' 2>/dev/null | grep .; then
  fail "purge left deb-systemd-helper state (above)"
fi
installed=0
ok "purged: no binary, no /etc/lease-agent, no user, no group"
