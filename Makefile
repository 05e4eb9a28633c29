# One entry point for people and CI. Every target bootstraps the virtualenv
# (and the generated stubs) when they are missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PROTOS := $(shell find proto -name '*.proto')
STAMP := $(VENV)/.installed-stamp
PROTO_STAMP := music/.generated

.PHONY: help venv proto native pure tools kustomize image test-image test test-unit test-component test-integration test-interop interop-deps chaos lint fmt demo bench clean test-hardening fuzz soak

help:
	@echo "make demo   run the two-site mesh demo (embedded DNS registry, sidecars, services, load)"
	@echo "make test   run the test suite (unit, component, integration, chaos smoke, interop)"
	@echo "make test-interop  gRPC's interop cases through the sidecars (grpcio, grpc-js, grpc-go)"
	@echo "make lint   ruff check + ruff format --check + mypy --strict on sidecar/ + import contracts"
	@echo "make chaos  run every chaos scenario"
	@echo "make bench  run the benchmarks (results in bench/out/)"
	@echo "make soak   10 minutes of mixed traffic; RSS, fds and tasks must not grow (results/soak/)"
	@echo "make proto  generate Python stubs from proto/"
	@echo "make native compile the per-request modules with mypyc (every target does it)"
	@echo "make pure   remove them: everything runs as plain Python"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	SIDECAR_PURE_PYTHON=1 $(BIN)/pip install -q -e '.[dev]'
	@# xds-protos ships old copies of opentelemetry-proto's modules in the same files
	@# (sidecar/tracing/export.py, otlp_modules_problem): put opentelemetry-proto's back
	$(BIN)/pip install -q --force-reinstall --no-deps \
	  "opentelemetry-proto==$$($(BIN)/python -c 'from importlib.metadata import version; print(version("opentelemetry-proto"))')"
	@touch $@

venv: $(STAMP)

# Stubs are generated, never edited and never committed: the same one-liner works
# for a user's own protos (see README, "Generate stubs for your own protos").
# sidecar/stubs.py is the generator the wheel build runs too (setup.py's build_py; the
# Dockerfile builds a wheel): one piece of code, into the source tree here.
$(PROTO_STAMP): $(STAMP) $(PROTOS) sidecar/stubs.py
	$(BIN)/python sidecar/stubs.py
	@touch $@

proto: $(PROTO_STAMP)

# The per-request modules compiled in place with mypyc (setup.py; the list is
# sidecar/native.py's), rebuilt whenever one of them changes: a compiled module hides
# its source, and the package refuses to import stale ones. Fails loudly here, where
# `pip install` would fall back to pure Python. SIDECAR_PURE_PYTHON=1 skips it.
NATIVE := sidecar/_native.json
NATIVE_SOURCES := $(shell $(PYTHON) sidecar/native.py) sidecar/native.py setup.py scripts/mypyc.ini

$(NATIVE): $(STAMP) $(NATIVE_SOURCES)
	@if [ -n "$$SIDECAR_PURE_PYTHON" ]; then \
	  echo "SIDECAR_PURE_PYTHON is set: the relay runs as plain Python"; \
	  rm -f $(NATIVE); find sidecar -name '*.so' -delete; \
	else \
	  SIDECAR_NATIVE_STRICT=1 $(BIN)/python setup.py -q build_ext --inplace; \
	fi

native: $(NATIVE)

pure:
	rm -f $(NATIVE)
	find sidecar -name '*.so' -delete

# kustomize renders deploy/kubernetes/ in the tests (kubectl's built-in one is as old as
# the kubectl installed, when there is one at all): a pinned release, built with Go
# from the Go module proxy into the venv.
KUSTOMIZE_VERSION := v5.5.0
KUSTOMIZE := $(BIN)/kustomize

$(KUSTOMIZE): | $(STAMP)
	@command -v go >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get install -y -qq --no-install-recommends golang-go; \
	  else echo "make: kustomize is built with Go 1.22 or later (Debian 13: apt-get install golang-go)"; exit 1; fi; }
	GOBIN=$(abspath $(BIN)) go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

kustomize: $(KUSTOMIZE)

# The container image (Dockerfile), with podman or docker, whichever runs; without a
# reachable registry its base is made from the Debian mirror (scripts/build-image).
IMAGE ?= grpc-sidecar:0.1.0
image:
	@scripts/system-packages image
	scripts/build-image $(IMAGE)

