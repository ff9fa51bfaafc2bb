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

.PHONY: help setup proto lint lint-checks test run brokers bench wrk bench-search bench-export models clean kubectl k8s-manifests monitoring sdk web chromium chaos load

help:
	@echo "make run    start the whole platform on this machine (gateway on http://127.0.0.1:8080)"
	@echo "make test   set up from nothing and run every test"
	@echo "make lint   ruff, mypy, buf lint, hadolint"
	@echo "make proto  regenerate the gRPC and event stubs from proto/"
	@echo "make bench  restoration throughput per backend, and the gateway's req/s and p50/p99 next to bare FastAPI (wrk)"
	@echo "make bench-export  exports of 100/1,000/3,000 images: time and peak memory (~4 min)"
	@echo "make bench-search  face index at 1M vectors: build, memory, p50/p95, recall@10 (~15 min; SEARCH_ARGS=\"--vectors 100000\")"
	@echo "make chaos  1000 uploads through crashes and outages on a private platform; fails if one is lost or doubled"
	@echo "make load   accepted uploads/s, finished images/s (1 and 2 workers) and the accepted->done overhead"
	@echo "make sdk    generate the Python and TypeScript clients from the OpenAPI document into build/sdk/"
	@echo "make web    build the web client (web/ -> web/dist), served by the gateway at /"
	@echo "make models download GFPGANv1.4, CodeFormer and insightface buffalo_l into MODEL_DIR (sha256-pinned)"

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

# The web client's npm packages and the TypeScript SDK generator, as web/package-lock.json pins them.
web/node_modules/.stamp: web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The OpenAPI document the gateway serves (build/openapi.json) and the client SDKs generated from it
# (build/sdk/python, build/sdk/typescript), every run; any generator warning fails it.
sdk: $(VENV)/.installed web/node_modules/.stamp
	$(BIN)/python sdk/generate.py

# The web client (web/ -> web/dist, served by the gateway at /), rebuilt when its sources or the
# TypeScript SDK change.
WEB_SOURCES := web/index.html web/vite.config.ts web/tsconfig.json $(shell find web/src web/public -type f 2>/dev/null)
build/web.stamp: web/node_modules/.stamp build/sdk/typescript/schema.d.ts $(WEB_SOURCES)
	cd web && npm run --silent build
	touch $@

# Only the TypeScript SDK: `make run` is not held up by the Python one (`make test` generates that
# from the running platform's document, tests/e2e/test_sdk.py).
web: $(VENV)/.installed web/node_modules/.stamp
	$(BIN)/python sdk/generate.py --only typescript
	@$(MAKE) --no-print-directory build/web.stamp

# Debian's chromium for the browser tests: Playwright drives it by its path (never its own download).
chromium:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& apt-get install -y -qq --no-install-recommends chromium; } \
		|| { echo "chromium is missing: install Debian's chromium" >&2; exit 1; }

brokers:
	deploy/local/ensure-brokers.sh

lint: setup
	$(MAKE) lint-checks

test: setup brokers lint-checks web chromium
	$(BIN)/python -m pytest

# The static checks, also run by `make test` so that CI fails on them.
lint-checks:
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	cd proto && ../$(BUF) lint
	$(BIN)/hadolint Dockerfile

run: setup brokers web
	$(BIN)/python deploy/local/stack.py

# deploy/k8s/base/ from the chart's production render (helm/facerestore/ci/gpu-values.yaml).
k8s-manifests: setup
	$(BIN)/python deploy/k8s/render.py
	$(BIN)/python deploy/monitoring/render.py

# deploy/monitoring/ (alert rules, Grafana dashboards) from the chart.
monitoring: setup
	$(BIN)/python deploy/monitoring/render.py

# wrk loads the gateway in `make bench` (Debian: wrk).
wrk:
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& apt-get install -y -qq --no-install-recommends wrk; } \
		|| { echo "wrk is missing: install Debian's wrk" >&2; exit 1; }

# The gateway's run starts the whole platform (results in benchmarks/results/gateway.json).
bench: setup brokers wrk
	$(BIN)/python benchmarks/inference.py
	$(BIN)/python benchmarks/gateway.py $(GATEWAY_BENCH_ARGS)

# Long (a 1,000,000-vector build); results in benchmarks/results/search.json.
bench-search: setup
	$(BIN)/python benchmarks/search.py $(SEARCH_ARGS)

# Export of 100, 1,000 and 3,000 images: time and peak memory; results in benchmarks/results/export.json.
EXPORT_ITEMS ?= 100,1000,3000
bench-export: setup
	$(BIN)/python benchmarks/export.py --items $(EXPORT_ITEMS)

# Locust against a private platform (its own RabbitMQ node and Redis); results in benchmarks/results/.
# Options: make chaos CHAOS_ARGS="--uploads 2000", make load LOAD_ARGS="--uploads 300".
chaos: setup brokers
	$(BIN)/python -m benchmarks.load.chaos $(CHAOS_ARGS)

load: setup brokers
	$(BIN)/python -m benchmarks.load.capacity $(LOAD_ARGS)

# Resumable; stops at once when offline (the platform then runs on classical/dlib). ONLY=GFPGANv1.3.pth etc.
models: $(VENV)/.installed
	$(BIN)/python -m inference_service.download_models $(ONLY)

clean:
	rm -rf $(VENV) .tools $(GEN_DIR)/facerestore $(GEN_DIR)/.proto-stamp build web/node_modules web/dist
