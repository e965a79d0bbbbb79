#!/usr/bin/env bash
# prepare.sh - get everything the soft-RoCE guests need, once; cached afterwards.
#
# The host kernel has no rdma_rxe, so the test boots qemu guests with Debian's
# own kernel. A guest has no disk image: its initramfs (busybox + the kernel
# modules) mounts the HOST's root filesystem read-only over virtio-9p and
# chroots into it, so the host's perftest, rdma-core, iproute2 and the test's
# freshly built binaries run in the guest unchanged. That is why the RDMA user
# space is installed here, on the host, although the host cannot use it.
#
# Writes into $RXE_WORK (default /var/cache/roce-agent-rxe):
#   debs/          the kernel package
#   kernel-<pkg>/  the unpacked package
#   initramfs-<kver>.cpio, boot.env (KERNEL=, INITRD=, KVER=, for boot.sh)
# Exit status: 0 ready; 3 something is missing that this host cannot get (no
# root, apt or the download failed), with one line on stderr saying what: the
# Go test skips with that line; anything else is a failure.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
WORK=${RXE_WORK:-/var/cache/roce-agent-rxe}
PKGS="qemu-system-x86 busybox-static kmod cpio xz-utils perftest rdma-core rdmacm-utils ibverbs-providers ibverbs-utils iproute2 iputils-ping curl jq"
# Modules loaded from the initramfs before the chroot: the host's /lib/modules
# holds nothing for the guest kernel, so nothing can be loaded later.
# crc32_generic: rdma_rxe asks the crypto API for "crc32" and fails without it.
MODS="virtio_pci virtio_net 9pnet_virtio 9p veth crc32_generic rdma_rxe ib_uverbs rdma_ucm"

missing() { echo "prepare.sh: $*" >&2; exit 3; }

[ "$(id -u)" = 0 ] || missing "needs root (apt-get, qemu, network namespaces in the guest)"
mkdir -p "$WORK/debs"
# apt-get download runs as _apt: let it write there (else a warning per run)
chown _apt "$WORK/debs" 2>/dev/null || true

# ---- host packages (quietly skipped when already installed)
need=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || need="$need $p"
done
if [ -n "$need" ]; then
  echo "apt-get install$need" >&2
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $need; } >&2 ||
    missing "apt-get install failed; missing:$need"
fi

# ---- Debian's 6.12 kernel (Debian 12 ships it next to 6.1): whatever
# linux-image-6.12-amd64 points at. Not 6.1: its rdma_rxe spins in softirq
# when the leaf drops its frames (the MTU break), a soft lockup that hangs a
# one-CPU guest; 6.12's rxe fails the work request instead. RXE_KERNEL_PKG
# picks another package.
KMETA=linux-image-6.12-amd64
KPKG=${RXE_KERNEL_PKG:-$(apt-cache depends "$KMETA" 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}')}
[ -n "$KPKG" ] || missing "apt-cache knows no $KMETA (no Debian 12 package lists?)"
cd "$WORK/debs"
if ! ls "${KPKG}"_*.deb >/dev/null 2>&1; then
  apt-get download -q "$KPKG" >&2 || { apt-get update -q >&2 && apt-get download -q "$KPKG" >&2; } ||
    missing "apt-get download $KPKG failed"
fi
KDEB=$(ls "$WORK/debs/${KPKG}"_*.deb | head -1)
KDIR=$WORK/kernel-$KPKG
if [ ! -e "$KDIR/.unpacked" ]; then
  rm -rf "$KDIR" && mkdir -p "$KDIR"
  dpkg-deb -x "$KDEB" "$KDIR"
  touch "$KDIR/.unpacked"
fi
MODROOT=$KDIR/lib/modules
[ -d "$MODROOT" ] || MODROOT=$KDIR/usr/lib/modules
KVER=$(ls "$MODROOT" | head -1)
KERNEL=$KDIR/boot/vmlinuz-$KVER
[ -f "$KERNEL" ] || { echo "prepare.sh: no $KERNEL in $KDEB" >&2; exit 1; }
# depmod and modprobe -d want <base>/lib/modules/<kver>, whatever the package layout
KBASE=$WORK/kbase-$KVER
mkdir -p "$KBASE/lib/modules"
ln -sfn "$MODROOT/$KVER" "$KBASE/lib/modules/$KVER"
[ -f "$MODROOT/$KVER/modules.dep" ] || depmod -b "$KBASE" "$KVER"

# ---- initramfs: rebuilt when this script, the init or the kernel changed
INITRD=$WORK/initramfs-$KVER.cpio
STAMP=$(cat "$HERE/prepare.sh" "$HERE/initramfs-init" | sha256sum | cut -c1-16)-$KVER
if [ "$(cat "$INITRD.stamp" 2>/dev/null)" != "$STAMP" ]; then
  R=$(mktemp -d "$WORK/initramfs.XXXXXX")
  trap 'rm -rf "$R"' EXIT
  mkdir -p "$R"/{bin,proc,sys,dev,mnt/root,lib/modules/"$KVER"}
  cp /bin/busybox "$R/bin/busybox"
  for a in sh mount mkdir modprobe chroot cat sleep poweroff sync echo; do ln -s busybox "$R/bin/$a"; done
  # each module with its dependencies, decompressed: busybox modprobe reads plain .ko
  for m in $MODS; do
    modprobe -d "$KBASE" -S "$KVER" --show-depends "$m" || missing "kernel $KVER has no module $m"
  done | awk '$1=="insmod"{print $2}' | awk '!seen[$0]++' | while read -r f; do
    rel=${f#*/lib/modules/$KVER/}
    mkdir -p "$R/lib/modules/$KVER/$(dirname "$rel")"
    case $f in
      *.xz)  xz -dc "$f" > "$R/lib/modules/$KVER/${rel%.xz}" ;;
      *.zst) zstd -qdc "$f" > "$R/lib/modules/$KVER/${rel%.zst}" ;;
      *)     cp "$f" "$R/lib/modules/$KVER/$rel" ;;
    esac
  done
  cp "$MODROOT/$KVER"/modules.builtin* "$MODROOT/$KVER/modules.order" "$R/lib/modules/$KVER/" 2>/dev/null || true
  depmod -b "$R" "$KVER"
  echo "$MODS" > "$R/modules.list"
  install -m 0755 "$HERE/initramfs-init" "$R/init"
  (cd "$R" && find . -print0 | cpio --null -o -H newc --quiet) > "$INITRD.tmp"
  mv "$INITRD.tmp" "$INITRD"
  echo "$STAMP" > "$INITRD.stamp"
fi

printf 'KERNEL=%s\nINITRD=%s\nKVER=%s\n' "$KERNEL" "$INITRD" "$KVER" > "$WORK/boot.env"
cat "$WORK/boot.env"
