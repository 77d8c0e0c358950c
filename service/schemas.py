"""The HTTP API's bodies: requests and their mapping onto ``heta_core.Attributor`` calls, and the
responses (the result is the engine's own document plus ``job_id``). Errors: :mod:`.problems`."""

from __future__ import annotations

import json
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from heta_core import AttributionRequest, AttributionResult, HetaConfig, from_api_names

from .store import STATUSES

Granularity = Literal["token", "word", "sentence"]


class AttributionConfig(BaseModel):
    """The request-settable subset of ``heta_core.HetaConfig`` (defaults: the engine's)."""

    # NaN and ±inf are refused (JSON parsers accept NaN/Infinity literals); bounds keep every
    # number in a range the engine runs, so nothing admitted fails later for its size
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    method: str | None = Field(
        None,
        description="heta | gradient | input_x_gradient | integrated_gradients | attention_rollout | occlusion "
        "(short: ig, ixg, rollout, loo; default: the service's HETA_DEFAULT_METHOD)",
    )
    ig_steps: int | None = Field(None, ge=1, le=1024, description="integrated_gradients quadrature points")
    samples: int | None = Field(
        None, ge=1, le=100_000, description="Rademacher probes per token (m; the service caps it at HETA_MAX_SAMPLES)"
    )
    beta: float | None = Field(None, ge=0, le=1e6, description="weight of S in Eq. 5")
    gamma: float | None = Field(None, ge=0, le=1e6, description="weight of I in Eq. 5")
    mask: str | None = Field(None, description="zero | mean | token:<id>")
    flow: Literal["heta", "official"] | None = None
    normalize: Literal["none", "simplex"] | None = None
    seed: int | None = Field(None, ge=0, le=2**63 - 1, description="seeds the Rademacher probes")
    granularity: Granularity | list[Granularity] | None = None
    curvature: Literal["exact", "ggn"] | None = None
    curvature_layers: int | None = Field(None, ge=1, le=10_000)
    low_rank: int | None = Field(None, ge=1, le=100_000)
    window: int | None = Field(None, ge=2, le=1_000_000)
    overlap: float | None = Field(None, ge=0, lt=1)
    diagnostics: bool | None = Field(
        None,
        description="also measure the attribution's faithfulness: p(target) with the top-k tokens removed / only kept "
        "(k = 1, 3, 5, 10 %) in the result's `diagnostics`; costs a few full-length forwards",
    )
    preset: Literal["exact", "balanced", "fast"] | None = Field(
        None,
        description="HETA's cost bundle (default exact; docs/benchmarks.md's presets table gives what each costs and "
        "loses): `fast` = flow and KL impact only (β = 0), `balanced` = m = 2 Hessian samples; fields set explicitly "
        "here override the preset's",
    )
    budget_s: float | None = Field(
        None,
        gt=0,
        le=86_400,
        description="HETA: a time budget in seconds. The most exact preset whose estimated time fits is run (recorded "
        "in `meta.plan`); a run still going when it runs out ends with the stages it has (`partial: true`); 422 "
        "`cost_over_ceiling` with the cheapest plan's estimate when not even the flow fits",
    )

    def heta_config(self) -> HetaConfig:
        """A validated HetaConfig (raises heta_core.ConfigError naming the field)."""
        return HetaConfig.from_dict(from_api_names(self.model_dump(exclude_none=True, exclude={"granularity"})))


