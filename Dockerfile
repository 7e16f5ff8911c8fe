# One image, two targets (scripts/build-images.sh builds and checks both):
#   train  the ihl package and command line; what the Kubeflow components run
#   serve  the same environment plus Java 17 and TorchServe, serving the project's config
#
# Dependencies come from uv.lock (frozen, no dev tools) into /opt/venv. torch's CUDA
# libraries are locked wheels too, so GPU nodes need only the NVIDIA driver, not a CUDA
# base image. Layers are ordered so that a code change rebuilds a small layer, not the
# multi-GB dependency layer.
#
# BASE_IMAGE must be a Debian bookworm image with Python 3.11 as `python3` (the official
# image has it in /usr/local/bin, Debian's python3 package in /usr/bin). Pin it by digest
# for releases: --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:...
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG UV_VERSION=0.13.9

FROM ${BASE_IMAGE} AS base
# A fixed numeric uid: Kubernetes' runAsNonRoot can only verify a numeric USER.
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/ihl --shell /bin/sh ihl
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1

# The project as a wheel, built from the sources alone (the .dockerignore allows nothing else).
# uv comes from PyPI at a pinned version into /tmp/uv inside each RUN that needs it, and is
# deleted there, so it never reaches a shipped layer. (A bind mount from a uv stage would be
# neater, but podman 4 cannot mount from a stage that it took from its cache.) pip and uv
# trust the system CA bundle, not their own, for proxies that re-sign TLS.
FROM base AS wheel
ARG UV_VERSION
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
COPY ihl ./ihl
# The wheel ships the Kubeflow definitions and the handler's files beside ihl/ (pyproject.toml).
COPY components ./components
COPY pipelines ./pipelines
COPY serving/ihl_handler.py serving/model-config.yaml serving/kserve.config.properties ./serving/
RUN --mount=type=cache,target=/root/.cache \
    python3 -m venv /tmp/uv \
    && /tmp/uv/bin/pip install -q --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}" \
    && /tmp/uv/bin/uv build --wheel --out-dir /dist --link-mode=copy --system-certs

# Third-party dependencies only: rebuilt when pyproject.toml or uv.lock change. The lock
# file stays in the image as the record of what is installed. xtcocotools is built from
# source (pyproject.toml says why), so a C compiler, and Python's headers where the base has
# none (Debian's python3 without python3-dev), are installed for this step and purged in
# the same step: no layer ships them (docker/check_image.py clean checks the result).
# Downloaded wheels and built sdists stay in the cache mount, so a lock change
# re-downloads only what changed.
FROM base AS deps
ARG UV_VERSION
COPY pyproject.toml uv.lock /opt/ihl/
RUN --mount=type=cache,target=/root/.cache \
    build_deps="gcc libc6-dev" \
    && if ! python3 -c "import os, sysconfig, sys; \
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_path('include'), 'Python.h')))"; then \
        build_deps="$build_deps python3-dev"; \
    fi \
    && apt-get update \
    && apt-get install -y --no-install-recommends $build_deps \
    && python3 -m venv /tmp/uv \
    && /tmp/uv/bin/pip install -q --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}" \
    && cd /opt/ihl && /tmp/uv/bin/uv sync --active --frozen --no-dev --no-install-project \
        --no-python-downloads --compile-bytecode --link-mode=copy --system-certs \
    && rm -rf /tmp/uv \
    && apt-get purge -y --auto-remove $build_deps \
    && rm -rf /var/lib/apt/lists/*

# The locked torch is built for CUDA 13 (NVIDIA driver >= 580). For older drivers, TORCH_CUDA
# swaps in the same torch and torchvision versions built for another CUDA from PyTorch's
# index, e.g. --build-arg TORCH_CUDA=cu126 (driver >= 525 for any CUDA 12 build); see
# docs/cluster.md. Empty keeps the lock's build.
ARG TORCH_CUDA=
RUN --mount=type=cache,target=/root/.cache \
    if [ -n "${TORCH_CUDA}" ]; then \
        python3 -m venv /tmp/uv \
        && /tmp/uv/bin/pip install -q --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}" \
        && pins=$(/opt/venv/bin/python -c "from importlib.metadata import version; \
print(*(p + '==' + version(p).split('+')[0] for p in ('torch', 'torchvision')))") \
        && /tmp/uv/bin/uv pip install --python /opt/venv/bin/python --system-certs \
            --index "https://download.pytorch.org/whl/${TORCH_CUDA}" \
            --reinstall-package torch --reinstall-package torchvision \
            --compile-bytecode --link-mode=copy ${pins} \
        && /opt/venv/bin/python -c "import torch; assert torch.version.cuda, torch.__version__" \
        && rm -rf /tmp/uv; \
    fi

