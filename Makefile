# One entry point for people and CI. `make test` and `make demo` set up everything they need.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup controlplane helm seaweedfs images lint test test-fast demo demo-down clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml VERSION
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

# Pinned etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubectl and kwok,
# built from the Go module proxy into ~/.cache/batcomputer (reused across clones).
controlplane:
	hack/build-controlplane.sh >/dev/null

# The helm binary the chart is tested with (built from the Go module proxy, cached).
helm:
	hack/build-helm.sh >/dev/null

# The S3-compatible server (SeaweedFS) that s3:// artifacts and registries are tested
# against (built from the Go module proxy, cached; about 15 minutes cold on 2 cores).
seaweedfs:
	hack/build-seaweedfs.sh >/dev/null

# batcomputer-server and batcomputer-operator images from the Dockerfiles (Docker, or
# buildah/podman on a Debian-built base where no registry is reachable); cached.
images:
	hack/build-images.sh >/dev/null

lint: setup
	$(BIN)/ruff check .
	VENV=$(VENV) hack/lint-package.sh
	$(BIN)/shellcheck hack/*.sh .ci/run

# The test command: unit, server, training, control-plane and end-to-end tests, with the
# local cluster's pods running as containers from the images.
test: setup controlplane helm seaweedfs images lint
	$(BIN)/pytest

# Quick local loop without the control plane.
test-fast: setup
	$(BIN)/pytest -m "not e2e and not controlplane"

# The main job: control plane, operator, trained models, predictions from two majors.
# DEMO_DIR: where the demo keeps its cluster, data and registry (tests/e2e/test_demo.py
# runs it in a folder of its own).
DEMO_DIR ?= .demo

demo: setup controlplane
	BATCOMPUTER_DEMO_DIR=$(DEMO_DIR) $(BIN)/python hack/demo.py

demo-down: setup
	$(BIN)/batcomputer testenv --dir $(DEMO_DIR)/cluster down

# Everything made here: the venv and caches, the demo (its cluster stopped first: .demo/
# holds a kubeconfig with a 24 h token) and what the README's commands make (data/,
# registry/, crime.yaml, registry.log). Built binaries stay in the user cache
# (~/.cache/batcomputer).
clean:
	if [ -d $(DEMO_DIR)/cluster ] && [ -x $(BIN)/batcomputer ]; then \
		$(BIN)/batcomputer testenv --dir $(DEMO_DIR)/cluster down || true; fi
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .testenv \
		$(DEMO_DIR) data registry crime.yaml registry.log
