"""All service configuration in one typed place: environment variables ``HETA_*`` (the table: docs/deploy.md)."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import parse_qs, urlsplit

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

LEASE_HEARTBEATS = 3


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HETA_", extra="ignore")

    # what is served
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["heta-demo"],
        description="HF ids (id@revision pins a branch, tag or commit), "
        "local paths or heta-demo (the builtin), comma-separated",
    )
    default_method: str = Field(
        "heta",
        description="method when a request names none: heta, gradient, input_x_gradient, integrated_gradients, "
        "attention_rollout, occlusion",
    )
    device: str | None = Field(None, description="worker device: cpu, cuda, cuda:1 (default: cuda if available)")
    dtype: str | None = Field(None, description="load dtype (default: the checkpoint's)")
    workers: int | None = Field(
        None,
        ge=1,
        description="worker processes for `heta serve` (default: visible GPUs ÷ HETA_GPUS_PER_WORKER × "
        "HETA_WORKERS_PER_GPU, or 1 on CPU)",
    )
    workers_per_gpu: int = Field(
        1,
        ge=1,
        description="`heta serve` workers per visible GPU, each with CUDA_VISIBLE_DEVICES set to its card "
        "(more than 1 for small models)",
    )
    gpus_per_worker: int = Field(
        1,
        ge=1,
        description="`heta serve`: visible GPUs per worker for a model split by HETA_DEVICE_MAP (each worker's "
        "CUDA_VISIBLE_DEVICES names its group); must divide the visible GPUs",
    )
    device_map: str | None = Field(
        None,
        description="split each model with accelerate instead of HETA_DEVICE: auto | balanced | sequential, a JSON "
        "object of module → cpu/disk/GPU index, or @FILE (docs/engine.md, Placement)",
    )
    offload_folder: Path | None = Field(None, description='where HETA_DEVICE_MAP\'s "disk" modules are kept')
    quantize: Literal["int8"] | None = Field(
        None, description="weight-only quantization of each model's linear layers (torchao)"
    )
    torch_threads: int | None = Field(
        None,
        ge=1,
        description="intra-op threads per worker (`heta serve` default on CPU: cores ÷ workers, no oversubscription)",
    )

    # where
    host: str = Field("127.0.0.1", description="API bind address")
    port: int = Field(8000, ge=0, le=65535, description="API port")
    access_log: bool = Field(
        False,
        description="uvicorn's line per request (off: /metrics counts every request and its latency; a line costs "
        "~0.5 ms of queue overhead)",
    )
    guide_dir: Path | None = Field(
        None,
        description="the built documentation site served at /guide/ (default: site/ of the checkout the service "
        "runs from, which scripts/setup builds with `mkdocs build`)",
    )
    redis_url: str | None = Field(
        None,
        validation_alias=AliasChoices("HETA_REDIS_URL", "REDIS_URL"),
        description="shared Redis; unset: `heta serve` embeds one",
    )
    redis_dir: Path = Field(Path(".heta/redis"), description="embedded Redis data directory (kept across restarts)")
    redis_sentinels: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Redis Sentinel addresses host:port, comma-separated (instead of REDIS_URL)"
    )
    redis_master: str = Field("heta", description="the master name the sentinels monitor")
    redis_cluster: bool = Field(
        False, description="REDIS_URL names a node of a Redis Cluster (keys hash-tagged per model)"
    )
    redis_wait_replicas: int | None = Field(
        None,
        ge=0,
        description="replicas a new job must reach before it is acknowledged (WAIT); unset: 1 when the "
        "master has a replica, else 0",
    )
    redis_wait_timeout_ms: int = Field(2000, ge=1, description="how long to wait for that replication; then 503")
    redis_timeout_s: float = Field(
        5.0,
        ge=1,
        description="connect and reply timeout of every Redis call (one retry): a partitioned Redis is a 503 "
        "or a worker's retry after this, never a hang; above the longest block (0.5 s) plus the network's round trip",
    )
    redis_username: str | None = Field(
        None, description="Redis ACL user (a URL's user wins); see deploy/redis/users.acl"
    )
    redis_password: SecretStr | None = Field(None, description="that user's password (a URL's password wins)")
    redis_tls_ca: Path | None = Field(
        None,
        description="CA certificate(s) that signed Redis's; TLS needs rediss:// in REDIS_URL (with sentinels: any "
        "HETA_REDIS_TLS_* turns TLS on); the URL's ssl_ca_certs= wins",
    )
    redis_tls_cert: Path | None = Field(
        None, description="client certificate for Redis's `tls-auth-clients` (with HETA_REDIS_TLS_KEY)"
    )
    redis_tls_key: Path | None = Field(None, description="the client certificate's private key")

    # observability (docs/deploy.md, "Tracing, request ids and logs")
    log_format: Literal["text", "json"] = Field(
        "text",
        description="log lines of the API, workers and `heta serve`: text for a terminal, or json (one object per "
        "line: time, level, logger, message, request_id, job_id, model, trace_id, duration)",
    )
    otel_exporter_otlp_endpoint: str | None = Field(
        None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="OpenTelemetry traces to this OTLP/HTTP endpoint (e.g. http://jaeger:4318; unset: no tracing). The "
        "SDK's other `OTEL_*` variables apply too (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, "
        "OTEL_BSP_SCHEDULE_DELAY, ...)",
    )
    otel_service_name: str = Field("heta", validation_alias="OTEL_SERVICE_NAME", description="the traces' service.name")

    # security and admission
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="keys or sha256:<hex>, comma-separated"
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="browser origins (scheme://host[:port], or *) whose pages may call the API, "
        "e.g. a dashboard's (docs/dashboards.md); comma-separated; unset: none (same-origin pages only)",
    )
    metrics_public: bool = Field(True, description="false: /metrics needs an API key too")
    rate_limit_per_minute: int = Field(600, ge=1, description="requests per API key (or client address) per minute")
    auth_failures_per_minute: int = Field(
        20, ge=1, description="requests with a missing or wrong API key per client address per minute; then 429"
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="larger request bodies get 413")
    max_queue_depth: int = Field(100, ge=1, description="unfinished jobs per model")
    max_inflight_per_key: int = Field(16, ge=1, description="unfinished jobs per API key")
    max_prompt_tokens: int = Field(2048, ge=2, description="per request, capped by each model's positions")
    max_hvps: int = Field(200_000, ge=1, description="cost ceiling: Hessian-vector products per request")
    max_forward_tokens: int = Field(50_000_000, ge=1, description="cost ceiling: token positions per request")
    max_samples: int = Field(1000, ge=1, description="largest `config.samples` a request may ask for")
    max_generate: int = Field(256, ge=1, description="largest `generate` a request may ask for")
    max_batch_items: int = Field(
        64, ge=1, description="prompts per POST /attribute/batch (the batch's total cost must fit the ceilings above)"
    )

    # jobs
    result_ttl_s: int = Field(3600, ge=1, description="finished jobs and results are kept this long")
    cache_ttl_s: int = Field(
        0,
        ge=0,
        description="result cache: an identical request within this many seconds is answered without compute (0: off)",
    )
    cache_max_bytes: int = Field(
        64 * 2**20, ge=0, description="result cache: the oldest results are dropped beyond this total (0: off)"
    )
    job_deadline_s: float = Field(600.0, gt=0, description="default and maximum job deadline")
    max_wait_s: float = Field(60.0, ge=0, description="cap on a request's `wait`")
    lease_s: float = Field(30.0, gt=0, description="a job whose worker stops renewing is reclaimed after this")
    heartbeat_s: float = Field(5.0, gt=0, description="worker registry refresh and lease renewal period")
    max_deliveries: int = Field(3, ge=1, description="deliveries before a job goes to the dead-letter stream")
    drain_s: float = Field(30.0, ge=0, description="on SIGTERM, time to finish the current job")
    batch_jobs: int = Field(
        8,
        ge=1,
        le=256,
        description="jobs a worker takes in one read and runs together: their masked forwards and "
        "Hessian-vector chunks share batches within the memory budget, each job keeping its own lease, progress, "
        "cancellation and deadline (1: one job at a time)",
    )
    cuda_graphs: bool = Field(
        False,
        description="workers run HETA's Hessian stage with cuda_graphs: chunks at bucketed shapes, each replayed "
        "from a captured CUDA graph on a GPU (one launch instead of thousands of kernels, for some padding); "
        "on a CPU worker the padded chunks run eagerly, only slower. /models counts the graphs",
    )
    batch_packing: Literal["pad", "length"] = Field(
        "pad",
        description="how jobs of different prompt lengths share a batch: "
        "padded and masked, or only with their own length",
    )

    @property
    def has_store(self) -> bool:
        """A Redis is configured (a URL or sentinels); otherwise only `heta serve` can run (it embeds one)."""
        return bool(self.redis_url or self.redis_sentinels)

    @model_validator(mode="after")
    def _one_store(self):
        if self.redis_sentinels and (self.redis_url or self.redis_cluster):
            raise ValueError(
                "HETA_REDIS_SENTINELS replaces REDIS_URL and HETA_REDIS_CLUSTER: set one way to reach Redis"
            )
        if self.redis_cluster and not self.redis_url:
            raise ValueError("HETA_REDIS_CLUSTER needs REDIS_URL naming one node of the cluster")
        for entry in self.redis_sentinels:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"HETA_REDIS_SENTINELS: {entry!r} is not host:port")
        return self

    @property
    def redis_tls(self) -> bool:
        """Connections to Redis (and the sentinels) use TLS."""
        if self.redis_url:
            return urlsplit(self.redis_url).scheme == "rediss"
        return bool(self.redis_sentinels and (self.redis_tls_ca or self.redis_tls_cert))

    @field_validator("redis_tls_ca", "redis_tls_cert", "redis_tls_key")
    @classmethod
    def _readable_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{value}: no such file")
        return value

    @model_validator(mode="after")
    def _tls_consistent(self):
        if self.redis_tls_key and not self.redis_tls_cert:
            raise ValueError(
                "HETA_REDIS_TLS_KEY is set without HETA_REDIS_TLS_CERT (the client certificate it belongs to)"
            )
        if self.redis_tls_cert and not self.redis_tls_key:
            raise ValueError("HETA_REDIS_TLS_CERT is set without HETA_REDIS_TLS_KEY (its private key)")
        tls_files = self.redis_tls_ca or self.redis_tls_cert
        if tls_files and not self.has_store:
            raise ValueError(
                "HETA_REDIS_TLS_* is set without REDIS_URL=rediss://… or "
                "HETA_REDIS_SENTINELS (the embedded Redis is a local unix socket)"
            )
        if tls_files and self.redis_url and not self.redis_tls:
            raise ValueError(
                f"REDIS_URL is {urlsplit(self.redis_url).scheme}:// (plaintext) while HETA_REDIS_TLS_* is set: use rediss://"
            )
        if self.redis_url:
            for name, values in parse_qs(urlsplit(self.redis_url).query).items():
                if name in ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile") and not Path(values[-1]).is_file():
                    raise ValueError(f"REDIS_URL: {name}={values[-1]}: no such file")
        return self

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self):
        # the heartbeat renews a running job's lease; a lease shorter than a few heartbeats expires
        # on healthy workers and their jobs run twice
        if self.lease_s < LEASE_HEARTBEATS * self.heartbeat_s:
            raise ValueError(
                f"HETA_LEASE_S ({self.lease_s:g}) must be at least "
                f"{LEASE_HEARTBEATS} × HETA_HEARTBEAT_S ({self.heartbeat_s:g})"
            )
        return self

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # a browser sends Origin as scheme://host[:port]: anything else (a path, a trailing slash) never matches
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
                raise ValueError(f"{origin!r} is not an origin like https://dashboards.example.com (or *)")
        return value

    @model_validator(mode="after")
    def _placement(self):
        # checked at start: a worker would otherwise fail at load, restart, and fail again
        from heta_core import HetaError, check_placement, check_quantize, parse_device_map

        try:
            parsed = parse_device_map(self.device_map, check_devices=False)  # the API never loads it: the form only
            check_placement(
                parsed,
                str(self.offload_folder) if self.offload_folder else None,
                self.device if parsed is not None else None,
            )
        except HetaError as error:
            raise ValueError(f"HETA_DEVICE_MAP: {error}") from None
        try:
            check_quantize(self.quantize)
        except HetaError as error:
            raise ValueError(f"HETA_QUANTIZE: {error}") from None
        if self.quantize and self.dtype == "float64":
            raise ValueError(
                "HETA_QUANTIZE=int8 needs HETA_DTYPE float32, bfloat16 or float16 (torchao's int8 kernels)"
            )
        if self.gpus_per_worker > 1 and parsed is None:
            raise ValueError(
                "HETA_GPUS_PER_WORKER > 1 needs HETA_DEVICE_MAP (e.g. "
                "auto): a worker's model spreads over its GPUs by it"
            )
        if self.gpus_per_worker > 1 and self.workers_per_gpu > 1:
            raise ValueError("HETA_GPUS_PER_WORKER and HETA_WORKERS_PER_GPU cannot both exceed 1")
        return self

    @field_validator("default_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        from heta_core import HetaConfig

        return HetaConfig(method=value).method  # raises a ConfigError (a ValueError) listing the methods

    @field_validator("models", "api_keys", "redis_sentinels", "cors_origins", mode="before")
    @classmethod
    def _comma_list(cls, value):
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value


@lru_cache
def get_settings() -> Settings:
    return Settings()
