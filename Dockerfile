# One image definition for every service. Build context: the repository root.
#   docker build --build-arg SERVICE=auth --build-arg PORT=50051 -t facerestore/auth .
#   docker build --build-arg SERVICE=inference --target gpu -t facerestore/inference-gpu .
#   docker build --build-arg SERVICE=gateway --build-arg PORT=8080 --target gateway -t facerestore/gateway .
# SERVICE names the folder under services/ (its package installs a `facerestore-<SERVICE>`
# console script, which is the entrypoint); PORT is the service's own port (documentation
# only: the service's settings default to it). Every service also serves /metrics on 9100.
#
# Targets: `runtime` (the default, CPU), `gpu` (inference only: CUDA torch and
# onnxruntime-gpu) and `gateway` (the gateway only: the runtime image plus the web client,
# built from web/ by a Node stage that no other image uses).
# The GPU image is python-slim plus NVIDIA's CUDA wheels (torch from the PyTorch CUDA index
# brings the CUDA runtime, cuBLAS and cuDNN as pip packages), not an nvidia/cuda base: the
# Python stays the same as in every other image, CUDA is pinned by requirements/constraints.txt
# like any other dependency, and only the driver comes from the node (the NVIDIA container
# toolkit mounts it).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG NODE_IMAGE=node:24.20.0-bookworm-slim

# The `facerestore` stubs are generated from proto/, never copied from the host (.dockerignore).
FROM ${PYTHON_IMAGE} AS stubs
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
COPY requirements/constraints.txt requirements/constraints.txt
RUN pip install --no-cache-dir -c requirements/constraints.txt grpcio-tools
COPY proto/ proto/
COPY libs/common/ libs/common/
RUN rm -rf libs/common/facerestore \
    && find proto -name '*.proto' -exec python -m grpc_tools.protoc -I proto \
        --python_out=libs/common --pyi_out=libs/common --grpc_python_out=libs/common {} + \
    && find libs/common/facerestore -type d -exec touch {}/__init__.py \;

# A virtualenv with libs/common and the one service, CPU wheels.
FROM ${PYTHON_IMAGE} AS builder
ARG SERVICE
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
RUN test -n "${SERVICE}" || { echo "build with --build-arg SERVICE=<a folder of services/>" >&2; exit 1; }
COPY requirements/constraints.txt requirements/no-deps.txt requirements/
COPY --from=stubs /src/libs/common/ libs/common/
COPY services/${SERVICE}/ services/${SERVICE}/
# Inference: torch and torchvision first, from PyTorch's CPU index (PyPI's Linux wheels are
# the CUDA build, gigabytes a CPU pod never uses); their own dependencies then come from
# PyPI. insightface goes in without its dependencies: it asks for opencv-python, which would
# clash with opencv-python-headless; the ones it needs come with the inference package.
RUN python -m venv /opt/venv \
    && if [ "${SERVICE}" = inference ]; then \
        /opt/venv/bin/pip install --no-cache-dir --no-deps -c requirements/constraints.txt \
            --index-url https://download.pytorch.org/whl/cpu torch torchvision; \
    fi \
    && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt \
        ./libs/common "./services/${SERVICE}" \
    && if [ "${SERVICE}" = inference ]; then \
        /opt/venv/bin/pip install --no-cache-dir --no-deps -c requirements/constraints.txt \
            -r requirements/no-deps.txt; \
    fi \
    && ln -s "facerestore-${SERVICE}" /opt/venv/bin/facerestore-service

# The inference virtualenv with CUDA wheels in place of the CPU ones: torch and torchvision
# from PyTorch's CUDA 13.0 index, onnxruntime-gpu (CUDA 13) in place of onnxruntime; the
# CUDA and cuDNN libraries both need come from PyPI at the versions the constraints pin.
FROM builder AS gpu-builder
ARG SERVICE
RUN test "${SERVICE}" = inference || { echo "the gpu target is for SERVICE=inference" >&2; exit 1; } \
    && /opt/venv/bin/pip uninstall --yes torch torchvision onnxruntime \
    && /opt/venv/bin/pip install --no-cache-dir --no-deps -c requirements/constraints.txt \
        --index-url https://download.pytorch.org/whl/cu130 torch torchvision \
    && /opt/venv/bin/pip install --no-cache-dir -c requirements/constraints.txt \
        torch torchvision "onnxruntime-gpu[cuda,cudnn]"

# The gateway's OpenAPI document, dumped by its own code: the web client's TypeScript SDK is
# generated from it, as `make web` does (sdk/generate.py --only typescript).
FROM builder AS openapi
ARG SERVICE
RUN test "${SERVICE}" = gateway || { echo "the gateway target is for SERVICE=gateway" >&2; exit 1; } \
    && /opt/venv/bin/python -m gateway_service.openapi_document /src/build/openapi.json

# The web client, built as `make web` builds it, in the repository's layout (tsconfig.json
# finds the SDK at ../build/sdk/typescript): `npm ci` from web/package-lock.json, the SDK
# (a warning from openapi-typescript fails the build, as in sdk/generate.py), then the type
# check and Vite into web/dist.
FROM ${NODE_IMAGE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/index.html web/vite.config.ts web/tsconfig.json ./
COPY web/src/ src/
COPY web/public/ public/
COPY --from=openapi /src/build/openapi.json /src/build/openapi.json
RUN if ! node_modules/.bin/openapi-typescript ../build/openapi.json \
            --output ../build/sdk/typescript/schema.d.ts 2> /tmp/openapi-typescript.err \
        || [ -s /tmp/openapi-typescript.err ]; then \
        cat /tmp/openapi-typescript.err >&2; exit 1; \
    fi \
    && npm run --silent build

# What every image runs as: no root, no shell login, a writable /app/var only.
FROM ${PYTHON_IMAGE} AS base
ARG PORT=9100
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRPC_HOST=0.0.0.0 \
    HTTP_HOST=0.0.0.0 \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100
RUN groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /app --shell /usr/sbin/nologin app \
    && install -d -o 10001 -g 10001 /app /app/var
WORKDIR /app
USER 10001:10001
EXPOSE ${PORT} 9100
ENTRYPOINT ["facerestore-service"]

# The NVIDIA container toolkit mounts the driver's compute libraries only where asked to;
# which GPUs a pod sees is the device plugin's business (NVIDIA_VISIBLE_DEVICES), not the image's.
FROM base AS gpu
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility
COPY --from=gpu-builder /opt/venv /opt/venv

# The gateway: the runtime image plus the web client, served at / from WEBAPP_DIR (owned by
# root, so read-only to the service's user).
FROM base AS gateway
ENV WEBAPP_DIR=/app/web/dist
COPY --from=builder /opt/venv /opt/venv
COPY --from=web /src/web/dist/ /app/web/dist/

# The default target.
FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