# ---------------------------------------------------------------- train
FROM deps AS train
ARG UV_VERSION
# The wheel is copied, not bind-mounted, so that a code change always invalidates the
# install step: podman 4 ignores bind-mount contents in its layer cache.
COPY --from=wheel /dist/ /opt/ihl/dist/
RUN --mount=type=cache,target=/root/.cache \
    python3 -m venv /tmp/uv \
    && /tmp/uv/bin/pip install -q --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}" \
    && /tmp/uv/bin/uv pip install --no-deps --compile-bytecode --python /opt/venv/bin/python \
        /opt/ihl/dist/ihl-*.whl \
    && rm -rf /tmp/uv
# `ihl export` (the Kubeflow export component) packs the handler and model config into the
# archive and writes the KServe config: the repository's serving/ files, found here.
COPY serving/ihl_handler.py serving/model-config.yaml serving/kserve.config.properties \
    /opt/ihl/serving/
ENV IHL_SERVING_DIR=/opt/ihl/serving
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/ihl-pose/ihl
# The image has no git checkout: `ihl export` writes this revision into the model card.
ENV IHL_REVISION=${REVISION}
LABEL org.opencontainers.image.title="ihl-train" \
      org.opencontainers.image.description="IHL pose estimation: training, evaluation and Kubeflow components" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
USER 10001:10001
WORKDIR /home/ihl
ENTRYPOINT ["ihl"]
CMD ["--help"]

# ---------------------------------------------------------------- serve
FROM deps AS serve
ARG UV_VERSION
# Slim Debian images delete /usr/share/man, where the JRE's postinst links its man pages.
# tini: the torchserve launcher does not pass SIGTERM on to its Java server, so tini -g
# signals the whole process group and a pod stops at once instead of after its grace period.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless tini \
    && rm -rf /var/lib/apt/lists/*
COPY --from=wheel /dist/ /opt/ihl/dist/
RUN --mount=type=cache,target=/root/.cache \
    python3 -m venv /tmp/uv \
    && /tmp/uv/bin/pip install -q --cert /etc/ssl/certs/ca-certificates.crt "uv==${UV_VERSION}" \
    && cd /opt/ihl && /tmp/uv/bin/uv sync --active --frozen --no-dev --group serve \
        --no-install-project --no-python-downloads --compile-bytecode --link-mode=copy \
        --system-certs --inexact --no-install-package torch --no-install-package torchvision \
    && /tmp/uv/bin/uv pip install --no-deps --compile-bytecode --python /opt/venv/bin/python \
        /opt/ihl/dist/ihl-*.whl \
    && rm -rf /tmp/uv
COPY serving/ihl_handler.py serving/model-config.yaml serving/kserve.config.properties \
    serving/healthcheck.py serving/verify_models.py /opt/ihl/serving/
ENV IHL_SERVING_DIR=/opt/ihl/serving
COPY serving/config.properties /opt/ihl/config.properties
# KServe mounts the registry's export folder at /mnt/models (model-store/ and config/).
RUN mkdir -p /mnt/models/model-store && chown -R 10001:10001 /mnt/models
ARG VERSION=dev
ARG REVISION=unknown
ARG SOURCE=https://github.com/ihl-pose/ihl
LABEL org.opencontainers.image.title="ihl-serve" \
      org.opencontainers.image.description="IHL pose estimation served by TorchServe" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# The project config listens on loopback only (local runs); in a container the inference
# API must be reachable from outside it (enable_envvars_config lets TS_* override the file).
# Management and metrics stay on the container's loopback: TorchServe's key does not cover
# the metrics API, and management needs no caller outside the pod. To let Prometheus
# scrape, set TS_METRICS_ADDRESS=http://0.0.0.0:8082 in the pod together with a
# NetworkPolicy that admits only the scraper (docs/images.md).
ENV TS_INFERENCE_ADDRESS=http://0.0.0.0:8080 \
    TS_MANAGEMENT_ADDRESS=http://127.0.0.1:8081 \
    TS_METRICS_ADDRESS=http://127.0.0.1:8082
USER 10001:10001
WORKDIR /home/ihl
EXPOSE 8080
# /ping takes TorchServe's inference key when token authorization is on, and keys expire:
# the check renews an expired key with the API key, which never expires, and TorchServe
# writes the new key into key_file.json in its working directory, where the check runs.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python3", "/opt/ihl/serving/healthcheck.py", "http://127.0.0.1:8080/ping", \
         "http://127.0.0.1:8081"]
# verify_models.py checks the mounted model files against the manifest digest pinned in
# IHL_MANIFEST_SHA256 (set by `ihl registry manifest`) and only then execs the command.
ENTRYPOINT ["tini", "-g", "--", "python3", "/opt/ihl/serving/verify_models.py"]
CMD ["torchserve", "--foreground", "--no-config-snapshots", \
     "--ts-config", "/opt/ihl/config.properties", "--model-store", "/mnt/models/model-store"]
