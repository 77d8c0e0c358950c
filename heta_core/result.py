"""``AttributionResult``: the scores, their three components, and what produced them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TokenInfo:
    """One prompt token. ``start``/``end`` are character offsets into the result's ``text`` (when known).

    Chat input adds the token's ``message`` index and ``role``; ``template`` marks chat-template
    scaffolding, ``special`` the tokenizer's special tokens (both left out of aggregates by default).
    """

    position: int
    id: int
    text: str | None = None
    start: int | None = None
    end: int | None = None
    role: str | None = None
    message: int | None = None
    template: bool = False
    special: bool = False


@dataclass(frozen=True)
class TargetInfo:
    """An explained token: its position, id, text, log-probability under the model and character span."""

    position: int
    id: int
    text: str | None
    logprob: float
    start: int | None = None
    end: int | None = None


def _json(value):
    """Non-finite floats become None (strict JSON)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass
class AttributionResult:
    """Scores over the prompt positions 0..n-1 as float32 CPU tensors.

    ``[n]`` for a single target and for a span in "sum" mode; ``[k, n]`` (one row per target token)
    in "each" mode. For ``method="heta"``, ``scores = flow · (β·hessian + γ·kl)`` after the
    configured normalisation; a baseline method fills ``scores`` only (the components are None).
    """

    scores: torch.Tensor
    flow: torch.Tensor | None
    hessian: torch.Tensor | None
    kl: torch.Tensor | None
    tokens: list[TokenInfo]
    targets: list[TargetInfo]
    target_mode: str = "single"  # "single" | "sum" | "each"
    method: str = "heta"
    text: str | None = None
    aggregates: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> TargetInfo:
        """The (first) target token."""
        return self.targets[0]

    def topk(self, k: int, row: int | None = None) -> list[dict[str, Any]]:
        """The k highest-scoring prompt tokens, best first (ties: earlier position first).

        In "each" mode pass ``row`` (a target index); otherwise scores summed over target rows rank.
        """
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        scores = self.scores if self.scores.dim() == 1 else (self.scores[row] if row is not None else self.scores.sum(0))
        order = sorted(range(len(self.tokens)), key=lambda i: (-float(scores[i]), i))[:k]
        return [self._row(i) for i in order]

    def _row(self, i: int) -> dict[str, Any]:
        row = asdict(self.tokens[i])
        for name in ("scores", "flow", "hessian", "kl"):
            values = getattr(self, name)
            if values is None:
                row[name] = None
                continue
            column = values[..., i]
            row["score" if name == "scores" else name] = column.tolist() if column.dim() else float(column)
        return row

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become null). In "each" mode the per-token score and
        components are lists with one entry per target."""
        return _json(
            {
                "tokens": [self._row(i) for i in range(len(self.tokens))],
                "targets": [asdict(t) for t in self.targets],
                "target": asdict(self.target),
                "target_mode": self.target_mode,
                "method": self.method,
                "text": self.text,
                "aggregates": self.aggregates,
                "timings": dict(self.timings),
                "meta": self.meta,
            }
        )


@dataclass(frozen=True)
class Estimate:
    """Predicted work and memory of one request, before running it (``Attributor.estimate``)."""

    prompt_tokens: int
    target_tokens: int
    hvps: int  # Hessian(-like)-vector products
    forward_tokens: int  # token positions pushed through the model, all passes
    peak_bytes: int  # weights + trace + the largest batched chunk

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
