# roce-agent build, test and lint. `make help` lists the targets.

GO          ?= go
GOBIN       := $(shell $(GO) env GOPATH)/bin
STATICCHECK := $(GOBIN)/staticcheck
STATICCHECK_VERSION := v0.8.2
FUZZTIME    ?= 3s
BENCHTIME   ?= 20x
VERSION     ?= $(shell packaging/version.sh)
COMMIT      ?= $(shell git rev-parse HEAD 2>/dev/null)
# The build date is the commit's (SOURCE_DATE_EPOCH when set), as the packages'.
BUILD_DATE  ?= $(shell date -u -d @$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct 2>/dev/null || date +%s)} +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS     := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(BUILD_DATE)
EXAMPLE     ?= dgx-h100

# go-nvml is cgo; its header marks many calls deprecated, which is noise.
export CGO_ENABLED := 1
export CGO_CFLAGS  := -Wno-deprecated-declarations

.PHONY: help build run lab lab-clean test test-unit test-rxe fuzz bench bench-controller lint tools golden clean \
	package test-packages image image-test test-k8s test-systemd

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build bin/roce-agent, bin/roce-controller and bin/roce-lab
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./cmd/roce-agent ./cmd/roce-controller ./cmd/roce-lab

run: build ## show the inventory of a built-in example server (EXAMPLE=dgx-h100|mixed-vendor|soft-roce|empty)
	./bin/roce-agent inventory --sysfs-root testdata/sysfs/$(EXAMPLE)/sys

lab: build ## a multi-tenant fabric in namespaces: the controller and one agent per host; Ctrl-C removes it (root; LABFLAGS=--hosts 8 ...)
	./bin/roce-lab $(LABFLAGS)

lab-clean: build ## remove what a crashed or --keep lab left (root)
	./bin/roce-lab --cleanup $(LABFLAGS)

test: test-unit fuzz ## every test tier that runs here, then a short fuzz of every parser

test-unit: ## go test -race over all packages (root-only tests skip with a message when not root)
	$(GO) test -race -count=1 ./...

test-rxe: ## the soft-RoCE tier: two qemu guests with rdma_rxe, real RoCEv2 between them (root; apt-installs qemu and the RDMA tools; ~5 minutes)
	ROCE_RXE=1 $(GO) test -count=1 -v -timeout 30m ./e2e/rxe/

fuzz: ## run each fuzz target for FUZZTIME (default 3s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for t in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; \
	done

bench: ## speed against the alternatives measured in the same run: link engine vs iproute2, scrape vs node_exporter, drift, footprint (root, node_exporter; about 2 minutes)
	@command -v prometheus-node-exporter >/dev/null || command -v node_exporter >/dev/null || \
	  { echo "make bench compares the /metrics scrape with node_exporter, which is not installed: apt-get install prometheus-node-exporter" >&2; exit 1; }
	$(GO) test -run '^$$' -bench . -benchtime $(BENCHTIME) -count 1 ./nic/linkengine/ ./nic/ ./agent/
	$(GO) test -run '^$$' -bench . -benchtime 1x -count 1 ./cmd/roce-agent/

bench-controller: ## the reference controller (embedded etcd) against simulated agents: latency, CPU, RSS, tenant move (root; LOAD_AGENTS="10000 25000 50000", LOAD_WINDOW=60s)
	$(GO) test -run '^$$' -bench ControllerLoad -benchtime 1x -count 1 -timeout 60m ./controller/loadtest/

lint: $(STATICCHECK) ## gofmt, go vet, staticcheck
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

tools: $(STATICCHECK) ## install the lint tools

$(STATICCHECK):
	$(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

package: ## dist/: roce-agent for amd64 and arm64, a .deb and .rpm of each (nfpm), SBOMs, SHA256SUMS, and as root the container image (apt: gcc-aarch64-linux-gnu; podman, mmdebstrap)
	bash packaging/build.sh
	@if [ "$$(id -u)" = 0 ] && command -v podman >/dev/null && command -v mmdebstrap >/dev/null; then \
	  bash packaging/image/build.sh; \
	else \
	  echo "make package: the container image needs root, podman and mmdebstrap (apt-get install podman mmdebstrap; make image)"; \
	fi

test-packages: ## check dist/'s packages: listings, lintian, arm64 under qemu, reproducible, install/upgrade/remove/purge (root)
	bash packaging/test-packages.sh

image: ## the container image for amd64 and arm64: dist/roce-agent-image_<ver>_{amd64,arm64}.tar and a multi-arch .oci.tar (root; podman, mmdebstrap)
	bash packaging/image/build.sh

image-test: ## check the image archives (config, files, every library present) and run their binaries (chroot; qemu-user for arm64)
	bash packaging/image/test.sh

test-k8s: ## the Helm chart and the DaemonSet: rendered for several value sets, every manifest decoded strictly (nested module)
	bash packaging/kubernetes/test.sh

test-systemd: build ## the systemd unit: systemd-analyze verify clean, security exposure <= 3.0 (apt: systemd)
	bash packaging/systemd/check.sh bin/roce-agent

golden: ## rewrite fixture trees and golden files after an intended change
	$(GO) test ./nic/sysfstest -update
	$(GO) test ./agent -update

clean:
	rm -rf bin dist
