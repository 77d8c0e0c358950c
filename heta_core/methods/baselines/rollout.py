"""Attention rollout (Abnar & Zuidema 2020): R = Π_l ½(Ā_l + I) with Ā_l the head-mean attention,
rows renormalised; the score of token i is R[p, i] (averaged over a span's predicting positions)."""

from __future__ import annotations

import torch

from ...runtime.precision import accumulation_dtype
from ..heta.flow import rollout_step


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
