"""Gradient baselines, scored over the same prompt positions as HETA.

All explain g(X) = Σ_j log P(y_j | prompt, y_<j) (one target token: its log-probability) w.r.t.
the input embeddings X (the tensor passed as ``inputs_embeds``), like HETA.md; with a foil f,
g = log P(y) − log P(f) (:mod:`heta_core.methods.objective`):

    gradient               ‖∂g/∂x_i‖₂                         (saliency; unsigned)
    input_x_gradient       Σ_d x_i,d · ∂g/∂x_i,d              (signed)
    integrated_gradients   Σ_d (x_i − x'_i)_d · ∫₀¹ ∂g/∂x_i,d (x' + α(x − x')) dα
                           x' = X with every prompt token replaced by the mask vector (the same
                           "zero" / "mean" / "token:<id>" fill HETA's KL term uses); the integral by
                           ``ig_steps``-point Gauss–Legendre quadrature. Completeness:
                           Σ_i IG_i ≈ g(X) − g(X'), checked in the tests.

Integrated gradients' path points are batched, chunked to the same memory budget as HETA's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ...runtime.precision import accumulation_dtype
from ..objective import objective


def target_logprob(
    model: nn.Module, embeds: torch.Tensor, targets: torch.Tensor, foil: int | None = None
) -> torch.Tensor:
    """g for a batch ``embeds`` ``[B, L, d]``: Σ_j log P(targets_j) at the last len(targets) positions
    (minus log P(foil) with a foil) → ``[B]``."""
    count = targets.shape[0]
    logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=count).logits[:, -count:]
    logprobs = torch.log_softmax(logits.to(accumulation_dtype(embeds.dtype)), dim=-1)
    return objective(logprobs, targets, foil).sum(-1)


def _chunks(total: int, per_row: int, budget: int) -> list[tuple[int, int]]:
    size = max(1, budget // max(1, per_row))
    return [(lo, min(total, lo + size)) for lo in range(0, total, size)]


def gradient_of(model: nn.Module, embeds: torch.Tensor, targets: torch.Tensor, foil: int | None = None) -> torch.Tensor:
    """∂g/∂X ``[B, L, d]`` for a batch of embeddings ``[B, L, d]`` (one backward for the batch)."""
    leaf = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(target_logprob(model, leaf, targets, foil).sum(), leaf)
    return grad


def gradient(model, embeds, n, targets, *, foil=None, **_) -> torch.Tensor:
    grad = gradient_of(model, embeds[None], targets, foil)[0, :n]
    return grad.to(accumulation_dtype(grad.dtype)).norm(dim=-1)


def input_x_gradient(model, embeds, n, targets, *, foil=None, **_) -> torch.Tensor:
    grad = gradient_of(model, embeds[None], targets, foil)[0, :n]
    acc = accumulation_dtype(grad.dtype)
    return (embeds[:n].to(acc) * grad.to(acc)).sum(-1)


def quadrature(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre nodes and weights on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def integrated_gradients(
    model, embeds, n, targets, *, fill, steps, row_bytes, budget, tick, foil=None, **_
) -> torch.Tensor:
    baseline = embeds.clone()
    baseline[:n] = fill
    delta = embeds - baseline
    alphas, weights = quadrature(steps)
    acc = accumulation_dtype(embeds.dtype)
    total = torch.zeros(n, embeds.shape[-1], dtype=acc, device=embeds.device)
    for lo, hi in _chunks(steps, row_bytes(embeds.shape[0]), budget):
        tick()
        alpha = alphas[lo:hi].to(embeds.device, embeds.dtype)[:, None, None]
        grads = gradient_of(model, baseline[None] + alpha * delta[None], targets, foil)[:, :n].to(acc)
        total += (weights[lo:hi].to(embeds.device, acc)[:, None, None] * grads).sum(0)
    return (delta[:n].to(acc) * total).sum(-1)
