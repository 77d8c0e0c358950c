"""``AttributionResult``: the scores, their three components, and what produced them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


@dataclass(frozen=True)
class TokenInfo:
    """One context token. ``start``/``end`` are character offsets into the input text (when known)."""

    position: int
    id: int
    text: str | None = None
    start: int | None = None
    end: int | None = None


@dataclass(frozen=True)
class TargetInfo:
    """The explained token x_t: its position, id, text and log-probability under the model."""

    position: int
    id: int
    text: str | None
    logprob: float


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class AttributionResult:
    """Scores over the context positions 0..t-1, as 1-D float32 CPU tensors.

    ``scores[i] = flow[i] · (β·hessian[i] + γ·kl[i])`` (after the configured normalisation).
    """

    scores: torch.Tensor
    flow: torch.Tensor
    hessian: torch.Tensor
    kl: torch.Tensor
    tokens: list[TokenInfo]
    target: TargetInfo
    timings: dict[str, float] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def topk(self, k: int) -> list[dict[str, Any]]:
        """The k highest-scoring context tokens, best first (ties: earlier position first)."""
        if k < 0:
            raise ValueError(f"k must be >= 0, got {k}")
        order = sorted(range(len(self.tokens)), key=lambda i: (-float(self.scores[i]), i))[:k]
        return [self._row(i) for i in order]

    def _row(self, i: int) -> dict[str, Any]:
        row = asdict(self.tokens[i])
        for name in ("scores", "flow", "hessian", "kl"):
            row["score" if name == "scores" else name] = _json_number(float(getattr(self, name)[i]))
        return row

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict (non-finite numbers become null)."""
        target = asdict(self.target)
        target["logprob"] = _json_number(target["logprob"])
        return {
            "tokens": [self._row(i) for i in range(len(self.tokens))],
            "target": target,
            "timings": dict(self.timings),
            "meta": self.meta,
        }
