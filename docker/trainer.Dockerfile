# syntax=docker/dockerfile:1
# GenView trainer image: `python trainer/run.py …`, or `torchrun --nproc-per-node N trainer/run.py …` on
# several GPUs. Build from the repository root:
#   docker build -f docker/trainer.Dockerfile -t genview-trainer .
# Same layers as the service images up to the source (Docker's build cache shares them). Extras of
# pyproject.toml can be added with --build-arg EXTRAS=name[,name…].
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

# Ubuntu's Python in a venv; a non-root user owning the cache and run folders.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/venv \
 && useradd --uid 10001 --create-home --shell /usr/sbin/nologin genview \
 && mkdir -p /cache/huggingface /cache/genview /data /runs \
 && chown -R genview:genview /cache /data /runs

# PyTorch first: the largest layer and the one that changes least.
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
COPY docker/healthcheck.py docker/
RUN pip install --no-deps -e .

USER 10001:10001
# /cache: model cache (HF_HOME, GENVIEW_MODEL_CACHE); /runs: checkpoints and TensorBoard logs (--out).
VOLUME ["/cache", "/runs"]
HEALTHCHECK --interval=60s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "--process", "trainer/run.py"]
CMD ["python", "trainer/run.py", "--help"]
