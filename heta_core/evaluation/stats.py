"""Rank agreement between two score vectors (used to compare approximations with the exact estimator)."""

from __future__ import annotations

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
