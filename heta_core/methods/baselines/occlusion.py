"""Occlusion (leave-one-out): g(X) − g(X with x_i replaced by the mask vector).

g is the target's log-probability, or with a foil log p(target) − log p(foil)
(:mod:`heta_core.methods.objective`). The masked forwards are HETA's KL stage with another readout
(:func:`heta_core.runtime.masking.masked_forwards`: KV-prefix reuse, chunking, streams).
"""

from __future__ import annotations

import torch

from ...runtime.masking import masked_forwards
from ..objective import drop


def occlusion(
    runner, embeds, n, targets, *, fill, base_logprobs, row_bytes, budget, streams, foil=None
) -> torch.Tensor:
    """Leave-one-out drops ``[n, k]`` of g for every predicting position j at once."""
    drops = masked_forwards(
        runner,
        embeds,
        base_logprobs,
        fill,
        n,
        drop(targets, foil),
        row_bytes=row_bytes,
        budget_bytes=budget,
        streams=streams,
    )
    streams.join()
    return drops
