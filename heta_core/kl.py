"""KL information impact I — what the prediction loses when token i is removed (HETA.md §3).

    I_i = KL( P(·|X) ‖ P(·|X with x_i replaced by the mask vector) )   at position p, full vocabulary

For a target span the KL is taken at every predicting position p_j: KL_j(i); "sum" adds them.

Masks: "zero" (x_i = 0, the authors' choice), "mean" (the mean input embedding of the context),
"token:<id>" (the input embedding of a real token such as pad/unk/eos).

The n masked variants are independent. The fast path runs them as batched chunks after the
unmasked KV prefix (positions < i are unchanged by masking x_i), projecting only position p.
"""

from __future__ import annotations

import torch
from torch import nn

from .batching import StreamPool, SuffixRunner, plan_chunks
from .precision import accumulation_dtype


def mask_vector(embeds: torch.Tensor, mask: str, embedding: nn.Module) -> torch.Tensor:
    """The ``[d]`` vector that replaces a masked token's input embedding."""
    if mask == "zero":
        return torch.zeros_like(embeds[0])
    if mask == "mean":
        return embeds.mean(0)
    token_id = int(mask.split(":", 1)[1])
    return embedding(torch.tensor([token_id], device=embeds.device))[0].to(embeds.dtype)


def kl_divergence(base_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(P_j ‖ Q_j) per row and predicting position: P as log-probabilities ``[k, V]``, Q as logits ``[B, k, V]``."""
    masked = torch.log_softmax(logits.to(base_logprobs.dtype), dim=-1)
    return (base_logprobs.exp() * (base_logprobs - masked)).sum(-1)


@torch.no_grad()
def information_reference(
    model: nn.Module, embeds: torch.Tensor, base_logprobs: torch.Tensor, fill: torch.Tensor, scored: int
) -> torch.Tensor:
    """KL_j(i) ``[scored, k]`` by the literal loop: one full forward (all positions projected) per masked token."""
    count = base_logprobs.shape[0]
    impacts = torch.zeros(scored, count, dtype=base_logprobs.dtype)
    for i in range(scored):
        masked = embeds.clone()
        masked[i] = fill
        logits = model(inputs_embeds=masked[None], use_cache=False).logits[0, -count:]
        impacts[i] = kl_divergence(base_logprobs, logits[None])[0].cpu()
    return impacts


@torch.no_grad()
def information(
    runner: SuffixRunner,
    embeds: torch.Tensor,
    base_logprobs: torch.Tensor,
    fill: torch.Tensor,
    scored: int,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool,
    readout=kl_divergence,
) -> torch.Tensor:
    """KL_j(i) ``[scored, k]`` for the first ``scored`` positions in batched, chunked masked forwards.

    One masked forward serves every predicting position j (they all follow the prompt).
    ``readout(base_logprobs, masked_logits)`` → ``[B, k]`` turns the masked logits into the
    impact (default: the KL; occlusion reads the target's log-probability drop instead).
    ``streams.join()`` before reading.
    """
    size, count = embeds.shape[0], base_logprobs.shape[0]
    positions = list(range(scored))
    parts = []
    for lo, hi in plan_chunks(positions, size, row_bytes, budget_bytes):
        with streams.next():
            rows = embeds[lo:].expand(hi - lo, -1, -1).clone()
            rows[torch.arange(hi - lo, device=rows.device), torch.arange(hi - lo, device=rows.device)] = fill
            parts.append(readout(base_logprobs, runner.logits(lo, rows, count)))
    return streams.gather(parts, lambda impacts: impacts.to(accumulation_dtype(embeds.dtype)))
