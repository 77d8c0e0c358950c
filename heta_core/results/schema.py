"""The one result document: what ``Attributor.attribute`` returns, what ``to_dict()`` and the CLI's
``--format json`` print, and what the HTTP service answers (plus ``job_id``). Field-by-field
documentation lives in the ``description`` of each field (the OpenAPI schema carries it) and in
docs/result.md.

Every number is finite or ``null``: a non-finite value (an overflow, log 0) becomes ``null`` so
the JSON stays strict.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from ..methods.registry import METHODS

SCHEMA_VERSION = "1.1"
SCHEMA_VERSIONS = (
    "1.1",
    "1.0",
)  # 1.1 added `partial`, `stages_done` and `meta.plan`: a 1.0 document reads as a final one

TargetMode = Literal["sum", "each"]
MethodName = Literal[METHODS]  # type: ignore[valid-type]
AggregateKind = Literal["word", "sentence", "span", "message"]
# one value per token: a number for a single target or a "sum" span, a list (one per target) for "each"
Value = float | list[float | None] | None


_SCORE = (
    "The attribution of the target to this unit: higher = more responsible. HETA: M_T·(β·S + γ·I), "
    "≥ 0. Baselines: the method's own score (input_x_gradient, integrated_gradients and occlusion are "
    "signed). A number for one target or a `sum` span; a list with one entry per target token in `each` "
    "mode. Scores rank tokens within one result; their scale depends on the model, the prompt and the "
    "method, so compare scores across requests only for the same model, method and config."
)
_FLOW = (
    "HETA's M_T[i]: share of the target-conditioned attention–value flow from this token (sums to 1 over the "
    "prompt). Null for baselines."
)
_HESSIAN = (
    "HETA's S_i: mean ℓ1 norm of the diagonal Hessian block times a Rademacher probe (log-probability curvature; of "
    "log p(target) − log p(foil) with a foil; ≥ 0). Null for baselines."
)
_KL = (
    "HETA's I_i: KL divergence (nats) of the next-token distribution when this token is masked (≥ 0; summed over a "
    "`sum` span); with a foil, |change of log p(target) − log p(foil)| in nats instead. Null for baselines."
)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TokenInfo(_Model):
    """One prompt token with its scores."""

    position: int = Field(ge=0, description="0-based position in the token sequence; prompt tokens are 0..n-1")
    id: int = Field(ge=0, description="token id in the model's vocabulary")
    text: str | None = Field(description="the token's text (its slice of `text` when offsets are known, else decoded)")
    start: int | None = Field(
        None, ge=0, description="character offset of the token's first character in the result's `text`"
    )
    end: int | None = Field(None, ge=0, description="character offset one past the token's last character (exclusive)")
    role: str | None = Field(None, description="chat input: the role of the message the token belongs to; else null")
    message: int | None = Field(
        None, ge=0, description="chat input: index of the message the token belongs to; else null"
    )
    template: bool = Field(
        False,
        description="chat-template scaffolding (outside every message's content); left out of aggregates by default",
    )
    special: bool = Field(
        False, description="a special token of the tokenizer (BOS, EOS, ...); left out of aggregates by default"
    )
    score: Value = Field(None, description=_SCORE)
    flow: Value = Field(None, description=_FLOW)
    hessian: Value = Field(None, description=_HESSIAN)
    kl: Value = Field(None, description=_KL)


class FoilInfo(_Model):
    """The token a contrastive request compares the target with ("why the target rather than the foil?")."""

    id: int = Field(ge=0, description="token id of the foil")
    text: str | None = Field(description="the foil token's text (decoded)")
    logprob: float | None = Field(
        description="natural-log probability of the foil at the target's position, given the prompt (≤ 0)"
    )


class TargetInfo(_Model):
    """An explained token."""

    position: int = Field(ge=1, description="position of the target token in the token sequence (after the prompt)")
    id: int = Field(ge=0, description="token id")
    text: str | None = Field(description="the token's text")
    logprob: float | None = Field(
        description="natural-log probability of this token under the model, given everything before it (≤ 0)"
    )
    start: int | None = Field(None, ge=0, description="character offset in the result's `text` (null for ids input)")
    end: int | None = Field(None, ge=0, description="exclusive end offset in the result's `text`")
    foil: FoilInfo | None = Field(
        None,
        description="contrastive requests (foil_text / foil_id): the token this target is contrasted with; the scores "
        "explain log p(target) − log p(foil). Null otherwise",
    )


class Segment(_Model):
    """A word, sentence, caller span or chat message: the sums of its member tokens' values."""

    index: int = Field(
        ge=0, description="index of the unit (the span's index in the request's `spans`, the message's in `messages`)"
    )
    text: str | None = Field(None, description="the unit's text (null for messages)")
    start: int | None = Field(None, ge=0, description="character offset of the unit in the result's `text`")
    end: int | None = Field(None, ge=0, description="exclusive end offset")
    role: str | None = Field(None, description="messages only: the message's role")
    tokens: list[int] = Field(
        description="positions of the member tokens (template and special tokens excluded unless include_template)"
    )
    score: Value = Field(None, description="sum of the member tokens' scores (a list per target in `each` mode)")
    flow: Value = Field(None, description="sum of the member tokens' M_T (HETA only)")
    hessian: Value = Field(None, description="sum of the member tokens' S (HETA only)")
    kl: Value = Field(None, description="sum of the member tokens' I (HETA only)")


