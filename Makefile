# projectionist: a Kubernetes operator for partitioned, checkpointed
# event-sourcing projections on PostgreSQL.

# Tools are pinned and built from the Go module proxy into ./bin.
LOCALBIN ?= $(CURDIR)/bin
GO ?= go
GOTEST_FLAGS ?=

.PHONY: all
all: build

##@ General

.PHONY: help
help: ## Show this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: fmt
fmt: ## Format the code (gofmt -s on tracked files; bin/ holds build caches).
	git ls-files -z '*.go' | xargs -0 gofmt -s -w

.PHONY: vet
vet: ## Run go vet.
	$(GO) vet ./...

.PHONY: manifests
manifests: controller-gen ## Generate the CRD (config/crd/bases) and the manager's ClusterRole (config/rbac/role.yaml) from the markers, and copy them into the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@$(MAKE) --no-print-directory chart-sync

.PHONY: api-docs
api-docs: crd-ref-docs ## Generate docs/api.md, the field reference, from the API types (api/v1alpha1).
	$(CRD_REF_DOCS) --log-level=ERROR --source-path=./api/v1alpha1 --config=hack/api-docs/config.yaml --renderer=markdown --output-path=docs/api.md

.PHONY: generate
generate: controller-gen ## Generate the API's deepcopy methods (api/v1alpha1/zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

CHART ?= charts/projectionist

.PHONY: chart-sync
chart-sync: ## Copy the CRD and the RBAC rules from config/ into the Helm chart (files/crds/, files/rbac/), whose templates read them; run by manifests.
	cp config/crd/bases/projectionist.dev_projections.yaml $(CHART)/files/crds/
	cp config/rbac/role.yaml config/rbac/leader_election_role.yaml config/rbac/metrics_auth_role.yaml config/rbac/metrics_reader_role.yaml $(CHART)/files/rbac/

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart (helm lint --strict).
	$(HELM) lint $(CHART) --strict

.PHONY: verify
verify: manifests generate api-docs ## Fail if generated files (including the chart's copies) are stale, code is unformatted, go.mod is untidy, or vet or golangci-lint complains.
	@out=$$(git status --porcelain -- api config charts docs/api.md); if [ -n "$$out" ]; then echo "generated files are stale or uncommitted (run make manifests generate api-docs, then commit):"; echo "$$out"; git --no-pager diff --stat -- api config charts docs/api.md; exit 1; fi
	@out=$$(git ls-files -z '*.go' | xargs -0 gofmt -s -l); if [ -n "$$out" ]; then echo "unformatted files (run make fmt):"; echo "$$out"; exit 1; fi
	@# The examples must build when copied out of the repository.
	@out=$$(grep -rln 'projectionist/projectionist/internal' examples || true); if [ -n "$$out" ]; then echo "examples import internal packages, which a copy outside the repository cannot:"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...
	@$(MAKE) --no-print-directory lint
	@# examples/custom-worker is a module of its own, as a user's would be.
	cd examples/custom-worker && $(GO) mod tidy -diff && $(GO) vet ./...

.PHONY: test
test: envtest-assets helm ## Run all tests (starts its own PostgreSQL and API servers; needs the postgresql-15 server binaries).
	KUBEBUILDER_ASSETS=$(KUBE_BIN) $(GO) test -race -count=1 $(GOTEST_FLAGS) ./...

# test-flakes runs the suite as make test does (with -race: the flakes
# that cost submissions were make test's, and the race detector's slower
# code widens the windows a wait on the wall clock loses in) RUNS times,
# beside a CPU burner of one spinning goroutine per CPU, and lists each
# test that failed at least once with its count; each run's go test -json
# stream stays in FLAKES_DIR. Too long for CI: run it before submitting a
# change to tests that wait.
RUNS ?= 5
PKGS ?= ./...
FLAKES_DIR ?= $(LOCALBIN)/flakes

