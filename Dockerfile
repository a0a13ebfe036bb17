# syntax=docker/dockerfile:1
# Build targets:
#   serve      slim serving image, CUDA runtime + onnxruntime-gpu, no PyTorch (default for GPU hosts)
#   serve-cpu  the same service on onnxruntime (CPU) for hosts without a GPU
#   trainer    PyTorch with CUDA: runs gan-train and gan-export
# Models are mounted at /models (read-only for the service); none are baked in.

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS serve-cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GAN_MODEL_DIR=/models
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip install ".[serve]" && useradd --create-home --uid 10001 gan
USER gan
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["gan-serve", "--host", "0.0.0.0", "--port", "8000"]

FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 AS serve
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 GAN_MODEL_DIR=/models GAN_DEVICE=cuda
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md ./
COPY service/ service/
RUN pip3 install ".[serve-gpu]" && useradd --create-home --uid 10001 gan
USER gan
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
    CMD python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)" || exit 1
CMD ["gan-serve", "--host", "0.0.0.0", "--port", "8000"]

FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime AS trainer
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY trainer/ trainer/
COPY export/ export/
COPY service/manifest.py service/__init__.py service/
RUN pip install ".[train,export]" && useradd --create-home --uid 10001 gan
USER gan
ENTRYPOINT ["gan-train"]