class ResultWarning(_Model):
    """Something the caller should know about the result; it was computed anyway."""

    code: Literal["unknown_tokens", "unlikely_response"] = Field(
        description="stable code: `unknown_tokens` = words the tokenizer mapped to its unknown token; "
        "`unlikely_response` = response_ids tokens the model finds very unlikely (probability < 1e-4): probably "
        "produced by a different model or tokenizer"
    )
    message: str = Field(description="human-readable explanation")
    count: int = Field(ge=1, description="how many tokens are affected")
    words: list[str] = Field(
        description="the affected words (unknown_tokens, each once) or token texts (unlikely_response), in order"
    )
    positions: list[int] = Field(
        default_factory=list,
        description="unlikely_response: the affected target tokens' positions; empty for unknown_tokens",
    )


class Timings(_Model):
    """Wall-clock seconds. Stage fields are null when the method has no such stage."""

    flow_s: float | None = Field(None, ge=0, description="HETA: trace forward and M_T")
    kl_s: float | None = Field(None, ge=0, description="HETA: the masked forwards of I")
    hessian_s: float | None = Field(None, ge=0, description="HETA: the Hessian-vector products of S")
    baseline_s: float | None = Field(None, ge=0, description="baselines: the method's whole computation")
    diagnostics_s: float | None = Field(
        None, ge=0, description="the faithfulness diagnostics' masked forwards (null unless config.diagnostics)"
    )
    compute_s: float = Field(ge=0, description="the engine's whole call (generation and assembly included)")
    queue_s: float | None = Field(
        None, ge=0, description="service only: submission to the start of the run that produced the result"
    )
    total_s: float | None = Field(None, ge=0, description="service only: submission to the stored result")

    def stages(self) -> dict[str, float]:
        """The method's stages that ran, and ``total`` (the engine call), in seconds."""
        ran = {name: getattr(self, f"{name}_s") for name in ("flow", "kl", "hessian", "baseline")}
        return {**{name: value for name, value in ran.items() if value is not None}, "total": self.compute_s}


class FaithfulnessPoint(_Model):
    """The target's probability with the top-k tokens removed and with only them kept."""

    k: int = Field(
        ge=1, description="how many top-ranked prompt tokens were removed or kept (at most the prompt's length)"
    )
    fraction: float | None = Field(
        description='0.1 for the "top 10 %" point (k = ⌈0.1·n⌉); null for the fixed counts 1, 3 and 5'
    )
    tokens: list[int] = Field(description="positions of the top-k tokens, best first (by score; ties: earlier first)")
    removed: float | None = Field(description="p of the target with these tokens removed (replaced by the mask vector)")
    kept: float | None = Field(
        description="p of the target with only these tokens kept (every other prompt token removed)"
    )
    comprehensiveness: float | None = Field(
        description="p − removed: how much of the prediction the top-k tokens carry (higher = more faithful)"
    )
    sufficiency: float | None = Field(
        description="p − kept: what the top-k tokens alone fail to recover (lower = more faithful)"
    )


