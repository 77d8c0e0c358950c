"""Combination of the three terms (HETA.md §4, paper Eq. 5).

    Attr_i = M_T[i] · ( β · S_i + γ · I_i )

``normalize="none"`` is the paper's Eq. 5 as written: S and I enter with their own scales, which
differ by orders of magnitude (S ≈ 3·10⁻⁴ of I on heta-demo, the other way round on models with
unsaturated outputs), so one term decides. ``normalize="simplex"`` (the default since
``heta eval --suite`` measured it, docs/evaluation.md) first rescales S and I each to sum 1, so
that β and γ become real weights; a term that is zero everywhere stays zero. For a target ×
context matrix ("each" mode) every row is rescaled on its own.
"""

from __future__ import annotations

import torch


def to_simplex(values: torch.Tensor) -> torch.Tensor:
    """Rescale the last dimension to sum 1 (rows that are all zero stay zero)."""
    total = values.sum(-1, keepdim=True)
    return torch.where(total > 0, values / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(values))


def combine(flow: torch.Tensor, hessian: torch.Tensor, kl: torch.Tensor, *, beta: float, gamma: float, normalize: str) -> torch.Tensor:
    if normalize == "simplex":
        hessian, kl = to_simplex(hessian), to_simplex(kl)
    return flow * (beta * hessian + gamma * kl)