class PromptRequest(AttributionRequest):
    """One prompt (the engine's :class:`~heta_core.AttributionRequest`) and its ``config``."""

    # the OpenAPI page's examples run as-is against the default model (heta-demo)
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"},
                {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3", "config": {"method": "integrated_gradients"}},
            ],
            # exactly one input: the one given non-null (the others absent or null)
            "oneOf": [
                {"required": [name], "properties": {name: {"type": kind}}}
                for name, kind in (("text", "string"), ("input_ids", "array"), ("messages", "array"))
            ],
        },
    )
    config: AttributionConfig = Field(default_factory=AttributionConfig)

    @model_validator(mode="after")
    def _one_input(self):
        given = [name for name in ("text", "input_ids", "messages") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of text, input_ids, messages is required")
        return self

    def engine_call(self) -> tuple[dict[str, Any], HetaConfig]:
        """Keyword arguments for ``Attributor.attribute`` / ``estimate`` and the HetaConfig."""
        return {**self.engine_arguments(), "granularity": self.config.granularity}, self.config.heta_config()


MODEL = Field(None, min_length=1, description="a served model (default: the first one)")
WAIT = Field(
    10.0, ge=0, le=86_400, description="seconds to wait for the result before answering 202 (capped by HETA_MAX_WAIT_S)"
)
DEADLINE = Field(
    None,
    gt=0,
    le=86_400 * 365,
    description="fail the job if not finished this long after submission (capped by HETA_JOB_DEADLINE_S)",
)


class AttributeRequest(PromptRequest):
    """POST /attribute and POST /jobs: one prompt, its model and how long to wait."""

    model: str | None = MODEL
    wait: float = WAIT
    deadline_s: float | None = DEADLINE


class BatchItem(PromptRequest):
    """One prompt of a batch; its ``config`` fields override the batch's ``config``."""

    id: str | int | None = Field(None, description="echoed in this item's entry of the result (default: its index)")


class BatchRequest(BaseModel):
    """POST /attribute/batch: many prompts, one job; admitted whole (every item checked first)."""

    model_config = ConfigDict(
        extra="forbid",
        allow_inf_nan=False,
        json_schema_extra={
            "examples": [
                {
                    "items": [
                        {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"},
                        {"text": "a=2 d=5 ? d", "target_text": " 5", "id": "second"},
                    ],
                    "config": {"samples": 4},
                },
            ]
        },
    )
    model: str | None = MODEL
    items: list[BatchItem] = Field(min_length=1, description="the prompts (at most HETA_MAX_BATCH_ITEMS)")
    config: AttributionConfig = Field(
        default_factory=AttributionConfig, description="every item's config unless the item sets a field"
    )
    wait: float = WAIT
    deadline_s: float | None = DEADLINE

    def prompts(self) -> list[BatchItem]:
        """The items with the batch's config under their own (what runs)."""
        shared = self.config.model_dump(exclude_none=True)
        return [
            item.model_copy(
                update={"config": AttributionConfig(**{**shared, **item.config.model_dump(exclude_none=True)})}
            )
            for item in self.items
        ]


# ---------------------------------------------------------------------- responses


class JobResult(AttributionResult):
    """The engine's result document (``heta_core.AttributionResult``) plus the job's id; the
    service also fills ``meta.timings.queue_s`` and ``total_s``."""

    job_id: str = Field(description="the job that produced this result (GET /jobs/{job_id})")


def job_result_json(result: AttributionResult, job_id: str, created: float, started: float) -> str:
    """The stored and served document: the engine's JSON, the job id and the service's timings."""
    timings = result.meta.timings.model_copy(
        update={"queue_s": max(0.0, started - created), "total_s": max(0.0, time.time() - created)}
    )
    served = result.model_copy(update={"meta": result.meta.model_copy(update={"timings": timings})})
    # pydantic's serializer writes the document in a fifth of json.dumps(to_dict())'s time; job_id goes first
    return f'{{"job_id":{json.dumps(job_id)},{served.model_dump_json()[1:]}'


JobStatus = Literal[STATUSES]  # type: ignore[valid-type]


class JobAccepted(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"job_id": "3f2a9c0d4b8e4f5aa1c2d3e4f5a6b7c8", "status": "queued"}]}
    )
    job_id: str = Field(description="poll GET /jobs/{job_id} (also in the Location header)")
    status: JobStatus


class JobError(BaseModel):
    code: str = Field(description="stable code, as in problem details")
    detail: str


class BatchEntry(BaseModel):
    """One item of a batch: its result, or why it failed (the other items are unaffected)."""

    model_config = ConfigDict(extra="forbid")
    index: int = Field(ge=0, description="position in the request's `items`")
    id: str | int | None = Field(description="the item's `id` as sent")
    result: AttributionResult | None = Field(None, description="the engine's result document, when this item succeeded")
    error: JobError | None = Field(None, description="when this item failed")


class BatchTimings(BaseModel):
    queue_s: float = Field(ge=0)
    compute_s: float = Field(ge=0, description="sum of the items' compute")
    total_s: float = Field(ge=0, description="from submission to the last item")


class BatchResult(BaseModel):
    """The result of POST /attribute/batch: one entry per item, in order."""

    model_config = ConfigDict(extra="forbid")
    job_id: str
    model: str
    items: list[BatchEntry]
    succeeded: int = Field(ge=0)
    failed: int = Field(ge=0)
    timings: BatchTimings