.PHONY: test-flakes
test-flakes: envtest-assets helm ## Run the tests of PKGS (./...) RUNS times (5) under CPU contention and list each test that failed at least once (hack/flakes); long, not in CI.
	KUBEBUILDER_ASSETS=$(KUBE_BIN) $(GO) run ./hack/flakes -runs $(RUNS) -out $(FLAKES_DIR) -- -race $(GOTEST_FLAGS) $(PKGS)

.PHONY: bench
bench: ## Run the benchmarks (100k events; see pkg/projection/bench_test.go, pkg/demo/bench_test.go).
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3x -count 3 ./pkg/...

.PHONY: bench-operator
bench-operator: kube-binaries ## Time the real operator over 1000 Projections on envtest and PostgreSQL; report its peak RSS (see test/bench).
	KUBEBUILDER_ASSETS=$(KUBE_BIN) $(GO) test -run '^$$' -bench Create1000Projections -benchtime 1x -timeout 30m ./test/bench

##@ Dependencies

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0

.PHONY: controller-gen
controller-gen: ## Install controller-gen (pinned, v0.23.0) into bin/ unless that version is there.
	@test -x $(CONTROLLER_GEN) && $(CONTROLLER_GEN) --version | grep -qx 'Version: $(CONTROLLER_TOOLS_VERSION)' || { \
		echo "installing controller-gen $(CONTROLLER_TOOLS_VERSION) into $(LOCALBIN)"; \
		rm -f $(CONTROLLER_GEN) && GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION); }

GOLANGCI_LINT_VERSION ?= v2.15.0
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

.PHONY: golangci-lint
golangci-lint: ## Install golangci-lint (pinned, v2.15.0, built from the module proxy) into bin/ unless that version is there.
	@test -x $(GOLANGCI_LINT) || { \
		echo "installing golangci-lint $(GOLANGCI_LINT_VERSION) into $(LOCALBIN)"; \
		tmp=$$(mktemp -d) && GOBIN=$$tmp $(GO) install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION) && \
		mkdir -p $(LOCALBIN) && mv $$tmp/golangci-lint $(GOLANGCI_LINT) && rmdir $$tmp; }

.PHONY: lint
lint: golangci-lint ## Run golangci-lint with .golangci.yml (which says why each linter is on or off).
	$(GOLANGCI_LINT) run --timeout 10m ./...

CRD_REF_DOCS_VERSION ?= v0.3.0
CRD_REF_DOCS ?= $(LOCALBIN)/crd-ref-docs-$(CRD_REF_DOCS_VERSION)

.PHONY: crd-ref-docs
crd-ref-docs: ## Install crd-ref-docs (pinned, v0.3.0) into bin/ unless that version is there.
	@test -x $(CRD_REF_DOCS) || { \
		echo "installing crd-ref-docs $(CRD_REF_DOCS_VERSION) into $(LOCALBIN)"; \
		tmp=$$(mktemp -d) && GOBIN=$$tmp $(GO) install github.com/elastic/crd-ref-docs@$(CRD_REF_DOCS_VERSION) && \
		mkdir -p $(LOCALBIN) && mv $$tmp/crd-ref-docs $(CRD_REF_DOCS) && rmdir $$tmp; }

HELM ?= $(LOCALBIN)/helm
HELM_VERSION ?= v3.22.0
# The ldflags of Helm's own release build: without them `helm version` says
# v3.22 and the default Kubernetes version of `helm template` and of the lint
# deprecation checks is 1.20 instead of 1.37 (Helm v3.22's client-go).
HELM_LDFLAGS ?= -X helm.sh/helm/v3/internal/version.version=$(HELM_VERSION) \
	-X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37 \
	-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37

.PHONY: helm
helm: ## Install Helm (pinned, v3.22.0) into bin/ unless that version is there (a few minutes the first time).
	@test -x $(HELM) && $(HELM) version --template '{{.Version}}' | grep -qx '$(HELM_VERSION)' || { \
		echo "installing helm $(HELM_VERSION) into $(LOCALBIN)"; \
		rm -f $(HELM) && GOBIN=$(LOCALBIN) $(GO) install -ldflags '$(HELM_LDFLAGS)' helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }

KIND ?= $(LOCALBIN)/kind
KIND_VERSION ?= v0.33.0

