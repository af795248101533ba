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
manifests: controller-gen ## Generate the CRD (config/crd/bases) and the manager's ClusterRole (config/rbac/role.yaml) from the markers.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="./api/...;./controllers/..." \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac

.PHONY: generate
generate: controller-gen ## Generate the API's deepcopy methods (api/v1alpha1/zz_generated.deepcopy.go).
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths="./api/..."

.PHONY: verify
verify: manifests generate ## Fail if generated files are stale, code is unformatted, go.mod is untidy, or vet complains.
	@out=$$(git status --porcelain -- api config); if [ -n "$$out" ]; then echo "generated files are stale or uncommitted (run make manifests generate, then commit):"; echo "$$out"; git --no-pager diff --stat -- api config; exit 1; fi
	@out=$$(git ls-files -z '*.go' | xargs -0 gofmt -s -l); if [ -n "$$out" ]; then echo "unformatted files (run make fmt):"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...

.PHONY: test
test: envtest-assets ## Run all tests (starts its own PostgreSQL and API servers; needs the postgresql-15 server binaries).
	KUBEBUILDER_ASSETS=$(KUBE_BIN) $(GO) test -race -count=1 $(GOTEST_FLAGS) ./...

.PHONY: bench
bench: ## Run the benchmarks (100k events; see pkg/projection/bench_test.go).
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3x -count 3 ./pkg/...

##@ Dependencies

CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
CONTROLLER_TOOLS_VERSION ?= v0.23.0

.PHONY: controller-gen
controller-gen: ## Install controller-gen (pinned, v0.23.0) into bin/ unless that version is there.
	@test -x $(CONTROLLER_GEN) && $(CONTROLLER_GEN) --version | grep -qx 'Version: $(CONTROLLER_TOOLS_VERSION)' || { \
		echo "installing controller-gen $(CONTROLLER_TOOLS_VERSION) into $(LOCALBIN)"; \
		rm -f $(CONTROLLER_GEN) && GOBIN=$(LOCALBIN) $(GO) install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_TOOLS_VERSION); }

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
