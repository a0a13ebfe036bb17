# gan-forge images: one file, three build targets (docker build --target NAME .; docker-compose.yml builds them):
#   serve      the HTTP service on the CUDA 12 runtime + cuDNN 9 with onnxruntime-gpu, no PyTorch (GPU hosts)
#   serve-cpu  the same service on onnxruntime (CPU), on python:slim (hosts without a GPU)
#   trainer    PyTorch with CUDA: gan-train, gan-export and train-and-export (the compose `train` profile)
#
# Nothing is baked in but code and dependencies: models are mounted at /models at run time (read-only for
# the service), settings come from GAN_* variables, and .dockerignore keeps runs/, models/, .venv, .git
# and .env out of the build context.
#
# Layer order keeps rebuilds fast: each target installs its dependencies from the extras of pyproject.toml
# (only that file and the small script that reads it are copied first), then copies the source, so a code
# change rebuilds only the last layers and never reinstalls onnxruntime or PyTorch.
#
# Hosts that reach no registry build serve-cpu on a local Debian base instead: deploy/local/build-base.sh makes
# it from Debian's packages and passes it as PYTHON_IMAGE (docs/deploy.md, "Air-gapped hosts"). No `# syntax=`
# line: it would make BuildKit pull a frontend image; the built-in one handles everything here.
#
# Versions that must agree (tests/deploy/test_images.py checks them):
#   - onnxruntime-gpu in pyproject's serve-gpu extra is >=1.19,<1.27: the PyPI wheels of 1.19-1.26 are
#     built for CUDA 12 + cuDNN 9, those of 1.27 and later for CUDA 13, so CUDA_IMAGE stays on CUDA 12.
#   - TORCH_IMAGE's PyTorch lies in pyproject's torch range (>=2.4,<2.14); pip is held to it.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
ARG PYTHON_IMAGE=python:3.12-slim-bookworm
ARG TORCH_IMAGE=pytorch/pytorch:2.13.0-cuda12.6-cudnn9-runtime

# ---------------------------------------------------------------------------------------------------------
# trainer: PyTorch's own CUDA image; its torch is kept (a constraint), so pip neither downloads another
# multi-GB build nor silently replaces it, and fails if it is outside the project's range.
FROM ${TORCH_IMAGE} AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNS_DIR=/runs MODEL_DIR=/models
RUN groupadd --system --gid 10001 gan \
    && useradd --system --no-log-init --uid 10001 --gid gan --create-home --shell /usr/sbin/nologin gan \
    && mkdir -p /models /runs && chown gan:gan /models /runs
WORKDIR /app
COPY scripts/extra_requirements.py pyproject.toml /tmp/build/
RUN python -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" > /tmp/build/constraints.txt \
    && python /tmp/build/extra_requirements.py --pyproject /tmp/build/pyproject.toml train export \
        > /tmp/build/requirements.txt \
    && pip install --constraint /tmp/build/constraints.txt --requirement /tmp/build/requirements.txt \
    && rm -rf /tmp/build
# gan-export imports service.manifest, so the service package comes along (it is small; onnxruntime is
# already here for the export's parity check).
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
COPY export/ export/
COPY service/ service/
COPY scripts/train_and_export.sh /usr/local/bin/train-and-export
# --no-deps: the dependencies are the layer above; this only adds the console scripts (gan-train, ...).
RUN pip install --no-deps . && rm -rf build ./*.egg-info && chmod 0755 /usr/local/bin/train-and-export
# Run from the runs volume, so relative defaults (gan-train's runs/ARCH) land somewhere writable and kept.
WORKDIR /runs
USER 10001:10001
CMD ["train-and-export"]

# ---------------------------------------------------------------------------------------------------------
# serve-cpu: the service on onnxruntime (CPU).
FROM ${PYTHON_IMAGE} AS serve-cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONPATH=/app GAN_MODEL_DIR=/models GAN_DEVICE=cpu
# A fixed numeric uid (10001) so volume ownership and Kubernetes' runAsNonRoot can rely on it.
# `gan-serve` runs the copied source (python -m service.cli), so flags work as documented in docs/service.md.
RUN groupadd --system --gid 10001 gan \
    && useradd --system --no-log-init --uid 10001 --gid gan --create-home --shell /usr/sbin/nologin gan \
    && printf '#!/bin/sh\nexec python -m service.cli "$@"\n' > /usr/local/bin/gan-serve \
    && chmod 0755 /usr/local/bin/gan-serve \
    && mkdir -p /models && chown gan:gan /models
WORKDIR /app
COPY scripts/extra_requirements.py pyproject.toml /tmp/build/
RUN python /tmp/build/extra_requirements.py --pyproject /tmp/build/pyproject.toml serve > /tmp/build/requirements.txt \
    && pip install --requirement /tmp/build/requirements.txt \
    && rm -rf /tmp/build
# The whole package, run from the source tree (PYTHONPATH=/app): service/static/ (the browser demo) and any
# other data file ships as it is, with no packaging glob that could leave one out.
COPY service/ service/
USER 10001:10001
EXPOSE 8000
# Liveness only (/healthz answers 200 while warming up); readiness is /readyz, for load balancers.
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GAN_PORT', '8000'), timeout=2)"]
CMD ["gan-serve"]

# ---------------------------------------------------------------------------------------------------------
# serve (the default target: last in this file): the service on CUDA with onnxruntime-gpu. GAN_DEVICE=cuda
# makes a missing GPU a start-up error instead of a silent, slow CPU fallback.
FROM ${CUDA_IMAGE} AS serve
ARG DEBIAN_FRONTEND=noninteractive
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH PYTHONPATH=/app GAN_MODEL_DIR=/models GAN_DEVICE=cuda
# Ubuntu's python3 in a virtualenv (Ubuntu 24.04 refuses pip into the system Python). apt versions are not
# pinned: the base image is pinned, and pinning Ubuntu package versions breaks the build at each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3 -m venv /opt/venv \
    && groupadd --system --gid 10001 gan \
    && useradd --system --no-log-init --uid 10001 --gid gan --create-home --shell /usr/sbin/nologin gan \
    && printf '#!/bin/sh\nexec python -m service.cli "$@"\n' > /usr/local/bin/gan-serve \
    && chmod 0755 /usr/local/bin/gan-serve \
    && mkdir -p /models && chown gan:gan /models
WORKDIR /app
COPY scripts/extra_requirements.py pyproject.toml /tmp/build/
RUN python /tmp/build/extra_requirements.py --pyproject /tmp/build/pyproject.toml serve-gpu \
        > /tmp/build/requirements.txt \
    && pip install --requirement /tmp/build/requirements.txt \
    && rm -rf /tmp/build
COPY service/ service/
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('GAN_PORT', '8000'), timeout=2)"]
CMD ["gan-serve"]
