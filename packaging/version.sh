#!/usr/bin/env bash
# Prints the version a build stamps into roce-agent --version and the
# packages, from git tags (a release is a vX.Y.Z tag):
#   on the tag vX.Y.Z                  vX.Y.Z
#   N commits after it, at gSHA        vX.Y.Z+N.gSHA   (sorts above vX.Y.Z in dpkg and rpm)
#   no tag yet                         v0.0.0-dev+SHA
#   uncommitted changes                the above with .dirty in the build metadata
#   not a git checkout                 v0.0.0-dev
# $VERSION, when set, wins (a leading v is added when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${VERSION:-}" ]; then
  case "$VERSION" in v*) echo "$VERSION" ;; *) echo "v$VERSION" ;; esac
  exit 0
fi
if ! d=$(git describe --tags --match 'v[0-9]*' --always --dirty --abbrev=12 2>/dev/null); then
  echo v0.0.0-dev
  exit 0
fi
dirty=
case "$d" in *-dirty) dirty=1; d=${d%-dirty} ;; esac
if [[ "$d" =~ ^(v[0-9]+\.[0-9]+\.[0-9]+[^+]*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
  v="${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}"
elif [[ "$d" =~ ^v[0-9]+\.[0-9]+\.[0-9]+ ]]; then
  v=$d
else
  v="v0.0.0-dev+$d"
fi
if [ -n "$dirty" ]; then
  case "$v" in *+*) v="$v.dirty" ;; *) v="$v+dirty" ;; esac
fi
echo "$v"
