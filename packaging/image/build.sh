#!/usr/bin/env bash
# Builds the roce-agent container image for amd64 and arm64 (`make image`),
# with podman, from Debian's packages, without pulling anything from a
# container registry:
#
#   dist/roce-agent-image_<ver>_<arch>.tar   one image per architecture, as
#                                            `docker save` writes it (docker
#                                            load, podman load, ctr import),
#                                            tagged IMAGE:<tag>
#   dist/roce-agent-image_<ver>.oci.tar      both, behind one multi-arch index,
#                                            as an OCI archive (skopeo copy --all
#                                            oci-archive:... docker://...)
#
# <ver> is packaging/version.sh's version without the leading v; <tag> is
# <ver> with '+' (not allowed in a tag) as '_'. The image (Containerfile) is
# FROM scratch: a Debian layer that packaging/image/rootfs.sh makes with
# mmdebstrap (perftest, rdmacm-utils, iproute2, ibverbs-providers,
# ca-certificates and their libraries), then the agent, /usr/bin/roce-agent.
# The Debian layer of each architecture is cached in CACHE_DIR and rebuilt
# when rootfs.sh or the package list changes or it is older than
# ROOTFS_MAX_AGE_DAYS (Debian's security updates). The agent binary is
# dist/roce-agent_<ver>_linux_<arch> when packaging/build.sh made it, else
# built here the same way. Every time in the image is SOURCE_DATE_EPOCH, so
# the same binaries and Debian layer give the same image digests.
# packaging/image/test.sh checks what this writes.
#
# Needs root, podman, mmdebstrap and, for arm64 on another machine,
# gcc-aarch64-linux-gnu (apt-get install podman mmdebstrap gcc-aarch64-linux-gnu).
# podman runs with its own storage in a temporary directory (vfs, no
# daemon, no cgroups: only `podman build`, never `podman run`), removed at
# the end.
#
# Environment:
#   VERSION             the version (default: packaging/version.sh)
#   ARCHES              default "amd64 arm64"
#   DIST                default dist
#   IMAGE               the repository in the tags (default ghcr.io/roce-agent/roce-agent,
#                       as packaging/helm)
#   CACHE_DIR           default /var/cache/roce-agent-image
#   ROOTFS_MAX_AGE_DAYS default 7; 0 rebuilds the Debian layer
#   SOURCE_DATE_EPOCH   default: the commit time
#   CC_amd64, CC_arm64  the C compilers for the agent (default gcc on the host's
#                       own arch, else x86_64-linux-gnu-gcc / aarch64-linux-gnu-gcc)
#   PACKAGES, SUITE, DEBIAN_MIRROR, SECURITY_MIRROR: see rootfs.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
DIST=${DIST:-dist}
IMAGE=${IMAGE:-ghcr.io/roce-agent/roce-agent}
CACHE_DIR=${CACHE_DIR:-/var/cache/roce-agent-image}
ROOTFS_MAX_AGE_DAYS=${ROOTFS_MAX_AGE_DAYS:-7}
export SUITE=${SUITE:-trixie}

die() { echo "packaging/image/build.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

[ "$(id -u)" = 0 ] || die "needs root (the Debian tree holds root-owned files; podman's storage)"
for tool in podman mmdebstrap; do
  command -v $tool >/dev/null || die "$tool not found: apt-get install podman mmdebstrap"
done

# shellcheck source=../lib.sh
. packaging/lib.sh
tag=${ver//+/_}
# e_machine of an ELF file: 62 x86-64, 183 aarch64.
elf_machine() { od -An -tu2 -j18 -N2 "$1" | tr -d ' \n'; }
want_machine() {
  case "$1" in amd64) echo 62 ;; arm64) echo 183 ;; *) die "unsupported architecture $1" ;; esac
}
for arch in $ARCHES; do want_machine "$arch" >/dev/null; done

