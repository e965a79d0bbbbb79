#!/usr/bin/env bash
# test.sh: the Kubernetes packaging's checks, in this nested module (helm and
# the Kubernetes API stay out of the agent's go.mod):
#   1. gofmt: no file needs formatting;
#   2. go vet;
#   3. go test: the Helm chart (../helm/roce-agent) rendered with helm as a
#      library for several value sets, every manifest decoded strictly into
#      the k8s.io/api and Prometheus Operator types; the values the chart
#      refuses; daemonset.yaml current; the chart's capabilities and host
#      mounts against the systemd unit; roce-agent (built from the
#      repository) accepting each rendered config with the pod's environment.
#
#   bash packaging/kubernetes/test.sh [go test flags, e.g. -run TestChart -v]
#
# After changing the chart: go test -run TestPlainManifest -update (here).
set -euo pipefail
cd "$(dirname "$0")"

unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
	echo "test.sh: gofmt -l lists:" >&2
	echo "$unformatted" >&2
	exit 1
fi
go vet ./...
go test -count=1 "$@" ./...
