#!/bin/sh
# Checks the alerting rules and runs their unit tests with promtool
# (Debian/Ubuntu: apt-get install prometheus; or the prometheus release
# tarball). Run from anywhere; PROMTOOL overrides the binary.
set -eu
cd "$(dirname "$0")"
promtool=${PROMTOOL:-promtool}
if ! command -v "$promtool" >/dev/null 2>&1; then
	echo "check.sh: $promtool not found (apt-get install prometheus)" >&2
	exit 2
fi
"$promtool" check rules roce-agent.rules.yml
"$promtool" test rules roce-agent.rules_test.yml
