#!/usr/bin/env bash
# Tests the packages packaging/build.sh (make package) left in dist/, as root
# on a Debian machine, and leaves the machine as it found it (but for the
# apt-get installs of the tools below):
#
#   1. listings   dpkg-deb -c / -I and rpm -qp of the four packages: every
#                 file, its mode, the conffile, the architecture, the scripts
#   2. lintian    on both .debs: any tag fails (overrides, with the reason
#                 for each, go in packaging/nfpm/lintian-overrides)
#   3. arm64      the arm64 binary runs `inventory` on a fixture under
#                 qemu-aarch64 and prints what the amd64 one prints
#   4. reproducible  the amd64 binary, .deb, .rpm, SBOM and chart built again from
#                 the same tree are the same bytes (SHA256SUMS)
#   5. install    the amd64 .deb: installed (enabled, not started), its
#                 default config inert (ExecStart refuses, exit 2, no
#                 READY=1, nothing changed), a lab config (a veth rail in a
#                 throwaway netns) gives READY=1 on a notify socket,
#                 upgraded to a newer version keeping the edited conffile,
#                 removed (conffile kept), reinstalled, purged (conffile,
#                 state and unit enablement gone)
#
#   bash packaging/test-packages.sh      (exits non-zero on the first failure)
#
# Environment: DIST (default dist), VERSION (default packaging/version.sh:
# the one build.sh stamped), REPRO=0 skips step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
export LC_ALL=C

DIST=${DIST:-dist}
REPRO=${REPRO:-1}
VERSION=$(packaging/version.sh)
ver=${VERSION#v}

step() { echo "=== $*"; }
# grep -q for the end of a pipe: reads all its input, so that the writer
# never dies of SIGPIPE (pipefail would count that as a failure).
has() { grep "$@" >/dev/null; }
ok() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs the .deb, makes network namespaces)"
command -v dpkg >/dev/null || fail "needs dpkg (a Debian machine)"

deb_amd64=$DIST/roce-agent_${ver}_amd64.deb
deb_arm64=$DIST/roce-agent_${ver}_arm64.deb
rpm_amd64=$DIST/roce-agent_${ver}_amd64.rpm
rpm_arm64=$DIST/roce-agent_${ver}_arm64.rpm
bin_amd64=$DIST/roce-agent_${ver}_linux_amd64
bin_arm64=$DIST/roce-agent_${ver}_linux_arm64
chart=$DIST/roce-agent_${ver}_chart.tgz
for f in "$deb_amd64" "$deb_arm64" "$rpm_amd64" "$rpm_arm64" "$bin_amd64" "$bin_arm64" \
  "$bin_amd64.cdx.json" "$bin_arm64.cdx.json" "$chart" "$DIST/SHA256SUMS"; do
  [ -f "$f" ] || fail "$f is missing: run make package (packaging/build.sh) for $VERSION first"
done
(cd "$DIST" && sha256sum --quiet -c SHA256SUMS) || fail "$DIST/SHA256SUMS does not match the files"
ok "the four packages, the binaries, the SBOMs and the chart of $VERSION are in $DIST and match SHA256SUMS"
# the chart's default image is the image this build made (packaging/image/build.sh's tag)
want_app="appVersion: \"${ver//+/_}\""
got_app=$(tar -xzOf "$chart" roce-agent/Chart.yaml | grep '^appVersion:') || fail "$chart: no roce-agent/Chart.yaml with an appVersion"
[ "$got_app" = "$want_app" ] || fail "$chart: $got_app, want $want_app"
ok "the chart's appVersion is this build's image tag (${ver//+/_})"

