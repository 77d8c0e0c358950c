"""The explained quantity read off the predicting positions: the target's log-probability, or with
a foil the contrastive difference (docs/engine.md "Contrastive targets").

    g = Σ_j log p(y_j | prompt, y_<j)                        (no foil)
    g = log p(y | prompt) − log p(f | prompt)                (foil f; one target token y)

The softmax normaliser cancels in the difference, so the contrastive g is the logit difference
z_y − z_f: its Hessian w.r.t. the logits is zero, all its curvature is the network's. Every method
reads g through :func:`objective` (on log-probabilities) or :func:`drop` (a masked-forward
readout), so the foil means the same thing everywhere.
"""

from __future__ import annotations

import torch


def objective(logprobs: torch.Tensor, targets: torch.Tensor, foil: int | None = None) -> torch.Tensor:
    """Per predicting position ``[..., k]`` from log-probabilities ``[..., k, V]`` and targets ``[k]``:
    log p(y_j), minus log p(foil) when a foil is given (the caller guarantees k = 1 then)."""
    index = targets.to(logprobs.device).expand(*logprobs.shape[:-1])
    values = logprobs.gather(-1, index[..., None])[..., 0]
    return values if foil is None else values - logprobs[..., foil]


def drop(targets: torch.Tensor, foil: int | None = None):
    """Masked-forward readout: the objective unmasked minus masked, per predicting position → ``[B, k]``
    (``base_logprobs`` ``[k, V]``, masked ``logits`` ``[B, k, V]``). Occlusion's score; with |·| HETA's
    contrastive masking term."""

    def readout(base_logprobs: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        masked = torch.log_softmax(logits.to(base_logprobs.dtype), dim=-1)
        return objective(base_logprobs, targets, foil)[None] - objective(masked, targets, foil)

    return readout
