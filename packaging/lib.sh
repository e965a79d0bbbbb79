# lib.sh: what packaging/build.sh and packaging/image/build.sh share, sourced
# from the repository root once die() and GO are set: the version, commit and
# date a build stamps, and how roce-agent is built for an architecture, so
# the packages and the image carry the same binary.

VERSION=$(packaging/version.sh)
ver=${VERSION#v} # file names and package versions
COMMIT=$(git rev-parse HEAD 2>/dev/null || echo unknown)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
  SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null) ||
    die "not a git checkout: set SOURCE_DATE_EPOCH (and VERSION)"
fi
export SOURCE_DATE_EPOCH
DATE=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
hostarch=$($GO env GOHOSTARCH)

# cc_for ARCH: the C compiler for linux/ARCH (CC_<arch> wins).
cc_for() {
  local arch=$1 var="CC_$1"
  if [ -n "${!var:-}" ]; then echo "${!var}"; return; fi
  if [ "$arch" = "$hostarch" ]; then echo "${CC:-gcc}"; return; fi
  case "$arch" in
    amd64) echo x86_64-linux-gnu-gcc ;;
    arm64) echo aarch64-linux-gnu-gcc ;;
    *) die "no C compiler known for $arch: set CC_$arch" ;;
  esac
}

# build_agent ARCH OUT: roce-agent for linux/ARCH (cgo), reproducible: no
# paths, no build ID, no VCS stamp; version, commit and date from above.
build_agent() {
  local arch=$1 out=$2 cc
  cc=$(cc_for "$arch")
  command -v "$cc" >/dev/null || die "C compiler $cc for $arch not found (apt-get install gcc-aarch64-linux-gnu, or set CC_$arch)"
  CGO_ENABLED=1 GOOS=linux GOARCH=$arch CC=$cc CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" \
    $GO build -trimpath -buildvcs=false -mod=readonly -buildmode=pie \
    -ldflags "-s -w -buildid= -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE" \
    -o "$out" ./cmd/roce-agent
}