def batch_result_json(
    job_id: str, model: str, entries: list[dict], compute_s: float, created: float, started: float
) -> str:
    """The stored and served batch document (``entries``: BatchEntry dicts)."""
    failed = sum(1 for entry in entries if entry.get("error"))
    timings = {
        "queue_s": max(0.0, started - created),
        "compute_s": compute_s,
        "total_s": max(0.0, time.time() - created),
    }
    return json.dumps(
        {
            "job_id": job_id,
            "model": model,
            "items": entries,
            "succeeded": len(entries) - failed,
            "failed": failed,
            "timings": timings,
        }
    )


class JobView(BaseModel):
    """A job as GET /jobs/{id} shows it; times are Unix seconds."""

    job_id: str
    status: JobStatus = Field(description="`cancelling`: cancel requested, the run stops at its next chunk")
    model: str
    progress: float = Field(ge=0, le=1, description="fraction of the planned chunks done")
    attempts: int = Field(ge=0, description="runs started (a reclaimed job runs again)")
    created: float
    started: float | None
    finished: float | None
    deadline: float
    worker: str | None = Field(description="host-pid-suffix of the worker that ran it last")
    request_id: str | None = Field(None, description="the `X-Request-ID` of the request that submitted it")
    result: JobResult | BatchResult | None = Field(
        None, description="when done (a BatchResult for POST /attribute/batch)"
    )
    error: JobError | None = Field(None, description="when failed, cancelled by a deadline or dead-lettered")
    partial: JobResult | None = Field(
        None,
        description="a HETA job's latest partial result (`partial: true`, `stages_done`) while it runs — the flow "
        "first, then flow and KL impact; kept when it fails or is cancelled, dropped once the result is there",
    )


class ModelPlacement(BaseModel):
    dtype: str = Field(description="the weights' dtype (the activations' too)")
    quantization: Literal["int8"] | None = Field(
        description="weight-only quantization of the linear layers (torchao), or null"
    )
    device_map: dict[str, int] = Field(
        description="a model split by a device map: modules per device (`disk`: offloaded); empty: on one device"
    )
    requested_device_map: str | None = Field(description="HETA_DEVICE_MAP as configured (null: HETA_DEVICE places it)")
    gpus_per_worker: int = Field(ge=1, description="GPUs each worker of a GPU host holds for it (HETA_GPUS_PER_WORKER)")
    loaded: bool = Field(description="true: reported by a live worker that loaded it; false: from the settings alone")


class GraphCounts(BaseModel):
    captured: int = Field(ge=0, description="chunk shapes captured as CUDA graphs")
    replayed: int = Field(ge=0, description="chunks run by replaying a graph")
    eager: int = Field(ge=0, description="chunks run eagerly: a shape's warm-up, a CPU worker, a failed capture")
    failed: int = Field(ge=0, description="captures that failed (those shapes run eagerly)")


class ServedModel(BaseModel):
    name: str
    model_type: str
    dtype: str
    devices: list[str] = Field(description="devices of the live workers serving it")
    workers: int = Field(ge=0, description="live workers serving it")
    max_tokens: int = Field(description="prompt + target tokens a request may have")
    placement: ModelPlacement = Field(description="how it is placed: dtype, quantization, device map")
    cuda_graphs: GraphCounts | None = Field(
        None, description="HETA_CUDA_GRAPHS: its live workers' CUDA-graph counts, summed; null when off"
    )


class MethodDetails(BaseModel):
    signed: bool = Field(description="scores can be negative (against the target): drawn on a diverging scale")
    summary: str = Field(description="what the method computes, in a sentence")


class ModelsResponse(BaseModel):
    models: list[ServedModel]
    default: str | None = Field(description="the model a request without `model` gets")
    methods: list[str] = Field(description="attribution methods a request may name in config.method")
    method_details: dict[str, MethodDetails] = Field(
        default_factory=dict,
        description="each method's scale and summary, as <heta-attribution> draws it (docs/dashboards.md)",
    )
    default_method: str


class Health(BaseModel):
    status: Literal["ok"]


class Readiness(BaseModel):
    ready: bool
    redis: bool = Field(description="Redis answers and takes writes (false when down or at maxmemory)")
    workers: int | None = None
    models_without_workers: list[str] | None = None
