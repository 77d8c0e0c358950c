"""Request bodies of the HTTP API and their mapping onto ``heta_core.Attributor`` calls."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from heta_core import HetaConfig

Granularity = Literal["token", "word", "sentence"]


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: str = Field(description="system, user, assistant or tool")
    content: str


class AttributionConfig(BaseModel):
    """The request-settable subset of ``heta_core.HetaConfig`` (defaults: the engine's)."""

    model_config = ConfigDict(extra="forbid")
    method: str | None = Field(
        None, description="heta | gradient | input_x_gradient | integrated_gradients | attention_rollout | occlusion "
        "(short: ig, ixg, rollout, loo; default: the service's HETA_DEFAULT_METHOD)"
    )
    ig_steps: int | None = Field(None, ge=1, le=1024, description="integrated_gradients quadrature points")
    samples: int | None = Field(None, ge=1, description="Rademacher probes per token (m)")
    beta: float | None = Field(None, ge=0)
    gamma: float | None = Field(None, ge=0)
    mask: str | None = Field(None, description="zero | mean | token:<id>")
    flow: Literal["heta", "official"] | None = None
    normalize: Literal["none", "simplex"] | None = None
    seed: int | None = Field(None, ge=0)
    granularity: Granularity | list[Granularity] | None = None
    curvature: Literal["exact", "ggn"] | None = None
    curvature_layers: int | None = Field(None, ge=1)
    low_rank: int | None = Field(None, ge=1)
    window: int | None = Field(None, ge=2)
    overlap: float | None = Field(None, ge=0, lt=1)

    def heta_config(self) -> HetaConfig:
        """A validated HetaConfig (raises heta_core.ConfigError naming the field)."""
        values = self.model_dump(exclude_none=True, exclude={"granularity"})
        if "samples" in values:
            values["num_hvp_samples"] = values.pop("samples")
        return HetaConfig.from_dict(values)


class AttributeRequest(BaseModel):
    """Exactly one of ``text``, ``input_ids``, ``messages``; at most one target form."""

    # the OpenAPI page's examples run as-is against the default model (heta-demo)
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"},
                {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3", "config": {"method": "integrated_gradients"}},
            ]
        },
    )
    model: str | None = Field(None, description="a served model (default: the first one)")
    text: str | None = None
    input_ids: list[int] | None = None
    messages: list[Message] | None = None
    target_position: int | None = None
    target_text: str | None = None
    target_mode: Literal["sum", "each"] = "sum"
    generate: int | None = Field(None, ge=1)
    spans: list[tuple[int, int]] | None = None
    include_template: bool = False
    config: AttributionConfig = Field(default_factory=AttributionConfig)
    wait: float = Field(10.0, ge=0, description="seconds to wait for the result before answering 202")
    deadline_s: float | None = Field(None, gt=0, description="fail the job if not finished this long after submission")

    @model_validator(mode="after")
    def _one_input(self):
        given = [name for name in ("text", "input_ids", "messages") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("exactly one of text, input_ids, messages is required")
        return self

    def call(self) -> tuple[dict[str, Any], HetaConfig]:
        """Keyword arguments for ``Attributor.attribute`` and the HetaConfig."""
        kwargs: dict[str, Any] = {
            "text": self.text,
            "input_ids": self.input_ids,
            "messages": [m.model_dump() for m in self.messages] if self.messages is not None else None,
            "target_position": self.target_position,
            "target_text": self.target_text,
            "target_mode": self.target_mode,
            "generate": self.generate,
        }
        return kwargs, self.config.heta_config()

    def attribute_kwargs(self) -> tuple[dict[str, Any], HetaConfig]:
        kwargs, config = self.call()
        kwargs.update(granularity=self.config.granularity, spans=self.spans, include_template=self.include_template)
        return kwargs, config


def result_json(result, job_id: str) -> dict[str, Any]:
    """The service's result document (README "Result JSON")."""
    body = result.to_dict()
    tokens = []
    for token in body["tokens"]:
        row = {"index": token.pop("position"), **token}
        for optional in ("role", "message"):
            if row.get(optional) is None:
                row.pop(optional, None)
        tokens.append(row)
    meta = dict(body["meta"])
    meta["timings"] = body["timings"]
    return {
        "job_id": job_id,
        "tokens": tokens,
        "target": body["target"],
        "targets": body["targets"],
        "target_mode": body["target_mode"],
        "text": body["text"],
        "aggregates": body["aggregates"],
        "meta": meta,
    }
