# syntax=docker/dockerfile:1
# GenView scorer image: `genview scorer-api` (the default command) and `genview scorer-worker`
# (same image, another command). Build from the repository root:
#   docker build -f docker/scorer.Dockerfile -t genview-scorer .
# The generator image (docker/generator.Dockerfile) has the same layers up to the source, so Docker's build
# cache shares them between the two.
FROM nvidia/cuda:13.0.1-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/cache/huggingface \
    GENVIEW_MODEL_CACHE=/cache/genview \
    GENVIEW_STORE_URL=file:///data/genview-data

# Ubuntu's Python in a venv; a non-root user owning the cache, data and GPU-slot folders.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin genview \
 && mkdir -p /cache/huggingface /cache/genview /data /run/genview-gpu \
 && chown -R genview:genview /cache /data /run/genview-gpu

# PyTorch first: the largest layer and the one that changes least (its CUDA 13 wheels bring their own
# CUDA and cuDNN libraries; the base image brings the CUDA runtime setup for the NVIDIA container toolkit).
RUN pip install torch==2.14.1 torchvision==0.29.1

# The project's dependencies, read from pyproject.toml alone: editing the source does not reinstall them.
WORKDIR /app
ARG EXTRAS=""
COPY pyproject.toml docker/requirements.py ./
RUN python requirements.py "$EXTRAS" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt requirements.py

# The source last (small layers), installed without dependencies.
COPY README.md ./
COPY genview/ genview/
COPY services/ services/
COPY trainer/ trainer/
COPY docker/entrypoint.py docker/healthcheck.py docker/
RUN pip install --no-deps -e .

USER 10001:10001
# /cache: model cache (HF_HOME, GENVIEW_MODEL_CACHE); /data: the default file:// store.
VOLUME ["/cache", "/data"]
EXPOSE 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "http://127.0.0.1:8001/healthz"]
ENTRYPOINT ["python", "/app/docker/entrypoint.py"]
CMD ["genview", "scorer-api", "--host", "0.0.0.0", "--port", "8001"]
