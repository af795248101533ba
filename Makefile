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

.PHONY: verify
verify: ## Fail if code is unformatted, go.mod is untidy, or vet complains.
	@out=$$(git ls-files -z '*.go' | xargs -0 gofmt -s -l); if [ -n "$$out" ]; then echo "unformatted files (run make fmt):"; echo "$$out"; exit 1; fi
	$(GO) mod tidy -diff
	$(GO) vet ./...

.PHONY: test
test: ## Run all tests (starts its own PostgreSQL; needs the postgresql-15 server binaries).
	$(GO) test -race -count=1 $(GOTEST_FLAGS) ./...

.PHONY: bench
bench: ## Run the benchmarks (100k events; see pkg/projection/bench_test.go).
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 3x -count 3 ./pkg/...

##@ Build

KUBE_VERSION ?= v1.37.1
KUBE_BIN ?= $(LOCALBIN)/k8s/$(KUBE_VERSION)

.PHONY: kube-binaries
kube-binaries: ## Build kube-apiserver, etcd and kubectl from the Go module proxy into bin/k8s (~10 min cold, cached after).
	KUBE_VERSION=$(KUBE_VERSION) hack/build-kube-binaries.sh $(KUBE_BIN)

.PHONY: build
build: ## Build every package and example.
	$(GO) build ./...
