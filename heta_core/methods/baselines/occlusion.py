"""Occlusion (leave-one-out): g(X) − g(X with x_i replaced by the mask vector).

The masked forwards are HETA's KL stage with another readout
(:func:`heta_core.runtime.masking.masked_forwards`: KV-prefix reuse, chunking, streams).
"""

from __future__ import annotations

import torch

from ...runtime.masking import masked_forwards


def logprob_drop(targets: torch.Tensor):
    """Occlusion's readout: log P(y_j) unmasked minus masked, per predicting position → ``[B, k]``."""

    def readout(base_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        index = targets.to(logits.device)[None, :, None]
        masked = torch.log_softmax(logits.to(base_logprobs.dtype), dim=-1).gather(-1, index.expand(logits.shape[0], -1, -1))
        return base_logprobs.gather(-1, index[0])[None, :, 0] - masked[..., 0]

    return readout


def occlusion(runner, embeds, n, targets, *, fill, base_logprobs, row_bytes, budget, streams) -> torch.Tensor:
    """Leave-one-out drops ``[n, k]`` of log P(y_j) for every predicting position j at once."""
    drops = masked_forwards(
        runner, embeds, base_logprobs, fill, n, logprob_drop(targets), row_bytes=row_bytes, budget_bytes=budget, streams=streams
    )
    streams.join()
    return drops