# Tools.
need=()
command -v rpm >/dev/null || need+=(rpm)
command -v lintian >/dev/null || need+=(lintian)
command -v qemu-aarch64 >/dev/null || need+=(qemu-user)
[ -e /usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ] || need+=(libc6-arm64-cross)
command -v socat >/dev/null || need+=(socat)
command -v ip >/dev/null || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
ns=rpkg$$
daemon=
listener=
installed_by_us=
cleanup() {
  set +e
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  [ -n "$listener" ] && kill "$listener" 2>/dev/null && wait "$listener" 2>/dev/null
  ip netns del "$ns-host" 2>/dev/null
  ip netns del "$ns-leaf" 2>/dev/null
  if [ -n "$installed_by_us" ] && dpkg-query -W roce-agent >/dev/null 2>&1; then
    dpkg -P roce-agent >/dev/null 2>&1
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# mode_of LISTING PATH: the permission string dpkg-deb -c shows for PATH.
mode_of() { awk -v p="$2" '$6 == p { print $1 }' "$1"; }

# ---------------------------------------------------------------------------
step "1. package listings"
for arch in amd64 arm64; do
  deb=$DIST/roce-agent_${ver}_${arch}.deb
  rpm=$DIST/roce-agent_${ver}_${arch}.rpm
  dpkg-deb -c "$deb" >"$tmp/deb.list"
  while read -r mode path; do
    got=$(mode_of "$tmp/deb.list" "$path")
    [ "$got" = "$mode" ] || fail "$deb: $path is '${got:-absent}', want $mode"
  done <<'EOF'
-rwxr-xr-x ./usr/bin/roce-agent
-rw-r--r-- ./usr/lib/systemd/system/roce-agent.service
-rw-r--r-- ./etc/roce-agent/config.yaml
drwxr-xr-x ./var/lib/roce-agent/
-rw-r--r-- ./usr/share/man/man1/roce-agent.1.gz
-rw-r--r-- ./usr/share/doc/roce-agent/README.md
-rw-r--r-- ./usr/share/doc/roce-agent/CHANGELOG.md
-rw-r--r-- ./usr/share/doc/roce-agent/copyright
-rw-r--r-- ./usr/share/doc/roce-agent/changelog.gz
-rw-r--r-- ./usr/share/lintian/overrides/roce-agent
EOF
  files=$(awk '$1 !~ /^d/ { print $6 }' "$tmp/deb.list" | wc -l)
  [ "$files" = 9 ] || fail "$deb: $files files, want the 9 above: $(awk '$1 !~ /^d/ {print $6}' "$tmp/deb.list" | tr '\n' ' ')"
  awk '{ print $2 }' "$tmp/deb.list" | has -v '^root/root$' && fail "$deb: a file not owned by root/root"
  [ "$(dpkg-deb -f "$deb" Architecture)" = "$arch" ] || fail "$deb: Architecture $(dpkg-deb -f "$deb" Architecture)"
  [ "$(dpkg-deb -f "$deb" Package)" = roce-agent ] || fail "$deb: Package"
  dpkg-deb -f "$deb" Depends | has 'libc6 (>= 2.34)' || fail "$deb: Depends has no libc6"
  [ "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" = /etc/roce-agent/config.yaml ] || fail "$deb: conffiles"
  # (Into files, not grep -q in a pipe: pipefail and SIGPIPE.)
  dpkg-deb --ctrl-tarfile "$deb" | tar -t >"$tmp/ctrl.list"
  for s in postinst prerm postrm; do
    grep -qx "./$s" "$tmp/ctrl.list" || fail "$deb: no $s"
  done
  dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./postinst >"$tmp/postinst"
  grep -q 'deb-systemd-helper enable' "$tmp/postinst" || fail "$deb: postinst is not the deb one"
  ok "$deb: $files files with their modes, conffile, $arch, maintainer scripts"

  rpmarch=$([ "$arch" = amd64 ] && echo x86_64 || echo aarch64)
  [ "$(rpm -qp --qf '%{NAME} %{ARCH} %{LICENSE}' "$rpm" 2>/dev/null)" = "roce-agent $rpmarch Apache-2.0" ] ||
    fail "$rpm: $(rpm -qp --qf '%{NAME} %{ARCH} %{LICENSE}' "$rpm")"
  rpm -qp --qf '[%{FILEMODES:perms} %{FILENAMES}\n]' "$rpm" 2>/dev/null | sort -k2 >"$tmp/rpm.list"
  while read -r mode path; do
    got=$(awk -v p="$path" '$2 == p { print $1 }' "$tmp/rpm.list")
    [ "$got" = "$mode" ] || fail "$rpm: $path is '${got:-absent}', want $mode"
  done <<'EOF'
-rwxr-xr-x /usr/bin/roce-agent
-rw-r--r-- /usr/lib/systemd/system/roce-agent.service
-rw-r--r-- /etc/roce-agent/config.yaml
drwxr-xr-x /var/lib/roce-agent
-rw-r--r-- /usr/share/man/man1/roce-agent.1.gz
-rw-r--r-- /usr/share/doc/roce-agent/README.md
-rw-r--r-- /usr/share/doc/roce-agent/CHANGELOG.md
-rw-r--r-- /usr/share/licenses/roce-agent/LICENSE
EOF
  rpm -qlp "$rpm" 2>/dev/null >"$tmp/rpm.files"
  grep -q copyright "$tmp/rpm.files" && fail "$rpm: has the deb-only copyright file"
  [ "$(rpm -qp --configfiles "$rpm" 2>/dev/null)" = /etc/roce-agent/config.yaml ] || fail "$rpm: config files: $(rpm -qp --configfiles "$rpm")"
  rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm" 2>/dev/null | has '^cn /etc/roce-agent/config.yaml$' ||
    fail "$rpm: config.yaml is not %config(noreplace)"
  rpm -qp --scripts "$rpm" 2>/dev/null >"$tmp/rpm.scripts"
  for s in 'postinstall scriptlet' 'preuninstall scriptlet' 'postuninstall scriptlet'; do
    grep -q "$s" "$tmp/rpm.scripts" || fail "$rpm: no $s"
  done
  grep -q 'systemctl --no-reload enable' "$tmp/rpm.scripts" || fail "$rpm: %post is not the rpm one"
  rpm -K --nosignature "$rpm" | has 'digests OK' || fail "$rpm: rpm -K: $(rpm -K --nosignature "$rpm")"
  ok "$rpm: $(wc -l <"$tmp/rpm.files") files with their modes, %config(noreplace), $rpmarch, scriptlets, digests"
done

# The rpm scriptlets, run with $1 as rpm passes it, against a systemctl that
# records its calls (this machine does not install .rpm files).
mkdir -p "$tmp/shim"
printf '#!/bin/sh\necho "systemctl $*" >>"%s"\n' "$tmp/calls" >"$tmp/shim/systemctl"
chmod +x "$tmp/shim/systemctl"
rpmcalls() { # SCRIPT ARG: the systemctl calls, one line
  : >"$tmp/calls"
  PATH="$tmp/shim:$PATH" sh "packaging/nfpm/scripts/rpm/$1" "$2" >/dev/null || fail "rpm $1 $2: exit $?"
  grep -v daemon-reload "$tmp/calls" | tr '\n' ';' || true
}
[ "$(rpmcalls post 1)" = "systemctl --no-reload enable roce-agent.service;" ] || fail "rpm %post 1: $(rpmcalls post 1)"
[ -d /run/systemd/system ] || [ -z "$(rpmcalls post 2)" ] || fail "rpm %post 2 without systemd: $(rpmcalls post 2)"
[ "$(rpmcalls preun 0 | sed 's/systemctl stop roce-agent.service;//')" = "systemctl --no-reload disable roce-agent.service;" ] ||
  fail "rpm %preun 0: $(rpmcalls preun 0)"
[ -z "$(rpmcalls preun 1)" ] || fail "rpm %preun 1 (upgrade) touched the unit: $(rpmcalls preun 1)"
[ -z "$(rpmcalls postun 0)" ] || fail "rpm %postun 0: $(rpmcalls postun 0)"
ok "rpm scriptlets: install enables, upgrade leaves it enabled, erase disables"

# ---------------------------------------------------------------------------
step "2. lintian"
for deb in "$deb_amd64" "$deb_arm64"; do
  # Overrides shipped in the package (packaging/nfpm/lintian-overrides) apply;
  # anything else lintian says is a failure.
  out=$(lintian --pedantic --display-experimental --tag-display-limit 0 "$deb" 2>&1 |
    grep -v '^running with root privileges is not recommended!$' || true)
  [ -z "$out" ] || fail "lintian $deb (fix it, or override it with the reason in packaging/nfpm/lintian-overrides):
$out"
  ok "lintian --pedantic $deb: no tags ($(grep -c '^roce-agent: ' packaging/nfpm/lintian-overrides || true) overridden)"
done

# ---------------------------------------------------------------------------
step "3. the arm64 binary under qemu-aarch64"
elf_machine() { od -An -tx1 -j18 -N2 "$1" | tr -d ' \n'; }
[ "$(elf_machine "$bin_arm64")" = b700 ] || fail "$bin_arm64 is not an aarch64 ELF (e_machine $(elf_machine "$bin_arm64"))"
[ "$(elf_machine "$bin_amd64")" = 3e00 ] || fail "$bin_amd64 is not an x86-64 ELF"
dpkg-deb --fsys-tarfile "$deb_arm64" | tar -xO ./usr/bin/roce-agent >"$tmp/arm64.packaged"
cmp -s "$tmp/arm64.packaged" "$bin_arm64" || fail "$deb_arm64's /usr/bin/roce-agent is not $bin_arm64"
qemu=(qemu-aarch64 -L /usr/aarch64-linux-gnu)
"${qemu[@]}" "$bin_arm64" --version >"$tmp/arm64.version" || fail "qemu-aarch64 $bin_arm64 --version"
grep -q "^roce-agent $VERSION\$" "$tmp/arm64.version" && grep -q 'platform: linux/arm64' "$tmp/arm64.version" ||
  fail "arm64 --version: $(cat "$tmp/arm64.version")"
fixture=testdata/sysfs/dgx-h100/sys
"${qemu[@]}" "$bin_arm64" --config packaging/nfpm/config.yaml inventory --sysfs-root "$fixture" >"$tmp/arm64.inv" 2>&1 &&
  [ "$(grep -c mlx5_ "$tmp/arm64.inv")" -ge 8 ] || fail "arm64 inventory:
$(cat "$tmp/arm64.inv")"
"$bin_amd64" --config packaging/nfpm/config.yaml inventory --sysfs-root "$fixture" >"$tmp/amd64.inv" 2>&1 || true
diff -u "$tmp/amd64.inv" "$tmp/arm64.inv" || fail "the arm64 inventory differs from the amd64 one"
"${qemu[@]}" "$bin_arm64" --config packaging/nfpm/config.yaml inventory --sysfs-root "$fixture" -o json >"$tmp/arm64.json" &&
  grep -q '"rails"' "$tmp/arm64.json" || fail "arm64 inventory -o json"
ok "arm64 $VERSION: inventory of $fixture under qemu-aarch64 is the amd64 one ($(wc -l <"$tmp/arm64.inv") lines)"

# ---------------------------------------------------------------------------
if [ "$REPRO" = 1 ]; then
  step "4. reproducible build (amd64, again from this tree)"
  start=$SECONDS
  ARCHES=amd64 DIST="$tmp/repro" VERSION="$VERSION" bash packaging/build.sh >"$tmp/repro.log" 2>&1 ||
    fail "packaging/build.sh: $(tail -20 "$tmp/repro.log")"
  for f in "roce-agent_${ver}_linux_amd64" "roce-agent_${ver}_linux_amd64.cdx.json" \
    "roce-agent_${ver}_amd64.deb" "roce-agent_${ver}_amd64.rpm" "roce-agent_${ver}_chart.tgz"; do
    a=$(awk -v f="$f" '$2 == f { print $1 }' "$DIST/SHA256SUMS")
    b=$(sha256sum "$tmp/repro/$f" | cut -d' ' -f1)
    [ "$a" = "$b" ] || fail "$f differs when built again ($a, then $b): not reproducible, or the tree changed since make package"
  done
  ok "binary, .deb, .rpm, SBOM and chart built again: the same bytes ($((SECONDS - start)) s)"
else
  echo "skip 4. reproducible build (REPRO=0)"
fi

# ---------------------------------------------------------------------------
step "5. install, run, upgrade, remove, purge the amd64 .deb"
if dpkg-query -W -f='${Status}' roce-agent 2>/dev/null | has -v 'not-installed'; then
  fail "roce-agent is already installed here ($(dpkg-query -W -f='${Version} ${Status}' roce-agent)): this test installs and purges it"
fi
for d in /etc/roce-agent /var/lib/roce-agent /usr/lib/systemd/system/roce-agent.service; do
  [ ! -e "$d" ] || fail "$d exists: this test would remove it"
done
systemd_files() { find /etc/systemd/system /var/lib/systemd/deb-systemd-helper-enabled /var/lib/systemd/deb-systemd-helper-masked -name 'roce-agent*' 2>/dev/null | sort; }
[ -z "$(systemd_files)" ] || fail "roce-agent unit links left from an earlier install: $(systemd_files)"
host_net() { ip -d address; ip -4 rule; ip -6 rule; ip -4 route show table all; ip -6 route show table all; }
host_net >"$tmp/net.before"
wants=/etc/systemd/system/multi-user.target.wants/roce-agent.service
booted() { [ -d /run/systemd/system ]; }

installed_by_us=1
dpkg -i "$deb_amd64" >"$tmp/dpkg.log" 2>&1 </dev/null || fail "dpkg -i $deb_amd64: $(cat "$tmp/dpkg.log")"
[ "$(dpkg-query -W -f='${Version} ${Status}' roce-agent)" = "$(dpkg-deb -f "$deb_amd64" Version) install ok installed" ] ||
  fail "after dpkg -i: $(dpkg-query -W -f='${Version} ${Status}' roce-agent)"
grep -q 'enabled, not started' "$tmp/dpkg.log" || fail "postinst did not say what to do next: $(cat "$tmp/dpkg.log")"
check_mode() { [ "$(stat -c '%A %U:%G' "$1")" = "$2" ] || fail "$1 is $(stat -c '%A %U:%G' "$1"), want $2"; }
check_mode /usr/bin/roce-agent "-rwxr-xr-x root:root"
check_mode /etc/roce-agent/config.yaml "-rw-r--r-- root:root"
check_mode /var/lib/roce-agent "drwxr-xr-x root:root"
check_mode /usr/lib/systemd/system/roce-agent.service "-rw-r--r-- root:root"
cmp -s /etc/roce-agent/config.yaml packaging/nfpm/config.yaml || fail "/etc/roce-agent/config.yaml is not packaging/nfpm/config.yaml"
dpkg-query -W -f='${Conffiles}\n' roce-agent | has '^ /etc/roce-agent/config.yaml [0-9a-f]\{32\}$' ||
  fail "config.yaml is not a conffile: $(dpkg-query -W -f='${Conffiles}' roce-agent)"
[ -z "$(ls -A /var/lib/roce-agent)" ] || fail "/var/lib/roce-agent is not empty after install"
/usr/bin/roce-agent --version | has "^roce-agent $VERSION\$" || fail "roce-agent --version: $(/usr/bin/roce-agent --version)"
[ -L "$wants" ] && [ "$(readlink -f "$wants")" = /usr/lib/systemd/system/roce-agent.service ] ||
  fail "not enabled: $wants is $(ls -l "$wants" 2>&1)"
if booted; then
  systemctl is-enabled --quiet roce-agent.service || fail "systemctl is-enabled: $(systemctl is-enabled roce-agent.service)"
  ! systemctl is-active --quiet roce-agent.service || fail "the service was started on install"
fi
ok "installed: files, modes, conffile, $VERSION, enabled, not started"

# ExecStart, as the unit runs it, under a notify socket of our own.
read -r -a execstart <<<"$(sed -n 's/^ExecStart=[-+!@:]*//p' /usr/lib/systemd/system/roce-agent.service)"
[ "${execstart[0]}" = /usr/bin/roce-agent ] || fail "ExecStart is '${execstart[*]}'"
sock=$tmp/notify.sock
socat -u "UNIX-RECV:$sock" "OPEN:$tmp/notify.log,creat,append" &
listener=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || fail "the notify listener did not start"

set +e
NOTIFY_SOCKET=$sock timeout 30 "${execstart[@]}" >"$tmp/inert.out" 2>&1
code=$?
set -e
[ "$code" = 2 ] || fail "ExecStart with the packaged config: exit $code, want 2: $(cat "$tmp/inert.out")"
grep -q '^roce-agent: no desired state in config /etc/roce-agent/config.yaml' "$tmp/inert.out" ||
  fail "ExecStart with the packaged config did not say 'no desired state': $(cat "$tmp/inert.out")"
sleep 0.2
[ ! -s "$tmp/notify.log" ] || fail "the refused daemon notified: $(cat "$tmp/notify.log")"
host_net >"$tmp/net.after"
diff -u "$tmp/net.before" "$tmp/net.after" >/dev/null || fail "the refused daemon changed the host's network: $(diff -u "$tmp/net.before" "$tmp/net.after")"
[ -z "$(ls -A /var/lib/roce-agent)" ] || fail "the refused daemon wrote $(ls -A /var/lib/roce-agent)"
ok "inert: '${execstart[*]}' with the packaged config exits 2 (no desired state), no READY=1, nothing changed"

# A lab rail: a veth pair between two throwaway namespaces (README, "Run it").
ip netns add "$ns-host"
ip netns add "$ns-leaf"
ip -n "$ns-host" link set lo up
ip -n "$ns-leaf" link set lo up
ip -n "$ns-host" link add rail0 type veth peer name leaf0 netns "$ns-leaf"
ip -n "$ns-leaf" addr add 10.0.0.0/31 dev leaf0
ip -n "$ns-leaf" link set leaf0 up mtu 9000
cat >/etc/roce-agent/config.yaml <<'YAML'
# test-packages.sh: a lab rail, edited in place of the packaged config.
rails:
  - {rail: 0, netdev: rail0, ipv4: 10.0.0.1/31, routes: [10.0.0.0/8]}
lldp: {source: "off"}
YAML
cp /etc/roce-agent/config.yaml "$tmp/edited.yaml"
NOTIFY_SOCKET=$sock ip netns exec "$ns-host" "${execstart[@]}" >"$tmp/run.out" 2>&1 &
daemon=$!
for _ in $(seq 200); do grep -q 'READY=1' "$tmp/notify.log" 2>/dev/null && break; kill -0 "$daemon" 2>/dev/null || break; sleep 0.1; done
grep -q 'READY=1' "$tmp/notify.log" || fail "no READY=1 on the notify socket within 20 s: $(cat "$tmp/run.out")"
ip -n "$ns-host" -br address show dev rail0 | has '10.0.0.1/31' || fail "READY=1 but rail0 has no 10.0.0.1/31"
kill -TERM "$daemon"
set +e
wait "$daemon"
code=$?
set -e
daemon=
[ "$code" = 0 ] || fail "the daemon exited $code on SIGTERM: $(cat "$tmp/run.out")"
grep -q 'STOPPING=1' "$tmp/notify.log" || fail "no STOPPING=1 on SIGTERM"
[ -e /var/lib/roce-agent/desired.json ] || fail "no desired.json in /var/lib/roce-agent: $(ls -A /var/lib/roce-agent)"
ok "configured: READY=1 on the notify socket, rail0 converged, STOPPING=1 and exit 0 on SIGTERM, state in /var/lib/roce-agent"
ip netns del "$ns-host"
ip netns del "$ns-leaf"

# Upgrade to a newer version, built from this tree with a bumped version.
case "$VERSION" in *+*) up=$VERSION.upgradetest ;; *) up=$VERSION+upgradetest ;; esac
ARCHES=amd64 DIST="$tmp/up" VERSION="$up" bash packaging/build.sh >"$tmp/up.log" 2>&1 ||
  fail "building $up: $(tail -20 "$tmp/up.log")"
