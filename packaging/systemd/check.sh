#!/usr/bin/env bash
# check.sh: checks packaging/systemd/roce-agent.service with systemd-analyze
# (the `systemd` package; systemd need not be PID 1):
#   1. `systemd-analyze verify` prints nothing: no unknown or misspelt
#      setting, no missing dependency, every Exec*= command executable;
#   2. `systemd-analyze security --offline=yes` rates the sandbox at an
#      exposure of at most 3.0 (MAX_EXPOSURE) and the score is printed.
#
#   bash packaging/systemd/check.sh [roce-agent binary]
#
# verify wants ExecStart='s /usr/bin/roce-agent to exist, so it runs on a
# scratch root (--root) holding the unit, the binary (the argument, else
# bin/roce-agent, else one built here), kill (ExecReload=) and the host's
# unit directory (the targets and modprobe@.service the unit names). The
# unit file itself is checked as shipped: nothing in it is rewritten.
set -euo pipefail

MAX_EXPOSURE=${MAX_EXPOSURE:-3.0}
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
unit="$here/roce-agent.service"

command -v systemd-analyze >/dev/null || {
	echo "check.sh: systemd-analyze not found (apt-get install systemd)" >&2
	exit 2
}
systemd-analyze --version | head -n 1

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

bin=${1:-}
if [[ -z $bin ]]; then
	if [[ -x $repo/bin/roce-agent ]]; then
		bin=$repo/bin/roce-agent
	else
		bin=$scratch/roce-agent
		(cd "$repo" && go build -o "$bin" ./cmd/roce-agent)
	fi
fi

# The scratch root: /bin is usr/bin as on a merged-/usr system.
root=$scratch/root
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/bin "$root/bin"
for d in /usr/lib/systemd/system /lib/systemd/system; do
	if [[ -d $d ]]; then
		cp -a "$d" "$root/usr/lib/systemd/"
		break
	fi
done
cp "$bin" "$root/usr/bin/roce-agent"
cp "$(type -P kill)" "$root/usr/bin/kill"
cp "$unit" "$root/usr/lib/systemd/system/roce-agent.service"

fail=0
# --man=no: man:roce-agent(1) comes with the package, not with this tree.
out=$(systemd-analyze verify --root="$root" --man=no --recursive-errors=yes roce-agent.service 2>&1) || fail=1
if [[ -n $out ]]; then
	fail=1
fi
if ((fail)); then
	echo "systemd-analyze verify: FAIL"
	printf '%s\n' "$out"
else
	echo "systemd-analyze verify: clean"
fi

# security reports the exposure as "Overall exposure level for
# roce-agent.service: 2.4 OK"; --threshold is ten times the exposure.
threshold=$(awk -v m="$MAX_EXPOSURE" 'BEGIN { printf "%d", m * 10 }')
sec_rc=0
sec=$(systemd-analyze security --offline=yes --threshold="$threshold" --no-pager "$unit" 2>&1) || sec_rc=$?
score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for roce-agent.service: \([0-9.]*\).*/\1/p')
if [[ -z $score ]]; then
	echo "systemd-analyze security: no exposure level in its output"
	printf '%s\n' "$sec"
	exit 1
fi
# The settings that still cost exposure, for the log.
printf '%s\n' "$sec" | grep '✗' | sed 's/  */ /g' || true
if ((sec_rc != 0)) || awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
	echo "systemd-analyze security: exposure $score, above $MAX_EXPOSURE: FAIL"
	fail=1
else
	echo "systemd-analyze security: exposure $score (at most $MAX_EXPOSURE): OK"
fi
exit "$fail"