mkdir -p "$DIST" "$CACHE_DIR"
work=$(mktemp -d "${TMPDIR:-/var/tmp}/roce-agent-image.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/tmp"
export TMPDIR=$work/tmp
# podman with storage of its own: nothing of the machine's containers is
# touched, and nothing is left behind.
P=(podman --root "$work/storage" --runroot "$work/run" --storage-driver vfs --events-backend none)

log "roce-agent image $VERSION ($COMMIT, $DATE) for $ARCHES: $IMAGE:$tag"
total=$SECONDS

# The agent binaries.
declare -A bin
for arch in $ARCHES; do
  b=$DIST/roce-agent_${ver}_linux_${arch}
  if [ ! -f "$b" ]; then
    log "go build linux/$arch (CC=$(cc_for "$arch"))"
    start=$SECONDS
    b=$work/roce-agent-$arch
    build_agent "$arch" "$b"
    log "  $((SECONDS - start)) s"
  else
    log "agent linux/$arch: $b"
  fi
  [ "$(elf_machine "$b")" = "$(want_machine "$arch")" ] || die "$b is not a linux/$arch binary"
  bin[$arch]=$b
done

# The Debian layers, cached.
key=$( (cat packaging/image/rootfs.sh
  echo "${PACKAGES:-} $SUITE ${DEBIAN_MIRROR:-} ${SECURITY_MIRROR:-}") | sha256sum | cut -c1-16)
exec 9>"$CACHE_DIR/lock"
flock 9 # one build at a time fills the cache
declare -A rootfs
for arch in $ARCHES; do
  r=$CACHE_DIR/rootfs-$SUITE-$arch-$key.tar
  if [ -f "$r" ] && [ "$ROOTFS_MAX_AGE_DAYS" -gt 0 ] &&
    [ -z "$(find "$r" -mmin +$((ROOTFS_MAX_AGE_DAYS * 1440)))" ]; then
    log "Debian $SUITE $arch: cached $r"
  else
    log "Debian $SUITE $arch: mmdebstrap"
    start=$SECONDS
    # Its times do not matter: podman build --timestamp sets every one.
    SOURCE_DATE_EPOCH=0 packaging/image/rootfs.sh "$arch" "$r"
    find "$CACHE_DIR" -maxdepth 1 -name "rootfs-*-$arch-*.tar" ! -name "$(basename "$r")" -delete
    log "  $((SECONDS - start)) s"
  fi
  rootfs[$arch]=$r
done

# The images. Each context holds only rootfs.tar and roce-agent.
declare -A iid
for arch in $ARCHES; do
  log "podman build linux/$arch"
  start=$SECONDS
  ctx=$work/ctx-$arch
  mkdir -p "$ctx"
  ln "${rootfs[$arch]}" "$ctx/rootfs.tar" 2>/dev/null || cp "${rootfs[$arch]}" "$ctx/rootfs.tar"
  cp "${bin[$arch]}" "$ctx/roce-agent"
  "${P[@]}" build --quiet --platform "linux/$arch" --timestamp "$SOURCE_DATE_EPOCH" --identity-label=false \
    --build-arg VERSION="$VERSION" --build-arg REVISION="$COMMIT" --build-arg CREATED="$DATE" \
    --iidfile "$work/iid-$arch" -f packaging/image/Containerfile "$ctx" >/dev/null
  iid[$arch]=$(sed "s/^sha256://" "$work/iid-$arch")
  out=$DIST/roce-agent-image_${ver}_${arch}.tar
  rm -f "$out"
  # By ID: the archive's only tag is IMAGE:<tag>.
  "${P[@]}" push --quiet "${iid[$arch]}" "docker-archive:$out:$IMAGE:$tag"
  log "  $((SECONDS - start)) s: $out"
done

log "multi-arch index"
start=$SECONDS
"${P[@]}" manifest create "$IMAGE:$tag" >/dev/null
for arch in $ARCHES; do
  "${P[@]}" manifest add "$IMAGE:$tag" "containers-storage:${iid[$arch]}" >/dev/null
done
oci=$DIST/roce-agent-image_${ver}.oci.tar
rm -f "$oci"
# An OCI layout directory, then a tarball of it with fixed times and order:
# the same images give the same bytes.
"${P[@]}" manifest push --quiet --all "$IMAGE:$tag" "oci:$work/oci:$tag"
tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$work/oci" -cf "$oci" oci-layout index.json blobs
log "  $((SECONDS - start)) s: $oci"

log "done in $((SECONDS - total)) s"
(cd "$DIST" && ls -l roce-agent-image_"${ver}"[._]*) >&2