deb_up=$tmp/up/roce-agent_${up#v}_amd64.deb
old=$(dpkg-query -W -f='${Version}' roce-agent)
new=$(dpkg-deb -f "$deb_up" Version)
dpkg --compare-versions "$new" gt "$old" || fail "$new does not sort above $old"
dpkg -i "$deb_up" >"$tmp/dpkg.log" 2>&1 </dev/null || fail "dpkg -i $deb_up (upgrade): $(cat "$tmp/dpkg.log")"
[ "$(dpkg-query -W -f='${Version}' roce-agent)" = "$new" ] || fail "upgrade: installed $(dpkg-query -W -f='${Version}' roce-agent)"
/usr/bin/roce-agent --version | has "^roce-agent $up\$" || fail "after the upgrade: $(/usr/bin/roce-agent --version)"
cmp -s /etc/roce-agent/config.yaml "$tmp/edited.yaml" || fail "the upgrade replaced the edited /etc/roce-agent/config.yaml"
[ ! -e /etc/roce-agent/config.yaml.dpkg-new ] && [ ! -e /etc/roce-agent/config.yaml.dpkg-dist ] || fail "the upgrade left a config.yaml.dpkg-*"
[ -e /var/lib/roce-agent/desired.json ] || fail "the upgrade lost the state in /var/lib/roce-agent"
[ -L "$wants" ] || fail "the upgrade disabled the unit"
ok "upgraded $old -> $new: the edited config.yaml kept, state kept, still enabled"

# Remove: the conffile and the state stay, the unit is masked.
dpkg -r roce-agent >"$tmp/dpkg.log" 2>&1 </dev/null || fail "dpkg -r: $(cat "$tmp/dpkg.log")"
[ "$(dpkg-query -W -f='${Status}' roce-agent)" = "deinstall ok config-files" ] || fail "after dpkg -r: $(dpkg-query -W -f='${Status}' roce-agent)"
[ ! -e /usr/bin/roce-agent ] && [ ! -e /usr/lib/systemd/system/roce-agent.service ] || fail "dpkg -r left the binary or the unit"
cmp -s /etc/roce-agent/config.yaml "$tmp/edited.yaml" || fail "dpkg -r did not keep the edited config.yaml"
[ -e /var/lib/roce-agent/desired.json ] || fail "dpkg -r removed the state"
[ "$(readlink /etc/systemd/system/roce-agent.service)" = /dev/null ] || fail "dpkg -r did not mask the unit"
ok "removed: binary and unit gone, config.yaml and state kept, unit masked"

# Reinstall after remove: enabled again.
dpkg -i "$deb_up" >"$tmp/dpkg.log" 2>&1 </dev/null || fail "dpkg -i after dpkg -r: $(cat "$tmp/dpkg.log")"
[ -L "$wants" ] && [ ! -L /etc/systemd/system/roce-agent.service ] || fail "reinstall: not enabled, or still masked"
cmp -s /etc/roce-agent/config.yaml "$tmp/edited.yaml" || fail "the reinstall replaced the edited config.yaml"
ok "reinstalled: unmasked, enabled, the edited config.yaml kept"

# Purge: everything goes.
dpkg -P roce-agent >"$tmp/dpkg.log" 2>&1 </dev/null || fail "dpkg -P: $(cat "$tmp/dpkg.log")"
installed_by_us=
! dpkg-query -W -f='${Status}' roce-agent 2>/dev/null | has 'ok' || fail "after dpkg -P: $(dpkg-query -W -f='${Status}' roce-agent)"
for d in /etc/roce-agent /var/lib/roce-agent /usr/bin/roce-agent /usr/share/doc/roce-agent; do
  [ ! -e "$d" ] || fail "dpkg -P left $d"
done
[ -z "$(systemd_files)" ] || fail "dpkg -P left $(systemd_files)"
host_net >"$tmp/net.after"
diff -u "$tmp/net.before" "$tmp/net.after" >/dev/null || fail "the host's network changed: $(diff -u "$tmp/net.before" "$tmp/net.after")"
ok "purged: config, state, unit links gone; the host's network as it was"

echo "PASS packaging/test-packages.sh ($VERSION)"