.PHONY: kind
kind: ## Install kind (pinned, v0.33.0) into bin/ unless that version is there.
	@test -x $(KIND) && $(KIND) version | grep -q '^kind $(KIND_VERSION) ' || { \
		echo "installing kind $(KIND_VERSION) into $(LOCALBIN)"; \
		rm -f $(KIND) && GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/kind@$(KIND_VERSION); }

##@ Build

KUBE_VERSION ?= v1.37.1
KUBE_BIN ?= $(LOCALBIN)/k8s/$(KUBE_VERSION)

.PHONY: kube-binaries
kube-binaries: ## Build kube-apiserver, etcd and kubectl from the Go module proxy into bin/k8s (~10 min cold, cached after).
	KUBE_VERSION=$(KUBE_VERSION) hack/build-kube-binaries.sh $(KUBE_BIN)

.PHONY: envtest-assets
envtest-assets: ## Build kube-apiserver, etcd, kubectl, kube-controller-manager, kube-scheduler and kwok into bin/k8s for tests (~10-30 min cold, seconds cached).
	KUBE_VERSION=$(KUBE_VERSION) hack/build-kube-binaries.sh $(KUBE_BIN) kube-apiserver etcd kubectl kube-controller-manager kube-scheduler kwok

.PHONY: build
build: ## Build every package and example.
	$(GO) build ./...

# Images are written as OCI image archives by cmd/projectionist-image,
# without Docker or a registry; `ctr -n k8s.io images import`,
# `docker load -i` and `kind load image-archive` all take them. The
# Dockerfile builds the same image for those who have Docker.
#
# VERSION is the binary's main.version and the image's tag.
# Expanded once: a commit during a long target must not rename its images.
ifndef VERSION
VERSION := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
IMAGE ?= docker.io/projectionist/projectionist:$(VERSION)
# ARCH is the images' architecture, spelled as GOARCH.
ARCH ?= $(shell $(GO) env GOARCH)
IMAGES_DIR ?= $(LOCALBIN)/images
# Every file and the config carry the last commit's time, so the same binary
# always gives the same image digest.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
# The projectionist image carries this machine's CA certificates (Debian's
# package ca-certificates) at the path Go's crypto/x509 reads on Linux, so
# that sslmode=verify-full works against a server with a public CA. The
# image's digest then also follows the package's version.
CA_CERTS ?= /etc/ssl/certs/ca-certificates.crt
# More cmd/projectionist-image flags for the projectionist image.
IMAGE_FLAGS ?=
# The sandbox image the local cluster's containerd is pinned to (its
# sandbox_image). registry.k8s.io/pause:3.10 is containerd 2.x's default;
# Debian's containerd 1.6 defaults to pause:3.6, so pin it either way.
PAUSE_IMAGE ?= registry.k8s.io/pause:3.10

.PHONY: image
image: ## Build a static linux binary (bin/linux-ARCH/projectionist) and the image archive bin/images/projectionist-VERSION.tar (+ .sha256) named IMAGE, with CA_CERTS.
	@test -f $(CA_CERTS) || { echo "make image: no CA certificates at $(CA_CERTS) for the image: apt-get install ca-certificates (or set CA_CERTS)" >&2; exit 1; }
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" \
		-o $(LOCALBIN)/linux-$(ARCH)/projectionist ./cmd/projectionist
	SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run ./cmd/projectionist-image -binary $(LOCALBIN)/linux-$(ARCH)/projectionist \
		-arch $(ARCH) -name $(IMAGE) -out $(IMAGES_DIR)/projectionist-$(VERSION).tar \
		-extra $(CA_CERTS):/etc/ssl/certs/ca-certificates.crt $(IMAGE_FLAGS)
	cd $(IMAGES_DIR) && sha256sum projectionist-$(VERSION).tar > projectionist-$(VERSION).tar.sha256
	@echo "load it: ctr -n k8s.io images import $(IMAGES_DIR)/projectionist-$(VERSION).tar (or docker load -i, kind load image-archive)"