class DiagnosticRow(_Model):
    """Faithfulness of one attribution row: the whole span in `sum` mode, one target token in `each` mode."""

    targets: list[int] = Field(description="indices into `targets` of the tokens whose probability p is")
    probability: float | None = Field(
        description="p with the whole prompt: P(y | prompt); for a `sum` span the product of its tokens' "
        "probabilities (the span's total log-probability, exponentiated)"
    )
    points: list[FaithfulnessPoint] = Field(
        description="k = 1, 3, 5 tokens and the top 10 % of the prompt, in that order"
    )


class Diagnostics(_Model):
    """How faithful this very attribution is (ERASER's comprehensiveness and sufficiency at top-k)."""

    mask: str = Field(
        description="how a token was removed: its input embedding replaced by this mask vector (config.mask)"
    )
    rows: list[DiagnosticRow] = Field(description="one per attribution row: one for `sum`, one per target for `each`")


class Versions(_Model):
    heta: str | None = Field(description="version of the heta package")
    torch: str
    transformers: str | None
    python: str


class BudgetPlan(_Model):
    """How a time budget (``config.budget_s``) chose the run: the presets considered with their estimates."""

    budget_s: float = Field(gt=0, description="the request's time budget in seconds")
    preset: str = Field(
        description="the preset run: the most exact one whose estimate fits, never more exact than `config.preset`"
    )
    estimated_s: float = Field(ge=0, description="the chosen plan's estimated seconds")
    estimates: dict[str, float] = Field(
        description="estimated seconds of each preset considered, most "
        "exact first, and of `flow` (the first stage alone)"
    )
    speed: Literal["measured", "assumed"] = Field(
        description="the time model's rates: measured on this model and device, or assumed from the model's size"
    )
    stopped: Literal["budget"] | None = Field(
        None,
        description="`budget`: the run was still going when the budget ran out and ended with the stages it had "
        "(the result is partial); null when it finished",
    )


class ResultMeta(_Model):
    """What produced the result."""

    model: str = Field(description="the model as named in the request (HF id, local path or heta-demo)")
    revision: str | None = Field(
        description="the exact weights: the snapshot's commit hash for a Hugging Face model, `sha256:<hex>` of "
        "the safetensors files for a local directory, a fixed version for heta-demo; null for an in-memory model"
    )
    model_type: str = Field(description="the architecture family (transformers' model_type)")
    dtype: str = Field(description="dtype the model ran in")
    device: str = Field(description="device the model ran on")
    config: dict[str, Any] = Field(description="the HetaConfig fields this method's numbers depend on (engine names)")
    hvps: int | None = Field(description="Hessian-vector products computed (HETA); null for baselines")
    versions: Versions
    timings: Timings
    cached: bool = Field(
        False,
        description="true when the service answered from its result "
        "cache (no compute; `timings` are the original run's)",
    )
    plan: BudgetPlan | None = Field(
        None, description="with `config.budget_s`: how the budget chose the run; null without a budget"
    )


