"""Removing a token: the mask vector, and batched masked forwards after a reused KV prefix.

Token i is removed by replacing its input embedding with a mask vector: "zero" (the authors'
choice), "mean" (the mean input embedding of the context) or "token:<id>" (a real token's
embedding, e.g. pad/unk/eos). The n masked variants of a context are independent; positions < i
are unchanged by masking x_i, so each chunk of variants runs only its suffix after the unmasked
KV prefix and projects only the predicting positions. HETA's KL term, occlusion and the
faithfulness metrics all read these forwards, each with its own readout.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .batching import StreamPool, SuffixRunner, plan_chunks
from .precision import accumulation_dtype

Readout = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mask_vector(embeds: torch.Tensor, mask: str, embedding: nn.Module) -> torch.Tensor:
    """The ``[d]`` vector that replaces a masked token's input embedding."""
    if mask == "zero":
        return torch.zeros_like(embeds[0])
    if mask == "mean":
        return embeds.mean(0)
    token_id = int(mask.split(":", 1)[1])
    return embedding(torch.tensor([token_id], device=embeds.device))[0].to(embeds.dtype)


@torch.no_grad()
def masked_forwards(
    runner: SuffixRunner,
    embeds: torch.Tensor,
    base_logprobs: torch.Tensor,
    fill: torch.Tensor,
    scored: int,
    readout: Readout,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool,
) -> torch.Tensor:
    """``readout(base_logprobs [k, V], masked_logits [B, k, V]) → [B, k]`` for each of the first
    ``scored`` positions masked in turn → ``[scored, k]``, in batched chunks within the budget.

    One masked forward serves every predicting position j (they all follow the prompt).
    ``streams.join()`` before reading.
    """
    size, count = embeds.shape[0], base_logprobs.shape[0]
    parts = []
    for lo, hi in plan_chunks(list(range(scored)), size, row_bytes, budget_bytes):
        with streams.next():
            rows = embeds[lo:].expand(hi - lo, -1, -1).clone()
            rows[torch.arange(hi - lo, device=rows.device), torch.arange(hi - lo, device=rows.device)] = fill
            parts.append(readout(base_logprobs, runner.logits(lo, rows, count)))
    return streams.gather(parts, lambda impacts: impacts.to(accumulation_dtype(embeds.dtype)))


def masked_work(scored: int, fed: int, row_bytes, budget: int) -> tuple[int, int, int]:
    """(forward token positions, chunks, largest chunk bytes) of :func:`masked_forwards` for
    ``scored`` masked tokens of a ``fed``-token context: the planner's mirror of the run."""
    tokens = chunks = peak = 0
    for lo, hi in plan_chunks(list(range(scored)), fed, row_bytes, budget):
        tokens += (hi - lo) * (fed - lo)
        chunks += 1
        peak = max(peak, (hi - lo) * row_bytes(fed - lo, fed))
    return tokens, chunks, peak
