"""KL information impact I — what the prediction loses when token i is removed (HETA.md §3).

    I_i = KL( P(·|X) ‖ P(·|X with x_i replaced by the mask vector) )   at position p, full vocabulary

For a target span the KL is taken at every predicting position p_j: KL_j(i); "sum" adds them.

With a foil f (the project's contrastive extension, docs/engine.md) the impact is instead the
absolute change of the contrast when token i is masked:

    I_i = | Δ_i (log p(y) − log p(f)) |      at the target's predicting position p

(:func:`heta_core.methods.objective.drop`, the readout occlusion signs). Both forms are readouts
``(base_logprobs [k, V], masked_logits [B, k, V]) → [B, k]``; :func:`impact` picks one.

Masks ("zero", "mean", "token:<id>") and the batched masked forwards after the unmasked KV prefix
are :mod:`heta_core.runtime.masking`'s; this module is their KL readout and the literal loop.
"""

from __future__ import annotations

import torch
from torch import nn

from ...runtime.masking import Readout, masked_forwards
from ...runtime.prefix import StreamPool, SuffixRunner
from ..objective import drop


def kl_divergence(base_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(P_j ‖ Q_j) per row and predicting position: P as log-probabilities ``[k, V]``, Q as logits ``[B, k, V]``."""
    masked = torch.log_softmax(logits.to(base_logprobs.dtype), dim=-1)
    return (base_logprobs.exp() * (base_logprobs - masked)).sum(-1)


def impact(targets: torch.Tensor, foil: int | None) -> Readout:
    """The masking term's readout: the KL (no foil) or the contrast's absolute change."""
    if foil is None:
        return kl_divergence
    change = drop(targets, foil)
    return lambda base_logprobs, logits: change(base_logprobs, logits).abs()


@torch.no_grad()
def information_reference(
    model: nn.Module,
    embeds: torch.Tensor,
    base_logprobs: torch.Tensor,
    fill: torch.Tensor,
    scored: int,
    readout: Readout = kl_divergence,
) -> torch.Tensor:
    """I_j(i) ``[scored, k]`` by the literal loop: one full forward (all positions projected) per masked token."""
    count = base_logprobs.shape[0]
    impacts = torch.zeros(scored, count, dtype=base_logprobs.dtype)
    for i in range(scored):
        masked = embeds.clone()
        masked[i] = fill
        logits = model(inputs_embeds=masked[None], use_cache=False).logits[0, -count:]
        impacts[i] = readout(base_logprobs, logits[None])[0].cpu()
    return impacts


def information(
    runner: SuffixRunner,
    embeds,
    base_logprobs,
    fill,
    scored: int,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool,
    readout: Readout = kl_divergence,
):
    """I_j(i) ``[scored, k]`` for the first ``scored`` positions: the batched masked forwards of
    :func:`heta_core.runtime.masking.masked_forwards` read out as KLs (or ``readout``). ``streams.join()``
    before reading."""
    return masked_forwards(
        runner,
        embeds,
        base_logprobs,
        fill,
        scored,
        readout,
        row_bytes=row_bytes,
        budget_bytes=budget_bytes,
        streams=streams,
    )