class AttributionResult(_Model):
    """Scores of every prompt token for the target (a next token, a given continuation or a generation).

    Python conveniences: ``scores``, ``flow``, ``hessian``, ``kl`` as float32 tensors ``[n]``
    (``[k, n]`` in "each" mode; the components are None for baselines), ``target``, ``timings``,
    ``topk(k)``, ``to_dict()``.
    """

    model_config = ConfigDict(extra="forbid", ignored_types=(cached_property,))

    schema_version: Literal[SCHEMA_VERSIONS] = Field(  # type: ignore[valid-type]
        SCHEMA_VERSION,
        description="version of this document's shape (1.1 added `partial`, `stages_done` and `meta.plan`)",
    )
    method: MethodName = Field(description="the attribution method")
    partial: bool = Field(
        False,
        description="true for a partial result: published while the method's later stages still run (HETA: after "
        "the flow, then after the KL impact), or the final result of a run whose time budget ran out first "
        "(`meta.plan.stopped`). Its "
        '`score` is estimated from the stages done (docs/engine.md "Partial results"); the missing terms are null',
    )
    stages_done: list[str] = Field(
        default_factory=list,
        description="the method's stages whose terms this document holds, in order: HETA `flow`, `kl`, "
        "`hessian`; baselines `baseline`; then `diagnostics` when they were measured",
    )
    target_mode: TargetMode = Field(
        description="`sum`: one attribution of the targets' total log-probability (values are numbers); "
        "`each`: one attribution per target token (values are lists, one entry per target)"
    )
    text: str | None = Field(
        description="the prompt followed by the target text; token offsets index into it (null for ids input)"
    )
    tokens: list[TokenInfo] = Field(description="the n prompt tokens, in order, with their scores")
    targets: list[TargetInfo] = Field(min_length=1, description="the explained tokens, in order")
    aggregates: dict[AggregateKind, list[Segment]] = Field(
        default_factory=dict,
        description="word / sentence (when requested), span (the request's spans) and message (chat input) sums",
    )
    warnings: list[ResultWarning] = Field(default_factory=list, description="conditions worth knowing; empty when none")
    diagnostics: Diagnostics | None = Field(
        None,
        description="config.diagnostics: how the target's probability drops when the top-k tokens are removed "
        "or kept (docs/result.md); null when not asked for",
    )
    meta: ResultMeta

    # ------------------------------------------------------------------ Python conveniences

    def _tensor(self, name: str) -> torch.Tensor | None:
        values = [getattr(token, name) for token in self.tokens]
        if name != "score" and self.tokens and all(v is None for v in values):
            return None  # a baseline has no HETA components
        rows = [
            [float("nan") if x is None else x for x in v] if isinstance(v, list) else (float("nan") if v is None else v)
            for v in values
        ]
        tensor = torch.tensor(rows, dtype=torch.float32)
        return tensor.T.contiguous() if self.target_mode == "each" else tensor

    @cached_property
    def scores(self) -> torch.Tensor:
        scores = self._tensor("score")
        return scores if scores is not None else torch.zeros(0)  # None only for a component, never for the score

    @cached_property
    def flow(self) -> torch.Tensor | None:
        return self._tensor("flow")

    @cached_property
    def hessian(self) -> torch.Tensor | None:
        return self._tensor("hessian")

    @cached_property
    def kl(self) -> torch.Tensor | None:
        return self._tensor("kl")

    @property
    def target(self) -> TargetInfo:
        """The (first) target token."""
        return self.targets[0]

    @property
    def timings(self) -> Timings:
        return self.meta.timings

    def topk(self, k: int, row: int | None = None) -> list[dict[str, Any]]:
        """The k highest-scoring prompt tokens as dicts (a token's fields), best first (ties: earlier first).

        In "each" mode pass ``row`` (a target index); otherwise scores summed over target rows rank.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        scores = (
            self.scores if self.scores.dim() == 1 else (self.scores[row] if row is not None else self.scores.sum(0))
        )
        order = sorted(range(len(self.tokens)), key=lambda i: (-float(scores[i]), i))[:k]
        return [self.tokens[i].model_dump() for i in order]

    def to_dict(self) -> dict[str, Any]:
        """The JSON document (plain dicts, lists, numbers and strings)."""
        return self.model_dump(mode="json")


class Estimate(_Model):
    """Predicted work and memory of one request, before running it (``Attributor.estimate``)."""

    prompt_tokens: int = Field(ge=0, description="tokens scored")
    target_tokens: int = Field(ge=0, description="tokens explained")
    hvps: int = Field(ge=0, description="Hessian(-like)-vector products")
    forward_tokens: int = Field(ge=0, description="token positions pushed through the model, all passes")
    peak_bytes: int = Field(ge=0, description="weights + trace + the largest batched chunk")
    seconds: float | None = Field(
        None,
        ge=0,
        description="predicted seconds of the call (the time model, heta_core.runtime.cost: this model's measured "
        "speed when known, else one assumed from its size)",
    )
    plan: BudgetPlan | None = Field(
        None, description="with `config.budget_s`: the preset the budget chooses and the estimates"
    )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()
