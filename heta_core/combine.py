"""Combination of the three terms (HETA.md §4, paper Eq. 5).

    Attr_i = M_T[i] · ( β · S_i + γ · I_i )

``normalize="none"`` is the paper's default: S and I enter with their own scales (S usually
dominates). ``normalize="simplex"`` first rescales S and I each to sum 1, so that β and γ become
real weights; a term that is zero everywhere stays zero.
"""

from __future__ import annotations

import torch


def to_simplex(values: torch.Tensor) -> torch.Tensor:
    total = values.sum()
    return values / total if total > 0 else torch.zeros_like(values)


def combine(flow: torch.Tensor, hessian: torch.Tensor, kl: torch.Tensor, *, beta: float, gamma: float, normalize: str) -> torch.Tensor:
    if normalize == "simplex":
        hessian, kl = to_simplex(hessian), to_simplex(kl)
    return flow * (beta * hessian + gamma * kl)
