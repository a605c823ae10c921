# One image for serving and training: Ray Serve replicas and Ray Train workers run the same code.
#
#   docker build -t persona:latest .
#   docker run -p 8000:8000 persona:latest                           # Ray Serve (serve_config.yaml)
#   docker run -v "$PWD/data:/app/data" persona:latest \
#       persona train --config configs/simulated_bank.yaml            # training entry point
#
# GPU nodes (ray_cluster.yaml's gpu_training) take the CUDA build of the same image, from the
# PyTorch index matching the nodes' driver (e.g. cu128):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t persona:latest-cuda .
FROM python:3.11-slim

# The CPU wheel index by default: the CUDA wheels add ~3 GB that CPU nodes never use.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_SERVE_THROUGHPUT_OPTIMIZED=1 \
    RAY_SERVE_ENABLE_HA_PROXY=1

# build-essential for any dependency without a wheel; rsync for the Ray cluster launcher's file
# sync; redis-tools to inspect the Feast online store from inside a node; haproxy as Serve's
# HTTP front (the measured production setup, README "Performance").
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential rsync redis-tools haproxy \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so a source change does not reinstall them.
# torch comes from its own index (pinned exactly as in pyproject.toml); the rest from PyPI.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && pip install --extra-index-url "${TORCH_INDEX_URL}" -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY persona/ persona/
COPY training/ training/
COPY serving/ serving/
COPY segmentation/ segmentation/
COPY monitoring/ monitoring/
COPY feature_repo/ feature_repo/
COPY configs/ configs/
COPY serve_config.yaml ./
# --no-deps: the layer above already holds every pinned dependency; this adds the `persona` CLI.
RUN pip install --no-deps .

# Non-root: a compromised replica cannot write outside /app/data and its home.
RUN useradd --create-home --uid 1000 persona \
    && mkdir -p /app/data \
    && chown persona:persona /app/data
USER persona

# Ray Serve's HTTP front (HAProxy).
EXPOSE 8000

# Serving by default; training overrides the command: persona train --config configs/<run>.yaml
CMD ["serve", "run", "serve_config.yaml"]
