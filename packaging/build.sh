#!/usr/bin/env bash
# Builds the release artefacts of roce-agent into dist/ (`make package`):
#
#   roce-agent_<ver>_linux_<arch>            the binaries (amd64, arm64)
#   roce-agent_<ver>_<arch>.deb, .rpm        the packages (nfpm, packaging/nfpm/nfpm.yaml)
#   roce-agent_<ver>_linux_<arch>.cdx.json   a CycloneDX SBOM of each binary (packaging/sbom)
#   roce-agent_<ver>_chart.tgz               the Helm chart, appVersion = this build's image
#                                            tag (packaging/kubernetes/chartpkg)
#   SHA256SUMS                               the digests of all of the above
#
# <ver> is packaging/version.sh's version without the leading v (from git
# tags: v0.0.0-dev+<sha> before the first tag). The builds are reproducible:
# -trimpath, an empty build ID, the commit time as the build date and as
# every file time in the packages (SOURCE_DATE_EPOCH), so the same commit
# gives the same bytes (packaging/test-packages.sh checks the binaries). No
# VCS stamp (-buildvcs=false): the commit and date come from -ldflags, so a
# source tarball built with VERSION and SOURCE_DATE_EPOCH set gives the same
# binary as the checkout.
#
# Environment:
#   VERSION            the version (default: packaging/version.sh)
#   ARCHES             what to build (default "amd64 arm64")
#   DIST               where (default dist)
#   SOURCE_DATE_EPOCH  the build date (default: the commit time)
#   UNIT               the systemd unit to package (default packaging/systemd/roce-agent.service)
#   CC_amd64, CC_arm64 the C cross compilers (go-nvml is cgo; default gcc on the
#                      host's own arch, else x86_64-linux-gnu-gcc or
#                      aarch64-linux-gnu-gcc: apt-get install gcc-aarch64-linux-gnu)
#   NFPM               an nfpm binary (default: $(go env GOPATH)/bin/nfpm, installed
#                      at NFPM_VERSION when missing or another version)
set -euo pipefail
cd "$(dirname "$0")/.."

NFPM_VERSION=v2.45.2
GO=${GO:-go}
ARCHES=${ARCHES:-amd64 arm64}
DIST=${DIST:-dist}
UNIT=${UNIT:-packaging/systemd/roce-agent.service}

die() { echo "packaging/build.sh: $*" >&2; exit 1; }
log() { echo "==> $*" >&2; }

# shellcheck source=lib.sh
. packaging/lib.sh
[ -f "$UNIT" ] || die "the systemd unit $UNIT does not exist (set UNIT)"

# nfpm: a pinned CLI, not a module dependency of roce-agent.
NFPM=${NFPM:-$($GO env GOPATH)/bin/nfpm}
if ! $GO version -m "$NFPM" 2>/dev/null | grep -q "mod[[:space:]]*github.com/goreleaser/nfpm/v2[[:space:]]*$NFPM_VERSION"; then
  log "installing nfpm $NFPM_VERSION"
  GOBIN=$(dirname "$NFPM") $GO install "github.com/goreleaser/nfpm/v2/cmd/nfpm@$NFPM_VERSION"
fi

mkdir -p "$DIST"
BUILDDIR=$(mktemp -d)
trap 'rm -rf "$BUILDDIR"' EXIT
# This version's artefacts are rebuilt from scratch.
for arch in $ARCHES; do
  rm -f "$DIST/roce-agent_${ver}_linux_${arch}" "$DIST/roce-agent_${ver}_linux_${arch}.cdx.json" \
    "$DIST/roce-agent_${ver}_${arch}.deb" "$DIST/roce-agent_${ver}_${arch}.rpm"
done
rm -f "$DIST/SHA256SUMS"

log "roce-agent $VERSION ($COMMIT, $DATE) for $ARCHES"
for arch in $ARCHES; do
  log "go build linux/$arch (CC=$(cc_for "$arch"))"
  start=$SECONDS
  build_agent "$arch" "$DIST/roce-agent_${ver}_linux_${arch}"
  log "  $((SECONDS - start)) s"
done

# The man page, from the help texts of a binary this machine runs.
host_bin=$DIST/roce-agent_${ver}_linux_${hostarch}
if [ ! -x "$host_bin" ]; then
  host_bin=$BUILDDIR/roce-agent
  CGO_ENABLED=1 CGO_CFLAGS="-O2 -g -Wno-deprecated-declarations" \
    $GO build -trimpath -buildvcs=false -mod=readonly -buildmode=pie -ldflags "$LDFLAGS" -o "$host_bin" ./cmd/roce-agent