# The pause binary carries no VCS stamp and the image no commit time, so its
# digest changes only with hack/pause or the Go version, and a cluster keeps
# the sandbox image it already imported.
.PHONY: pause-image
pause-image: ## Build the local cluster's sandbox image bin/images/pause.tar from hack/pause, named PAUSE_IMAGE (registry.k8s.io/pause:3.10).
	CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -buildvcs=false -ldflags "-s -w" \
		-o $(LOCALBIN)/linux-$(ARCH)/pause ./hack/pause
	SOURCE_DATE_EPOCH=0 $(GO) run ./cmd/projectionist-image -binary $(LOCALBIN)/linux-$(ARCH)/pause -path /pause -user 65535:65535 \
		-arch $(ARCH) -name $(PAUSE_IMAGE) -out $(IMAGES_DIR)/pause.tar

# A user's own worker image: examples/custom-worker, a module of its own
# around worker.Program, built the way its README tells a user to.
CUSTOM_WORKER_IMAGE ?= docker.io/projectionist/custom-worker:$(VERSION)

.PHONY: image-custom-worker
image-custom-worker: ## Build examples/custom-worker and its image archive bin/images/custom-worker-VERSION.tar named CUSTOM_WORKER_IMAGE (the end-to-end suite runs it).
	@test -f $(CA_CERTS) || { echo "make image-custom-worker: no CA certificates at $(CA_CERTS) for the image: apt-get install ca-certificates (or set CA_CERTS)" >&2; exit 1; }
	cd examples/custom-worker && CGO_ENABLED=0 GOOS=linux GOARCH=$(ARCH) $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" \
		-o $(LOCALBIN)/linux-$(ARCH)/custom-worker .
	@# From the example's module, through its go.mod's tool line, as a user runs it.
	cd examples/custom-worker && SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) tool projectionist-image \
		-binary $(LOCALBIN)/linux-$(ARCH)/custom-worker -path /custom-worker -arch $(ARCH) -name $(CUSTOM_WORKER_IMAGE) \
		-extra $(CA_CERTS):/etc/ssl/certs/ca-certificates.crt -out $(IMAGES_DIR)/custom-worker-$(VERSION).tar

##@ Local cluster

# A real single-node Kubernetes cluster on this machine (no Docker needed):
# etcd, the control plane, containerd, kubelet and kube-proxy as processes of
# hack/local-cluster.sh, state in bin/local-cluster. `up` imports every archive
# in bin/images (make image pause-image) plus IMAGES="a.tar b.tar".

.PHONY: cluster-up
cluster-up: pause-image ## Start the local cluster; writes bin/local-cluster/kubeconfig and bin/local-cluster/env (HOST_IP, POD_CIDR, SERVICE_CIDR, KUBECONFIG).
	KUBE_VERSION=$(KUBE_VERSION) KUBE_BIN=$(KUBE_BIN) hack/local-cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove every trace of it (processes, mounts, iptables chains, bridge, sysctls); safe when nothing runs.
	KUBE_VERSION=$(KUBE_VERSION) KUBE_BIN=$(KUBE_BIN) hack/local-cluster.sh down

.PHONY: cluster-status
cluster-status: ## Show what of the local cluster runs.
	KUBE_VERSION=$(KUBE_VERSION) KUBE_BIN=$(KUBE_BIN) hack/local-cluster.sh status

# A throwaway PostgreSQL 15 for the local cluster's pods: it listens on
# 127.0.0.1 and on HOST_IP (which pods reach un-NATed), pg_hba allows the pod
# CIDR, passwords everywhere. LOCAL_POSTGRES_DIR (default bin/local-postgres)
# holds its data and env; PGPORT, HOST_IP, POD_CIDR override what
# hack/local-postgres.sh picks.

.PHONY: postgres-up
postgres-up: ## Start a local PostgreSQL for the cluster's pods; writes bin/local-postgres/env (DATABASE_URL for the host, POD_DATABASE_URL for pods).
	hack/local-postgres.sh start

.PHONY: postgres-down
postgres-down: ## Stop the local PostgreSQL and delete its data; safe when nothing runs.
	hack/local-postgres.sh stop

##@ End-to-end tests

