"""Removing a token: the mask vector, and batched masked forwards after a reused KV prefix.

Token i is removed by replacing its input embedding with a mask vector: "zero" (the authors'
choice), "mean" (the mean input embedding of the context) or "token:<id>" (a real token's
embedding, e.g. pad/unk/eos). The n masked variants of a context are independent; positions < i
are unchanged by masking x_i, so each chunk of variants runs only its suffix after the unmasked
KV prefix and projects only the predicting positions. HETA's KL term and occlusion read these
forwards, each with its own readout.

Removing a *set* of tokens chosen by scores (the result's diagnostics and ``heta eval``'s
faithfulness metrics) is :func:`kept_logprobs`: full-length forwards of keep-masks, one engine for both.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

from .packing import packed_logits
from .precision import accumulation_dtype
from .prefix import StreamPool, SuffixRunner, plan_chunks

Readout = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mask_vector(embeds: torch.Tensor, mask: str, embedding: nn.Module) -> torch.Tensor:
    """The ``[d]`` vector that replaces a masked token's input embedding."""
    if mask == "zero":
        return torch.zeros_like(embeds[0])
    if mask == "mean":
        return embeds.mean(0)
    token_id = int(mask.split(":", 1)[1])
    return embedding(torch.tensor([token_id], device=embeds.device))[0].to(embeds.dtype)


class MaskedChunk:
    """Work (:mod:`.schedule`): the masked variants of positions ``[lo, hi)`` of one context, each
    run from ``lo`` after the unmasked prefix, read out at the predicting positions → ``[hi − lo, k]``."""

    def __init__(
        self,
        runner: SuffixRunner,
        embeds,
        base_logprobs,
        fill,
        lo: int,
        hi: int,
        readout: Readout,
        row_bytes,
        slot=None,
    ):
        self.runner, self.embeds, self.base_logprobs, self.fill = runner, embeds, base_logprobs, fill
        self.lo, self.hi, self.readout, self.row_bytes, self.slot = lo, hi, readout, row_bytes, slot
        self.count, self.start, self.length = hi - lo, lo, embeds.shape[0] - lo

    def key(self):
        return ("masked", self.base_logprobs.shape[0], self.embeds.dtype)

    def part(self):
        rows = self.embeds[self.lo :].expand(self.hi - self.lo, -1, -1).clone()
        index = torch.arange(self.hi - self.lo, device=rows.device)
        rows[index, index] = self.fill
        return self.runner, self.lo, rows

    def bytes_at(self, span: int, context: int) -> int:
        return (self.hi - self.lo) * self.row_bytes(span, context + span)

    @torch.no_grad()
    def run(self) -> torch.Tensor:
        return self._read(self.runner.logits(self.lo, self.part()[2], self.base_logprobs.shape[0]))

    def _read(self, logits: torch.Tensor) -> torch.Tensor:
        return self.readout(self.base_logprobs, logits).to(accumulation_dtype(self.embeds.dtype))

    @staticmethod
    @torch.no_grad()
    def run_together(items, packing: str) -> list[torch.Tensor]:
        logits = packed_logits([item.part() for item in items], items[0].base_logprobs.shape[0])
        sizes = [item.hi - item.lo for item in items]
        return [item._read(rows) for item, rows in zip(items, logits.split(sizes), strict=True)]


def masked_chunks(
    runner, embeds, base_logprobs, fill, scored: int, readout: Readout, *, row_bytes, budget_bytes: int, slot=None
):
    """The :class:`MaskedChunk` items masking each of the first ``scored`` positions, chunked within the budget."""
    return [
        MaskedChunk(runner, embeds, base_logprobs, fill, lo, hi, readout, row_bytes, slot)
        for lo, hi in plan_chunks(list(range(scored)), embeds.shape[0], row_bytes, budget_bytes)
    ]


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
    parts = []
    for chunk in masked_chunks(
        runner, embeds, base_logprobs, fill, scored, readout, row_bytes=row_bytes, budget_bytes=budget_bytes
    ):
        with streams.next():
            parts.append(chunk.run())
    return streams.gather(parts)


def masked_work(scored: int, fed: int, row_bytes, budget: int) -> tuple[int, int, int]:
    """(forward token positions, chunks, largest chunk bytes) of :func:`masked_forwards` for
    ``scored`` masked tokens of a ``fed``-token context: the planner's mirror of the run."""
    tokens = chunks = peak = 0
    for lo, hi in plan_chunks(list(range(scored)), fed, row_bytes, budget):
        tokens += (hi - lo) * (fed - lo)
        chunks += 1
        peak = max(peak, (hi - lo) * row_bytes(fed - lo, fed))
    return tokens, chunks, peak


@torch.no_grad()
def kept_logprobs(
    model: nn.Module,
    embeds: torch.Tensor,
    n: int,
    keep: torch.Tensor,
    fill: torch.Tensor,
    targets: torch.Tensor,
    chunks: list[tuple[int, int]],
    streams: StreamPool | None = None,
) -> torch.Tensor:
    """log P(y_j | ...) ``[B, k]`` (float64, CPU) of the targets ``[k]`` that follow ``embeds`` ``[L, d]``
    for each keep-mask row of the first ``n`` prompt positions: ``keep`` ``[B, n]`` keeps or removes
    whole tokens, ``[B, n, d]`` single elements; what is removed takes ``fill``'s value. Rows run in
    ``chunks`` (row ranges) as full-length forwards: which tokens go depends on the scores, so no KV
    prefix is shared."""
    runner = SuffixRunner(model, [])
    keep = keep.to(embeds.device)
    count = targets.shape[0]
    parts = []
    for lo, hi in chunks:
        with streams.next() if streams is not None else contextlib.nullcontext():
            part = keep[lo:hi] if keep.dim() == 3 else keep[lo:hi, :, None]
            rows = embeds.expand(hi - lo, -1, -1).clone()
            rows[:, :n] = torch.where(part, embeds[:n], fill)
            logprobs = torch.log_softmax(runner.logits(0, rows, count).to(accumulation_dtype(embeds.dtype)), dim=-1)
            parts.append(logprobs.gather(-1, targets[None, :, None].expand(hi - lo, -1, -1))[..., 0])
    if streams is None:
        return torch.cat(parts).double().cpu()
    result = streams.gather(parts)
    streams.join()
    return result.double().cpu()
