# The two commands a newcomer runs: `make demo` and `make test`.
# Everything they need is installed on first use and cached under ~/.cache.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: help deps cluster cluster-up cluster-down test demo bench bench-failover fmt lint ci

help:
	@echo "make demo            the HA story end to end on a local control plane"
	@echo "make test            every test (unit + against a real kube-apiserver)"
	@echo "make bench           every benchmark (bench-failover, ...)"
	@echo "make cluster-up      start the local control plane (prints its kubeconfig)"
	@echo "make cluster-down    stop it"
	@echo "make ci              what CI runs: fmt, clippy, test"

## deps: the Rust target and the Go-built Kubernetes binaries (cached).
deps:
	@rustup target list --installed | grep -qx wasm32-wasip2 || rustup target add wasm32-wasip2
	@tools/cluster.sh install

cluster-up: deps
	@tools/cluster.sh up

cluster-down:
	@tools/cluster.sh down

test: deps
	$(CARGO) build --workspace --all-targets
	tools/with-cluster.sh $(CARGO) test --workspace

demo: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh tools/demo.sh

bench: bench-failover

bench-failover: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench failover

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: lint test
