#!/usr/bin/env bash
# Captures the netlink requests iproute2's dcb sends for the commands below,
# on a veth in a throwaway namespace (the kernel answers EOPNOTSUPP only
# after receiving each request). Each <name>.txt holds the command and
# strace's hex dump of the bytes sent; the qos tests require the agent's
# encoder to produce the same bytes (sequence number aside).
# Needs root, iproute2 (dcb) and strace. Run from this directory.
set -euo pipefail
ns=dcb-capture-$$
ip netns add "$ns"
trap 'ip netns del "$ns"' EXIT
ip -n "$ns" link add v0 type veth peer name v1

capture() {
  local name=$1; shift
  {
    echo "# dcb $*"
    echo "# $(dcb -V 2>&1 | head -1), kernel $(uname -r)"
    ip netns exec "$ns" strace -e trace=sendto -e write=3 dcb "$@" 2>&1 | grep '^ | [0-9a-f]\{5\} ' || true
  } > "$name.txt"
}

capture app-add-dscp-26-3 app add dev v0 dscp-prio 26:3
capture app-add-dscp-26-3-48-6 app add dev v0 dscp-prio 26:3 48:6
capture app-del-dscp-26-3 app del dev v0 dscp-prio 26:3
capture dcbx-set-host-ieee dcbx set dev v0 host ieee
capture dcbx-show dcbx show dev v0
capture pfc-set-3-on pfc set dev v0 prio-pfc 3:on
capture app-show app show dev v0
