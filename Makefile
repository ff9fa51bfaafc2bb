# The front door. Every target works on a fresh clone: it creates what it needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
SERVICES := auth gateway upload inference history admin
PROTO_FILES := $(sort $(shell find proto -name "*.proto"))
GEN_DIR := libs/common
BUF_VERSION := 1.75.0
BUF := .tools/node_modules/.bin/buf

.PHONY: help setup proto lint lint-checks test run brokers bench clean kubectl k8s-manifests

help:
	@echo "make run    start the whole platform on this machine (gateway on http://127.0.0.1:8080)"
	@echo "make test   set up from nothing and run every test"
	@echo "make lint   ruff, mypy, buf lint, hadolint"
	@echo "make proto  regenerate the gRPC and event stubs from proto/"
	@echo "make bench  restoration throughput per backend on this machine"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade "pip==25.3"

# Third-party packages, pinned by requirements/constraints.txt.
$(VENV)/.deps: $(BIN)/python requirements/dev.in requirements/constraints.txt requirements/no-deps.txt
	$(BIN)/pip install --quiet -c requirements/constraints.txt -r requirements/dev.in
	$(BIN)/pip install --quiet --no-deps -c requirements/constraints.txt -r requirements/no-deps.txt
	touch $@

# Generated stubs are not committed: they are rebuilt from proto/ whenever a .proto changes,
# so they can never be stale.
$(GEN_DIR)/.proto-stamp: $(VENV)/.deps $(PROTO_FILES)
	rm -rf $(GEN_DIR)/facerestore
	$(BIN)/python -m grpc_tools.protoc -I proto \
		--python_out=$(GEN_DIR) --pyi_out=$(GEN_DIR) \
		--grpc_python_out=$(GEN_DIR) --mypy_grpc_out=$(GEN_DIR) \
		--plugin=protoc-gen-mypy_grpc=$(BIN)/protoc-gen-mypy_grpc \
		$(PROTO_FILES)
	find $(GEN_DIR)/facerestore -type d -exec touch {}/__init__.py \;
	touch $@

proto: $(GEN_DIR)/.proto-stamp

# Our own packages, editable, in the one development virtualenv.
$(VENV)/.installed: $(GEN_DIR)/.proto-stamp libs/common/pyproject.toml $(foreach s,$(SERVICES),services/$(s)/pyproject.toml)
	$(BIN)/pip install --quiet --no-deps --config-settings editable_mode=compat \
		-e libs/common $(foreach s,$(SERVICES),-e services/$(s))
	touch $@

$(BUF):
	npm install --silent --no-audit --no-fund --prefix .tools @bufbuild/buf@$(BUF_VERSION)

# kubectl's built-in kustomize renders deploy/k8s in the tests (Debian: kubernetes-client).
kubectl:
	@command -v kubectl >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& apt-get install -y -qq --no-install-recommends kubernetes-client; } \
		|| { echo "kubectl is missing: install Debian's kubernetes-client" >&2; exit 1; }

setup: $(VENV)/.installed $(BUF) kubectl

brokers:
	deploy/local/ensure-brokers.sh

lint: setup
	$(MAKE) lint-checks

test: setup brokers lint-checks
	$(BIN)/python -m pytest

# The static checks, also run by `make test` so that CI fails on them.
lint-checks:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd proto && ../$(BUF) lint
	$(BIN)/hadolint Dockerfile

run: setup brokers
	$(BIN)/python deploy/local/stack.py

# deploy/k8s/base/ from the chart's production render (helm/facerestore/ci/gpu-values.yaml).
k8s-manifests: setup
	$(BIN)/python deploy/k8s/render.py

bench: setup
	$(BIN)/python benchmarks/inference.py

clean:
	rm -rf $(VENV) .tools $(GEN_DIR)/facerestore $(GEN_DIR)/.proto-stamp
