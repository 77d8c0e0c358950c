"""Plausibility metrics: attribution scores against known positions (no model needed).

Notation: a ∈ ℝⁿ the scores over prompt positions, ``candidates`` the positions that are ranked
(default: all), G the gold (known causal / important) positions. Ranking is by score, ties broken by
the earlier position, so every metric is deterministic.

    hit@k   k = 1: 1 if the top-ranked candidate is in G, else 0.
            k > 1: |top_k ∩ G| / min(k, |G|) — the share of the gold positions that fit in k slots.
    f1      F1 of top_|G| against G (precision = recall = F1 when both sets have |G| elements;
            fewer candidates than |G| lowers recall only).
    dsa     w = |a| / Σ|a| over all prompt positions; DSA = Σ_{i∈support} w_i − Σ_{i∈distractor} w_i
            ∈ [−1, 1] (HETA.md: mass on the answer-bearing segment minus mass on the distractor).
    aopc    mean of a perturbation curve (see :mod:`heta_core.faithfulness`).

Model-based faithfulness metrics (Soft-NC/NS, comprehensiveness, sufficiency, deletion/insertion)
live in :mod:`heta_core.faithfulness`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def ranking(scores: torch.Tensor, candidates: Sequence[int] | None = None) -> list[int]:
    """Candidate positions, best first (ties: earlier position first)."""
    positions = range(len(scores)) if candidates is None else candidates
    values = scores.tolist()
    return sorted(positions, key=lambda i: (-values[i], i))


def hit_at_k(scores: torch.Tensor, gold: Sequence[int], k: int, candidates: Sequence[int] | None = None) -> float:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if not gold:
        raise ValueError("hit@k needs at least one gold position")
    top = ranking(scores, candidates)[:k]
    return len(set(top) & set(gold)) / min(k, len(gold))


def f1(scores: torch.Tensor, gold: Sequence[int], candidates: Sequence[int] | None = None) -> float:
    if not gold:
        raise ValueError("f1 needs at least one gold position")
    predicted = set(ranking(scores, candidates)[: len(gold)])
    overlap = len(predicted & set(gold))
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(set(gold))
    return 2 * precision * recall / (precision + recall)


def dsa(scores: torch.Tensor, support: Sequence[int], distractor: Sequence[int]) -> float:
    weights = scores.double().abs()
    total = float(weights.sum())
    if total == 0.0:
        return 0.0
    weights = weights / total
    return float(weights[list(support)].sum()) - float(weights[list(distractor)].sum())


def aopc(curve: Sequence[float]) -> float:
    """Area over (or under) a perturbation curve: the mean of its points."""
    if len(curve) == 0:
        raise ValueError("aopc needs a non-empty curve")
    return float(sum(curve)) / len(curve)