fi
roff() { # help text as no-fill roff
  sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e "s/^\\([.']\\)/\\\\\\&\\1/"
}
{
  echo ".TH ROCE\\-AGENT 1 \"${DATE%%T*}\" \"roce-agent ${VERSION}\" \"User Commands\""
  echo ".SH NAME"
  echo "roce\\-agent \\- the RoCE node agent for GPU servers"
  echo ".SH SYNOPSIS"
  echo ".B roce\\-agent"
  echo "[\\fIflags\\fR] \\fIcommand\\fR [\\fIarguments\\fR]"
  echo ".SH DESCRIPTION"
  echo ".nf"
  "$host_bin" --help | roff
  echo ".fi"
  echo ".SH COMMANDS"
  for cmd in $("$host_bin" --help | awk '/^Available Commands:/{on=1; next} on && /^$/{exit} on{print $1}'); do
    [ "$cmd" = help ] && continue
    echo ".SS roce\\-agent $cmd"
    echo ".nf"
    "$host_bin" help "$cmd" | roff
    echo ".fi"
  done
  cat <<'ROFF'
.SH FILES
.TP
.I /etc/roce\-agent/config.yaml
the configuration; as packaged it holds settings only, no desired state, so
.B roce\-agent run
refuses to start (exit 2) until rails, qos or controller.url are configured
.TP
.I /var/lib/roce\-agent
state_dir: the lock, owned.json, desired.json, nccl.env, controller\-config.json
.TP
.I /usr/lib/systemd/system/roce\-agent.service
the systemd unit (Type=notify)
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
/usr/share/doc/roce\-agent/README.md,
https://github.com/roce\-agent/roce\-agent/tree/main/docs
ROFF
} >"$BUILDDIR/roce-agent.1"
gzip -9n <"$BUILDDIR/roce-agent.1" >"$BUILDDIR/roce-agent.1.gz"

# Debian's changelog (lintian wants one); the project's is CHANGELOG.md.
debver=$ver
case "$debver" in *-*) debver=${debver/-/\~} ;; esac
{
  echo "roce-agent ($debver) unstable; urgency=medium"
  echo
  echo "  * Built from commit $COMMIT."
  echo "  * The project's changes are in /usr/share/doc/roce-agent/CHANGELOG.md."
  echo
  echo " -- The roce-agent Authors <roce-agent@users.noreply.github.com>  $(LC_ALL=C date -u -R -d "@$SOURCE_DATE_EPOCH")"
} | gzip -9n >"$BUILDDIR/changelog.gz"

# The SBOM generator: stdlib only, in this module.
$GO build -trimpath -mod=readonly -o "$BUILDDIR/sbom" ./packaging/sbom

for arch in $ARCHES; do
  bin=$DIST/roce-agent_${ver}_linux_${arch}
  for p in deb rpm; do
    log "nfpm $p $arch"
    VERSION=$VERSION ARCH=$arch BIN=$bin MANPAGE=$BUILDDIR/roce-agent.1.gz UNIT=$UNIT BUILDDIR=$BUILDDIR \
      "$NFPM" package --config packaging/nfpm/nfpm.yaml --packager "$p" \
      --target "$DIST/roce-agent_${ver}_${arch}.$p"
  done
  "$BUILDDIR/sbom" -name roce-agent -version "$VERSION" -commit "$COMMIT" -license Apache-2.0 \
    -o "$DIST/roce-agent_${ver}_linux_${arch}.cdx.json" "$bin"
done

# The Helm chart, its appVersion (the default image tag) this build's image
# tag (packaging/image/build.sh's), reproducible; packaged by the nested
# Kubernetes module, which has helm.
log "helm chart (appVersion ${ver//+/_})"
distabs=$(cd "$DIST" && pwd)
(cd packaging/kubernetes && $GO run -trimpath ./chartpkg -chart ../helm/roce-agent -app-version "${ver//+/_}" \
  -mtime "$SOURCE_DATE_EPOCH" -out "$distabs/roce-agent_${ver}_chart.tgz")

# SHA256SUMS: every artefact of this version in DIST (all arches built so far).
(
  cd "$DIST"
  shopt -s nullglob
  files=(roce-agent_"${ver}"_*)
  sha256sum "${files[@]}" >SHA256SUMS
)
log "done: $DIST"
(cd "$DIST" && ls -l roce-agent_"${ver}"_* SHA256SUMS) >&2
