# HETA attribution service: one file, two images (docs/deploy.md):
#   docker build -t heta:cpu .                                   the API, and workers on CPU
#   docker build --build-arg TORCH_VARIANT=cuda -t heta:cuda .   workers on NVIDIA GPUs
# Model weights are never part of an image: they live in the /models volume, filled by `heta download`.
ARG TORCH_VARIANT=cpu
ARG TORCH_VERSION=2.13.0

FROM python:3.11.14-slim-bookworm AS base
# HF_HUB_OFFLINE: a worker loads what `heta download` put in /models and never reaches the Hub itself.
# OMP_WAIT_POLICY: idle OpenMP threads sleep instead of spinning, so co-located processes keep their cores.
ENV PYTHONDONTWRITEBYTECODE=1 \
    OMP_WAIT_POLICY=PASSIVE \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/models/hf \
    HF_HUB_OFFLINE=1 \
    HETA_HOST=0.0.0.0 \
    HETA_PORT=8000 \
    HETA_REDIS_DIR=/data/redis
RUN useradd --create-home --uid 10001 heta && mkdir -p /data /models/hf && chown -R heta:heta /data /models
WORKDIR /app

# torch comes first and pinned, as in the README's install: installed as a dependency of the project,
# pip would pick whatever build it likes
FROM base AS torch-cpu
ARG TORCH_VERSION
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://download.pytorch.org/whl/cpu

# PyPI's Linux torch wheel is the CUDA build: torch 2.13.0 pins the CUDA 13.0 runtime, cuDNN 9.20 and
# NCCL 2.29 as wheels of their own, so no CUDA base image is needed; the host needs the NVIDIA driver
# (>= 580, the first to run CUDA 13.0) and the NVIDIA container toolkit
FROM base AS torch-cuda
ARG TORCH_VERSION
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url https://pypi.org/simple

# The documentation site (README, docs/, the Python reference from heta_core's docstrings, read
# statically: no torch here), served at /guide/; the versions are the ones CI builds it with
FROM python:3.11.14-slim-bookworm AS guide
WORKDIR /src
RUN pip install --no-cache-dir mkdocs==1.6.1 mkdocs-material==9.8.2 mkdocstrings-python==2.0.11
COPY mkdocs.yml README.md CHANGELOG.md CONTRIBUTING.md ./
COPY docs ./docs
COPY scripts/docs_hooks.py ./scripts/
COPY heta_core ./heta_core
RUN NO_MKDOCS_2_WARNING=1 mkdocs build --strict --site-dir /site

# torch-cpu or torch-cuda above (hadolint does not expand the ARG and takes it for an untagged image)
# hadolint ignore=DL3006
FROM torch-${TORCH_VARIANT} AS runtime
WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY heta_core ./heta_core
COPY service ./service
# placement (accelerate, torchao): HETA_DEVICE_MAP and HETA_QUANTIZE work in the image as documented
# (docs/engine.md, Placement); ~30 MB next to torch's hundreds
RUN pip install --no-cache-dir -c constraints.txt ".[server,placement]"
COPY --from=guide /site ./site
ENV HETA_GUIDE_DIR=/app/site

# numeric, so that Kubernetes can verify runAsNonRoot
USER 10001
EXPOSE 8000
VOLUME ["/data", "/models"]
# the default command serves HTTP; compose and Kubernetes give `heta worker` containers a probe of their own
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
# one command runs it all (embedded Redis unless REDIS_URL is set); compose/k8s run `heta api` / `heta worker`
CMD ["heta", "serve"]
