#!/usr/bin/env bash
# Builds the root filesystem of the roce-agent container image for one
# architecture from Debian's packages, without a registry and without running
# any foreign code: mmdebstrap's "extract" variant resolves the packages below
# and their hard dependencies with apt, downloads them from the Debian mirror
# and unpacks them; no maintainer script runs, so an arm64 tree builds on an
# amd64 machine without qemu or binfmt. What the maintainer scripts would
# have made that the image needs is made here instead: the CA bundle,
# /etc/passwd and /etc/group, and a dpkg status database (so image scanners
# see the Debian packages and their versions).
#
#   packaging/image/rootfs.sh ARCH OUT.tar
#
# ARCH is a Debian architecture (amd64, arm64). OUT.tar is a reproducible
# tarball of the tree (sorted, owned by root, every time SOURCE_DATE_EPOCH),
# without /dev nodes, documentation but the copyright files, locales or
# iconv modules. Needs root (the tree holds root-owned files) and mmdebstrap.
#
# Environment:
#   PACKAGES          the packages (default: the list below; their dependencies follow)
#   SUITE             the Debian release (default trixie: its perftest 25.01
#                     binds its out-of-band connection with --bind_source_ip,
#                     bookworm's 4.5 cannot; docs/probes.md)
#   DEBIAN_MIRROR     default http://deb.debian.org/debian
#   SECURITY_MIRROR   default http://deb.debian.org/debian-security
#   SOURCE_DATE_EPOCH every file time in the tarball (default 0)
set -euo pipefail

die() { echo "packaging/image/rootfs.sh: $*" >&2; exit 1; }

[ $# -eq 2 ] || die "usage: $0 ARCH OUT.tar"
arch=$1
out=$2

# What the agent runs (probe/, nic/): ib_write_bw and ib_write_lat
# (perftest), rping (rdmacm-utils), ip and tc (iproute2), the verbs
# providers that open the NICs (libmlx5, librxe, ...: ibverbs-providers),
# the system CA roots for the controller's TLS (ca-certificates),
# /etc/os-release (base-files) and libatm1 (the library of tc's ATM plugin,
# which iproute2 only recommends). lldpctl is left out: lldpd pulls in
# net-snmp, perl and ICU (about 100 MB); without it the agent listens for
# LLDP itself.
PACKAGES=${PACKAGES:-base-files ca-certificates iproute2 ibverbs-providers libatm1 perftest rdmacm-utils}
SUITE=${SUITE:-trixie}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-0}

[ "$(id -u)" = 0 ] || die "needs root (the tree holds root-owned files)"
command -v mmdebstrap >/dev/null || die "mmdebstrap not found: apt-get install mmdebstrap"
case "$arch" in
  amd64) triplet=x86_64-linux-gnu ;;
  arm64) triplet=aarch64-linux-gnu ;;
  *) die "unsupported architecture $arch" ;;
esac

read -ra pkgs <<<"$PACKAGES"
include=$(IFS=,; echo "${pkgs[*]}")

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs

# --skip=cleanup/apt/cache keeps the .debs for the status database below.
mmdebstrap --quiet --variant=extract --architectures="$arch" \
  --include="$include" \
  --skip=cleanup/apt/cache \
  "$SUITE" "$root" \
  "deb $DEBIAN_MIRROR $SUITE main" \
  "deb $DEBIAN_MIRROR $SUITE-updates main" \
  "deb $SECURITY_MIRROR $SUITE-security main"

# A dpkg status database of what was unpacked, as dpkg would have written it.
debs=("$root"/var/cache/apt/archives/*.deb)
[ -e "${debs[0]}" ] || die "mmdebstrap left no packages in var/cache/apt/archives"
mkdir -p "$root/var/lib/dpkg" "$work/status"
for deb in "${debs[@]}"; do
  pkg=$(dpkg-deb --field "$deb" Package)
  dpkg-deb --field "$deb" | awk '{print} /^Package:/{print "Status: install ok installed"}' >"$work/status/$pkg"
  echo >>"$work/status/$pkg"
done
# Sorted by package name, as dpkg keeps it.
(cd "$work/status" && find . -type f -printf '%f\n' | LC_ALL=C sort | while read -r pkg; do cat "$pkg"; done) >"$root/var/lib/dpkg/status"
npkgs=$(grep -c '^Package:' "$root/var/lib/dpkg/status")
[ "$npkgs" = "${#debs[@]}" ] || die "status database: $npkgs packages for ${#debs[@]} .debs"

# What the image does not need: the downloaded packages, apt's state (there
# is no apt in the image), device nodes (the runtime mounts /dev),
# documentation (the copyright files stay: they are the licences), locales
# and glibc's iconv modules.
rm -rf "$root"/var/cache/apt "$root"/var/lib/apt "$root"/etc/apt "$root"/var/log/* \
  "$root"/usr/share/man "$root"/usr/share/info "$root"/usr/share/locale "$root"/usr/share/lintian \
  "$root"/usr/share/bug "$root"/usr/share/bash-completion "$root"/usr/share/zsh \
  "$root/usr/lib/$triplet/gconv"
find "$root/dev" -mindepth 1 -delete
find "$root/usr/share/doc" -mindepth 1 \( -type f -o -type l \) ! -name copyright -delete
find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete

# ca-certificates' postinst: every Mozilla root, enabled, in one bundle (the
# file Go's crypto/x509 reads first).
if [ -d "$root/usr/share/ca-certificates/mozilla" ]; then
  (cd "$root/usr/share/ca-certificates" && find mozilla -name '*.crt' | LC_ALL=C sort) >"$root/etc/ca-certificates.conf"
  mkdir -p "$root/etc/ssl/certs"
  while read -r crt; do
    cat "$root/usr/share/ca-certificates/$crt"
    # update-ca-certificates ends each certificate with a newline
    [ -z "$(tail -c1 "$root/usr/share/ca-certificates/$crt")" ] || echo
  done <"$root/etc/ca-certificates.conf" >"$root/etc/ssl/certs/ca-certificates.crt"
fi

# base-passwd's postinst: root and nobody (there is no shell in the image).
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
EOF
chmod 644 "$root/etc/passwd" "$root/etc/group"

# The agent's directories: its config (mounted) and state_dir.
mkdir -p "$root/etc/roce-agent" "$root/var/lib/roce-agent" "$root/root" "$root/run" "$root/tmp" "$root/var/tmp"
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
rm -f "$root/etc/hostname" "$root/etc/resolv.conf" # the runtime's

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --clamp-mtime --owner=0 --group=0 --numeric-owner \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
echo "rootfs $arch: $npkgs packages, $(du -sh --apparent-size "$out" | cut -f1)B" >&2
