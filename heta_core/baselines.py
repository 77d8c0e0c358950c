"""Baseline attribution methods, scored over the same prompt positions as HETA.

All explain g(X) = Σ_j log P(y_j | prompt, y_<j) (one target token: its log-probability) w.r.t.
the input embeddings X (the tensor passed as ``inputs_embeds``), like HETA.md:

    gradient               ‖∂g/∂x_i‖₂                         (saliency; unsigned)
    input_x_gradient       Σ_d x_i,d · ∂g/∂x_i,d              (signed)
    integrated_gradients   Σ_d (x_i − x'_i)_d · ∫₀¹ ∂g/∂x_i,d (x' + α(x − x')) dα
                           x' = X with every prompt token replaced by the mask vector (the same
                           "zero" / "mean" / "token:<id>" fill HETA's KL term uses); the integral by
                           ``ig_steps``-point Gauss–Legendre quadrature. Completeness:
                           Σ_i IG_i ≈ g(X) − g(X'), checked in the tests.
    attention_rollout      Abnar & Zuidema (2020): R = Π_l ½(Ā_l + I) with Ā_l the head-mean
                           attention, rows renormalised; the score is R[p, i]
    occlusion              leave-one-out: g(X) − g(X with x_i replaced by the mask vector); the
                           masked forwards are HETA's KL stage with another readout
                           (:func:`heta_core.kl.information`: KV-prefix reuse, chunking, streams)

``rows`` is a list of (sequence length, targets): one row for a single target or a "sum" span,
one per target token in "each" mode (an independent attribution of y_j from the prompt and y_<j).
Batched passes are chunked to the same memory budget as HETA's.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .flow import rollout_step
from .kl import information
from .precision import accumulation_dtype


def target_logprob(model: nn.Module, embeds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """g for a batch ``embeds`` ``[B, L, d]``: Σ_j log P(targets_j) at the last len(targets) positions → ``[B]``."""
    count = targets.shape[0]
    logits = model(inputs_embeds=embeds, use_cache=False, logits_to_keep=count).logits[:, -count:]
    logprobs = torch.log_softmax(logits.to(accumulation_dtype(embeds.dtype)), dim=-1)
    return logprobs.gather(-1, targets.expand(embeds.shape[0], -1)[..., None])[..., 0].sum(-1)


def _chunks(total: int, per_row: int, budget: int) -> list[tuple[int, int]]:
    size = max(1, budget // max(1, per_row))
    return [(lo, min(total, lo + size)) for lo in range(0, total, size)]


def gradient_of(model: nn.Module, embeds: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """∂g/∂X ``[B, L, d]`` for a batch of embeddings ``[B, L, d]`` (one backward for the batch)."""
    leaf = embeds.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(target_logprob(model, leaf, targets).sum(), leaf)
    return grad


def gradient(model, embeds, n, targets, **_) -> torch.Tensor:
    grad = gradient_of(model, embeds[None], targets)[0, :n]
    return grad.to(accumulation_dtype(grad.dtype)).norm(dim=-1)


def input_x_gradient(model, embeds, n, targets, **_) -> torch.Tensor:
    grad = gradient_of(model, embeds[None], targets)[0, :n]
    acc = accumulation_dtype(grad.dtype)
    return (embeds[:n].to(acc) * grad.to(acc)).sum(-1)


def quadrature(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss–Legendre nodes and weights on [0, 1]."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.from_numpy((nodes + 1) / 2), torch.from_numpy(weights / 2)


def integrated_gradients(model, embeds, n, targets, *, fill, steps, row_bytes, budget, tick, **_) -> torch.Tensor:
    baseline = embeds.clone()
    baseline[:n] = fill
    delta = embeds - baseline
    alphas, weights = quadrature(steps)
    acc = accumulation_dtype(embeds.dtype)
    total = torch.zeros(n, embeds.shape[-1], dtype=acc, device=embeds.device)
    for lo, hi in _chunks(steps, row_bytes(embeds.shape[0]), budget):
        tick()
        alpha = alphas[lo:hi].to(embeds.device, embeds.dtype)[:, None, None]
        grads = gradient_of(model, baseline[None] + alpha * delta[None], targets)[:, :n].to(acc)
        total += (weights[lo:hi].to(embeds.device, acc)[:, None, None] * grads).sum(0)
    return (delta[:n].to(acc) * total).sum(-1)


def logprob_drop(targets: torch.Tensor):
    """Occlusion's readout: log P(y_j) unmasked minus masked, per predicting position → ``[B, k]``."""

    def readout(base_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        index = targets.to(logits.device)[None, :, None]
        masked = torch.log_softmax(logits.to(base_logprobs.dtype), dim=-1).gather(-1, index.expand(logits.shape[0], -1, -1))
        return base_logprobs.gather(-1, index[0])[None, :, 0] - masked[..., 0]

    return readout


def occlusion(runner, embeds, n, targets, *, fill, base_logprobs, row_bytes, budget, streams) -> torch.Tensor:
    """Leave-one-out drops ``[n, k]`` of log P(y_j) for every predicting position j at once."""
    drops = information(
        runner, embeds, base_logprobs, fill, n,
        row_bytes=row_bytes, budget_bytes=budget, streams=streams, readout=logprob_drop(targets),
    )  # fmt: skip
    streams.join()
    return drops


def rollout(mean_attentions: list[torch.Tensor]) -> torch.Tensor:
    """Π_l ½(Ā_l + I), rows renormalised (applied from the first layer up) → ``[T, T]``."""
    acc = accumulation_dtype(mean_attentions[0].dtype)
    flow = torch.eye(mean_attentions[0].shape[-1], dtype=acc, device=mean_attentions[0].device)
    for attention in mean_attentions:
        flow = rollout_step(attention.to(acc)) @ flow
    return flow


def attention_rollout(model, embeds, n, targets, *, mean_attentions, **_) -> torch.Tensor:
    length = embeds.shape[0]
    flow = rollout([a[:length, :length] for a in mean_attentions])
    rows = flow[length - targets.shape[0] :, :n]
    scores = rows.mean(0)
    return scores / scores.sum()


FUNCTIONS = {
    "gradient": gradient,
    "input_x_gradient": input_x_gradient,
    "integrated_gradients": integrated_gradients,
    "attention_rollout": attention_rollout,
}


def baseline_scores(method: str, model: nn.Module, embeds: torch.Tensor, n: int, rows, *, tick=lambda: None, **context) -> torch.Tensor:
    """Scores ``[len(rows), n]`` of a per-row baseline ``method`` for each (length, targets) row.

    ``tick()`` runs on the host before every batched chunk (once per row for the one-pass methods);
    an exception it raises aborts the computation (cancellation, deadlines).
    """
    function = FUNCTIONS[method]
    scores = []
    for length, targets in rows:
        if method != "integrated_gradients":
            tick()
        scores.append(function(model, embeds[:length], n, targets, tick=tick, **context).detach().cpu())
    return torch.stack(scores)
