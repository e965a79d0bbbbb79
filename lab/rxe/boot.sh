#!/usr/bin/env bash
# boot.sh - boot ONE soft-RoCE guest under qemu (TCG) and wait for it to power off.
#
# Usage: boot.sh NAME DIR listen|connect SOCKET MAC_LINK MAC_MGMT
#   NAME      the qemu process name (the node name)
#   DIR       the guest's host directory: guest.env and agent.yaml in, results out.
#             The guest mounts it read-write at the same path, and the host's /
#             read-only (initramfs-init), so anything under / is visible there.
#   listen|connect, SOCKET
#             the guests' fabric link is a qemu "stream" netdev over an AF_UNIX
#             socket: lossless and without the ~22 ms of Nagle plus delayed ACK
#             that qemu 7.2's TCP netdevs add to every RDMA round trip. One guest
#             listens, the other connects, and qemu 7.2 cannot reconnect: start
#             the listener first and the other once SOCKET exists.
#   MAC_LINK, MAC_MGMT
#             distinct MACs per guest: every qemu gives its first NIC the same
#             default MAC, and the link-local GID comes from the MAC.
# The second NIC is qemu user networking (slirp): the guest reaches the host's
# 127.0.0.1:PORT as 10.0.2.2:PORT (the controller), nothing reaches the guest.
# romfile= drops the NICs' iPXE option ROMs: the kernel boots directly.
# The console goes to stdout. Env: RXE_WORK (prepare.sh's), RXE_MEM=1024 (MiB),
# RXE_SMP=1: two guests share the host's two cores; RXE_CPU: pin qemu to these
# host CPUs (taskset), so that the two guests do not trade cores mid-test;
# RXE_APPEND: more kernel arguments (loglevel=7 shows what quiet hides).
set -euo pipefail

[ $# = 6 ] || { echo "usage: boot.sh NAME DIR listen|connect SOCKET MAC_LINK MAC_MGMT" >&2; exit 2; }
NAME=$1 DIR=$2 MODE=$3 SOCK=$4 MAC_LINK=$5 MAC_MGMT=$6
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${RXE_WORK:-/var/cache/roce-agent-rxe}
# shellcheck source=/dev/null
. "$WORK/boot.env"   # KERNEL, INITRD: written by prepare.sh

case $MODE in
  listen) server=on ;;
  connect) server=off ;;
  *) echo "boot.sh: link mode must be listen or connect, not $MODE" >&2; exit 2 ;;
esac

PIN=()
[ -n "${RXE_CPU:-}" ] && PIN=(taskset -c "$RXE_CPU")
# tsc=reliable: without it perftest cannot calibrate the TSC under TCG and
# prints inf/nan latencies. exec: the caller's signals (and its kill of the
# process group) reach qemu itself.
exec "${PIN[@]}" qemu-system-x86_64 -name "$NAME" -accel tcg,thread=multi \
  -m "${RXE_MEM:-1024}" -smp "${RXE_SMP:-1}" -nographic -no-reboot \
  -kernel "$KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 quiet panic=-1 tsc=reliable rxe.dir=$DIR rxe.init=$HERE/guest-init ${RXE_APPEND:-}" \
  -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
  -virtfs "local,path=$DIR,mount_tag=guestdir,security_model=none" \
  -netdev "stream,id=fab,server=$server,addr.type=unix,addr.path=$SOCK" \
  -device "virtio-net-pci,netdev=fab,mac=$MAC_LINK,romfile=" \
  -netdev user,id=mgmt -device "virtio-net-pci,netdev=mgmt,mac=$MAC_MGMT,romfile=" \
  </dev/null
