"""Combination of the three terms (HETA.md §4, paper Eq. 5).

    Attr_i = M_T[i] · ( β · S_i + γ · I_i )

``normalize="none"`` is the paper's Eq. 5 as written: S and I enter with their own scales, which
differ by orders of magnitude (S ≈ 3·10⁻⁴ of I on heta-demo, the other way round on models with
unsaturated outputs), so one term decides. ``normalize="simplex"`` (the default since
``heta eval --suite`` measured it, docs/evaluation.md) first rescales S and I each to sum 1, so
that β and γ become real weights; a term that is zero everywhere stays zero. For a target ×
context matrix ("each" mode) every row is rescaled on its own.

Before every term is known (a partial result: the flow first, then the KL impact, then S), the
score is :func:`estimate`: Eq. 5 on the simplex with each missing term replaced by the uniform
vector 1/n — what that term would be if it told nothing about the tokens:

    flow only:       M_T[i] · (β + γ) / n                 (ranks as M_T)
    flow and I:      M_T[i] · (β / n + γ · Ĩ_i)           (Ĩ = I rescaled to sum 1)

A partial is on the scale of a ``simplex`` result (both weigh M_T by distributions over the prompt),
so a heatmap refined in place keeps its colour scale; with ``normalize="none"`` the final scores
have the raw terms' scale instead. docs/engine.md "Partial results" measures how well each
partial agrees with the final.
"""

from __future__ import annotations

import torch


def to_simplex(values: torch.Tensor) -> torch.Tensor:
    """Rescale the last dimension to sum 1 (rows that are all zero stay zero)."""
    total = values.sum(-1, keepdim=True)
    return torch.where(
        total > 0, values / torch.where(total > 0, total, torch.ones_like(total)), torch.zeros_like(values)
    )


def combine(
    flow: torch.Tensor, hessian: torch.Tensor, kl: torch.Tensor, *, beta: float, gamma: float, normalize: str
) -> torch.Tensor:
    if normalize == "simplex":
        hessian, kl = to_simplex(hessian), to_simplex(kl)
    return flow * (beta * hessian + gamma * kl)


def estimate(
    flow: torch.Tensor,
    hessian: torch.Tensor | None,
    kl: torch.Tensor | None,
    *,
    beta: float,
    gamma: float,
    normalize: str,
) -> torch.Tensor:
    """Eq. 5 when both S and I are known; otherwise the partial estimate of the module docstring."""
    if hessian is not None and kl is not None:
        return combine(flow, hessian, kl, beta=beta, gamma=gamma, normalize=normalize)
    uniform = torch.full_like(flow, 1.0 / flow.shape[-1])
    hessian = to_simplex(hessian) if hessian is not None else uniform
    kl = to_simplex(kl) if kl is not None else uniform
    return flow * (beta * hessian + gamma * kl)