# The suite (test/e2e, build tag e2e) installs the chart into a fresh
# namespace of the cluster $KUBECONFIG names and drives it with helm, kubectl
# and `projectionist events generate`. It needs E2E_DATABASE_URL (PostgreSQL
# as this host reaches it, a user with CREATEDB) and, when pods reach it by
# another address, E2E_POD_DATABASE_URL; see test/e2e/main_test.go.
E2E_IMAGE ?= $(IMAGE)
E2E_CUSTOM_IMAGE ?= $(CUSTOM_WORKER_IMAGE)
E2E_PULL_POLICY ?= IfNotPresent
E2E_KUBECTL ?= $(if $(wildcard $(KUBE_BIN)/kubectl),$(KUBE_BIN)/kubectl)

.PHONY: test-e2e
test-e2e: helm ## Run the end-to-end suite against $KUBECONFIG with image E2E_IMAGE (default IMAGE) and PostgreSQL E2E_DATABASE_URL / E2E_POD_DATABASE_URL.
	E2E_IMAGE=$(E2E_IMAGE) E2E_CUSTOM_IMAGE=$(E2E_CUSTOM_IMAGE) E2E_PULL_POLICY=$(E2E_PULL_POLICY) E2E_HELM=$(HELM) E2E_KUBECTL=$(E2E_KUBECTL) \
		$(GO) test -tags e2e -count=1 -v -timeout 30m ./test/e2e/

.PHONY: test-e2e-local
test-e2e-local: image image-custom-worker pause-image helm ## Build the image, start the local cluster and a local PostgreSQL, run test-e2e against them, and always tear both down (hack/e2e-local.sh).
	VERSION=$(VERSION) IMAGE=$(IMAGE) CUSTOM_WORKER_IMAGE=$(CUSTOM_WORKER_IMAGE) KUBE_VERSION=$(KUBE_VERSION) KUBE_BIN=$(KUBE_BIN) hack/e2e-local.sh

.PHONY: kind-node-image
kind-node-image: ## Build a kind node image offline (Debian packages and the module proxy, no registry) into the Docker engine and bin/kind-node (hack/kind-node-image.sh; needs root and DOCKER_HOST).
	KUBE_VERSION=$(KUBE_VERSION) KIND_VERSION=$(KIND_VERSION) hack/kind-node-image.sh

.PHONY: test-e2e-kind
test-e2e-kind: image image-custom-worker pause-image kind helm ## Run test-e2e on a kind cluster: its own Docker engine if none answers, kind's node image or one built offline, a fenced network, the host's PostgreSQL; always torn down (hack/kind-e2e.sh).
	VERSION=$(VERSION) IMAGE=$(IMAGE) CUSTOM_WORKER_IMAGE=$(CUSTOM_WORKER_IMAGE) KIND=$(KIND) KIND_VERSION=$(KIND_VERSION) KUBE_VERSION=$(KUBE_VERSION) E2E_KUBECTL=$(KUBE_BIN)/kubectl hack/kind-e2e.sh

.PHONY: test-dockerfile
test-dockerfile: image ## Build the Dockerfile with docker build (bases made locally, no network) and run its image: version, then a worker against PostgreSQL; starts and stops its own Docker engine if none answers (hack/dockerfile-test.sh).
	VERSION=$(VERSION) IMAGE_ARCHIVE=$(IMAGES_DIR)/projectionist-$(VERSION).tar hack/dockerfile-test.sh

##@ Demo

.PHONY: demo
demo: ## Bring up cluster, PostgreSQL, operator and samples under .demo, stream events, rescale, show the read models; leaves it running (hack/demo.sh up).
	VERSION=$(VERSION) KUBE_VERSION=$(KUBE_VERSION) KUBE_BIN=$(KUBE_BIN) hack/demo.sh up

.PHONY: demo-down
demo-down: ## Remove everything make demo started (cluster, PostgreSQL, .demo); safe when nothing runs (hack/demo.sh down).
	KUBE_VERSION=$(KUBE_VERSION) KUBE_BIN=$(KUBE_BIN) hack/demo.sh down
