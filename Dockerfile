# HETA attribution service. CPU image by default; for GPUs build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
FROM python:3.11-slim AS runtime

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/models/.cache \
    HETA_HOST=0.0.0.0 \
    HETA_PORT=8000 \
    HETA_REDIS_DIR=/data/redis

RUN useradd --create-home --uid 10001 heta && mkdir -p /data /models && chown heta:heta /data /models
WORKDIR /app

# torch first and pinned: an unpinned torch would pull the default CUDA build
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml constraints.txt README.md ./
COPY heta_core ./heta_core
COPY service ./service
RUN pip install -c constraints.txt ".[server]"

USER heta
EXPOSE 8000
VOLUME ["/data", "/models"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
# one command runs it all (embedded Redis unless REDIS_URL is set); compose/k8s run `heta api` / `heta worker`
CMD ["heta", "serve"]