# Builds the image and runs it: two sidecar containers and an echo app (minutes).
test-image: $(PROTO_STAMP) $(NATIVE)
	@scripts/system-packages image
	$(PYTEST) -q tests/integration/test_image.py -m slow

PYTEST := $(BIN)/python -m pytest

# The interop tier's clients and servers in other languages (tests/interop): grpc-js from
# npm (the lock file pins it), grpc-go's own interop client and server built from the Go
# module proxy into .cache/interop (the version is tests/interop/grpc-go.version).
# A missing tool fails here, naming what to install.
INTEROP_NODE := tests/interop/node/node_modules/.package-lock.json
GRPC_GO := $(shell cat tests/interop/grpc-go.version)
INTEROP_GO := .cache/interop/grpc-go-$(GRPC_GO)/.built

$(INTEROP_NODE): tests/interop/node/package.json tests/interop/node/package-lock.json
	@command -v npm >/dev/null || { echo "interop tier: node and npm are missing (Debian: apt-get install nodejs npm)" >&2; exit 1; }
	cd tests/interop/node && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(INTEROP_GO): tests/interop/grpc-go.version
	@command -v go >/dev/null || { echo "interop tier: Go is missing (Go 1.24 or later on PATH, https://go.dev/dl)" >&2; exit 1; }
	GOBIN=$(abspath $(dir $@)) GOTOOLCHAIN=local go install \
	  google.golang.org/grpc/interop/client@$(GRPC_GO) google.golang.org/grpc/interop/server@$(GRPC_GO)
	@touch $@

interop-deps: $(INTEROP_NODE) $(INTEROP_GO)

# promtool (Debian's `prometheus` package) checks and unit-tests deploy/prometheus/alerts.yml;
# installed here as root when missing. Without it those tests fail, naming the package.
# the tools besides Python (bind9, haproxy, h2load, nginx, promtool, gcc, ...): installed
# with apt-get as root, else named with the command that installs them (never silent)
tools:
	@scripts/system-packages test

test: tools $(PROTO_STAMP) $(NATIVE) interop-deps $(KUSTOMIZE)
	$(PYTEST) -q tests -m "not slow"

test-unit: $(PROTO_STAMP) $(NATIVE)
	$(PYTEST) -q tests/unit

test-component: $(PROTO_STAMP) $(NATIVE)
	$(PYTEST) -q tests/component

test-integration: $(PROTO_STAMP) $(NATIVE) $(KUSTOMIZE)
	$(PYTEST) -q tests/integration

test-interop: $(PROTO_STAMP) $(NATIVE) interop-deps
	$(PYTEST) -q tests/interop

test-hardening: $(PROTO_STAMP) $(NATIVE)
	$(PYTEST) -q -s tests/hardening

# The soak: 10 minutes of mixed traffic through a sidecar pair (`make test` runs 60 s);
# results/soak/ holds the samples, the summary and soak.png
soak: $(PROTO_STAMP) $(NATIVE)
	SOAK_S=600 $(PYTEST) -q -s tests/soak

# The fuzz targets' long run (`make test` runs 200 inputs a target)
fuzz: $(PROTO_STAMP) $(NATIVE)
	FUZZ_EXAMPLES=20000 $(PYTEST) -q tests/fuzz

# Every chaos scenario (the smoke tier that `make test` runs, plus the `slow` ones).
# Needs root for the network-namespace cases (skipped, with the reason, otherwise).
chaos: $(PROTO_STAMP) $(NATIVE)
	$(PYTEST) -q tests/chaos -m chaos

lint: $(PROTO_STAMP) $(NATIVE)
	$(BIN)/ruff check sidecar services tests bench
	$(BIN)/ruff format --check sidecar services tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/python scripts/import_cycles.py sidecar

fmt: $(STAMP)
	$(BIN)/ruff check --fix sidecar services tests bench
	$(BIN)/ruff format sidecar services tests bench

demo: $(PROTO_STAMP) $(NATIVE)
	@scripts/system-packages demo
	$(BIN)/python -m sidecar demo $(DEMO_ARGS)

bench: $(PROTO_STAMP) $(NATIVE)
	@scripts/system-packages bench
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) music meshtest build *.egg-info .pytest_cache .mypy_cache .ruff_cache
	rm -rf .cache/interop tests/interop/node/node_modules
	rm -f $(NATIVE)
	find sidecar -name '*.so' -delete
