# syntax=docker/dockerfile:1
#
# GPU image of the web UI. Build:  docker build -t llm-webui .
# Run:  docker run --gpus all -p 127.0.0.1:7860:7860 \
#         -v "$PWD/models:/app/models:ro" -v "$PWD/data:/app/data" llm-webui
# See docs/deploy.md. Faster builds for one GPU generation: --build-arg CUDA_ARCHITECTURES=89
#
# Ubuntu 24.04 images, because they ship Python 3.12 (22.04 has 3.10, and deadsnakes is a third-party
# PPA). The code targets 3.11+ and every dependency has 3.12 wheels, so the image runs on 3.12.

ARG CUDA_VERSION=12.8.1

# ---- builder: compile llama-cpp-python with CUDA into a venv ---------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-devel-ubuntu24.04 AS builder

ARG CUDA_ARCHITECTURES="75;80;86;89;90;120"

# DL3008: the CUDA base image pins the OS release; pinning each apt package breaks on every
# Ubuntu security update, so versions are left to the release (see .hadolint.yaml).
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-dev python3-venv build-essential cmake patch \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# GGML_NATIVE=OFF: the image must run on other CPUs than the build machine's (no -march=native), and
# the build machine needs no GPU. --allow-shlib-undefined: the build has no libcuda.so.1 (the driver
# provides it at run time, through the NVIDIA Container Toolkit).
ENV CMAKE_ARGS="-DGGML_CUDA=on -DGGML_NATIVE=OFF -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES} -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined"

# Only what the build needs first: the slow CUDA compile is cached until the requirements or the patches
# change. llama-cpp-python builds from its sdist with our patches to llama.cpp (see the script).
COPY requirements.txt /tmp/build/requirements.txt
COPY scripts/install_llama_cpp.sh scripts/llama_cpp_sdist.sh /tmp/build/scripts/
COPY patches/ /tmp/build/patches/
RUN --mount=type=cache,target=/root/.cache/pip --mount=type=cache,target=/root/.cache/llmchat \
    PYTHON=/opt/venv/bin/python bash /tmp/build/scripts/install_llama_cpp.sh \
    && pip install -r /tmp/build/requirements.txt

# ---- runtime ----------------------------------------------------------------------------------
FROM nvidia/cuda:${CUDA_VERSION}-runtime-ubuntu24.04

# libgomp1: llama.cpp's CPU threads (OpenMP). No curl: the health check uses Python.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A non-root user. UID 1000 matches the first user on most hosts, so a bind-mounted ./data is
# writable; change it with --build-arg APP_UID=$(id -u). The base image's "ubuntu" user has 1000.
ARG APP_UID=1000
RUN userdel --remove ubuntu 2>/dev/null; \
    useradd --uid "${APP_UID}" --user-group --create-home --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Source last: a code change rebuilds only these small layers. Owned by root, read-only for "app".
COPY engine/ engine/
COPY webui/ webui/
COPY cli/ cli/
COPY presets/ presets/
COPY config/ config/
RUN mkdir -p /app/models /app/data && chown app:app /app/data

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_ANALYTICS_ENABLED=False \
    LLM_GPU__REQUIRED=true \
    LLM_SERVER__INSECURE_LAN=true
# The server binds 0.0.0.0 inside the container so that Docker can forward the port; without both
# credentials it would refuse that. The published port decides who reaches it: publish on 127.0.0.1
# (as docker-compose.yml does), or set LLM_SERVER__AUTH and LLM_SERVER__API_KEY (see docs/deploy.md).

# Numeric, so Kubernetes runAsNonRoot can verify it.
USER ${APP_UID}
# models/ is mounted read-only at /app/models, data/ read-write at /app/data.
VOLUME ["/app/data"]
EXPOSE 7860

HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/api/health', timeout=4)"]

CMD ["python", "-m", "webui", "--host", "0.0.0.0", "--port", "7860", "--config", "/app/config/model_config.yaml", "--data-dir", "/app/data"]
