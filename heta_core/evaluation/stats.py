"""Rank agreement between two score vectors (used to compare approximations with the exact estimator)
and the Wilson interval of a hit rate (``heta eval --suite``)."""

from __future__ import annotations

import math

import torch


def ranks(values: torch.Tensor) -> torch.Tensor:
    """Average ranks (ties share their mean rank), 0-based."""
    values = values.double().flatten()
    order = values.argsort()
    ranked = torch.empty_like(values)
    ranked[order] = torch.arange(len(values), dtype=torch.float64)
    for value in values.unique():
        tied = values == value
        if int(tied.sum()) > 1:
            ranked[tied] = ranked[tied].mean()
    return ranked


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's ρ: the Pearson correlation of the ranks."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(ra.norm() * rb.norm())
    return float((ra * rb).sum()) / denominator if denominator > 0 else 1.0


def topk_overlap(a: torch.Tensor, b: torch.Tensor, k: int = 5) -> float:
    """|top-k(a) ∩ top-k(b)| / k."""
    k = min(k, a.numel())
    top_a = set(a.flatten().topk(k).indices.tolist())
    top_b = set(b.flatten().topk(k).indices.tolist())
    return len(top_a & top_b) / k


def wilson(successes: float, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a proportion (95% for the default z); (nan, nan) without trials.

    Unlike the normal approximation it stays inside [0, 1] and is not degenerate at 0/n or n/n,
    which is where a method that is always right or always wrong sits."""
    if trials == 0:
        return math.nan, math.nan
    p = successes / trials
    denominator = 1 + z * z / trials
    center = (p + z * z / (2 * trials)) / denominator
    half = z / denominator * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    # the interval contains p exactly; at 0/n and n/n rounding would otherwise put p just outside it
    return max(0.0, min(p, center - half)), min(1.0, max(p, center + half))
