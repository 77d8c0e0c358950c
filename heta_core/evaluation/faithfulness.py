"""Faithfulness metrics: what happens to the prediction when tokens are removed or kept.

One target token y predicted from prompt embeddings X = (x_0 … x_{n−1}); p(·) = P(y | ·). A token
is *removed* by replacing its embedding with the mask vector (the same "zero" / "mean" /
"token:<id>" fill HETA's KL term uses); ∅ is the prompt with every token removed. Rankings by
score (ties: earlier position first), over all prompt positions.

Hard top-k (ERASER, DeYoung et al. 2020), k = ``top_k``:
    comprehensiveness  comp@k = p(X) − p(X without its top-k tokens)       higher is better
    sufficiency        suff@k = p(X) − p(only the top-k tokens kept)        lower is better

Deletion / insertion curves at K evenly spaced counts c_1 < … < c_K = n (K = min(n, steps)):
    deletion AOPC   (1/K) Σ_s [p(X) − p(X without its top-c_s tokens)]      higher is better
    insertion AOPC  (1/K) Σ_s [p(only the top-c_s tokens kept) − p(∅)]      higher is better

Soft-NC / Soft-NS (Zhao & Aletras 2023, generative adaptation as in ReAGent): importance
q = (a − min a) / (max a − min a) ∈ [0, 1]; every *element* of x_i is kept independently with
probability q_i (Soft-NS) or 1 − q_i (Soft-NC), dropped elements take the mask vector's value:
    x'_i = m_i ⊙ x_i + (1 − m_i) ⊙ fill,   m_i,d ~ Bernoulli(q_i) (NS) or Bernoulli(1 − q_i) (NC)
With S(x') = 1 − max(0, p(X) − p(x')), C(x') = max(0, p(X) − p(x')) and S₀ = S(∅):
    Soft-NS = (S(x') − S₀) / (1 − S₀)        Soft-NC = C(x') / (1 − S₀)
averaged over ``samples`` seeded draws. Both are higher-is-better. The normaliser 1 − S₀ =
max(0, p(X) − p(∅)) makes them undefined when the empty prompt already predicts y about as well as
X: below :data:`SOFT_MIN_GAP` they are NaN and left out of means (``heta eval`` reports how many
items each mean covers). Without that guard a few items with p(X) − p(∅) ≈ 1e-5 (heta-demo does
confidently predict one value from an all-zero prompt) dominate every average with values ~10⁴.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..runtime.masking import kept_logprobs
from .metrics import aopc, ranking

SOFT_MIN_GAP = 0.05  # smallest p(X) − p(∅) for which Soft-NC / Soft-NS are reported


class Perturbations:
    """Batched P(y | perturbed prompt) for one prompt and one target token."""

    def __init__(self, model: nn.Module, embeds: torch.Tensor, target: int, fill: torch.Tensor, batch: int = 64):
        self.model, self.embeds, self.fill, self.batch = model, embeds.detach(), fill.detach(), batch
        self.target = target
        self.full = self.probability(torch.ones(1, embeds.shape[0], dtype=torch.bool))[0]
        self.empty = self.probability(torch.zeros(1, embeds.shape[0], dtype=torch.bool))[0]

    def probability(self, keep: torch.Tensor) -> torch.Tensor:
        """p(y) for each keep-mask row: ``[B, n]`` (token kept or removed) or ``[B, n, d]`` (per element)."""
        chunks = [(lo, min(lo + self.batch, keep.shape[0])) for lo in range(0, keep.shape[0], self.batch)]
        target = torch.tensor([self.target], device=self.embeds.device)
        return kept_logprobs(self.model, self.embeds, self.embeds.shape[0], keep, self.fill, target, chunks)[:, 0].exp()

    def _top(self, scores: torch.Tensor, counts: list[int]) -> torch.Tensor:
        """Keep-masks ``[len(counts), n]`` keeping exactly the top-c tokens for each count c."""
        order = ranking(scores)
        keep = torch.zeros(len(counts), len(order), dtype=torch.bool)
        for row, count in enumerate(counts):
            keep[row, order[:count]] = True
        return keep


def curve_counts(n: int, steps: int) -> list[int]:
    """K = min(n, steps) evenly spaced token counts ending at n."""
    points = min(n, steps)
    return sorted({max(1, round(n * (s + 1) / points)) for s in range(points)})


def hard(p: Perturbations, scores: torch.Tensor, k: int) -> dict[str, float]:
    k = min(k, len(scores))
    kept = p.probability(p._top(scores, [k]))[0]
    removed = p.probability(~p._top(scores, [k]))[0]
    return {"comp": float(p.full - removed), "suff": float(p.full - kept)}


def deletion_insertion(p: Perturbations, scores: torch.Tensor, steps: int) -> dict[str, float]:
    counts = curve_counts(len(scores), steps)
    kept = p._top(scores, counts)
    probabilities = p.probability(torch.cat([~kept, kept]))
    deleted, inserted = probabilities[: len(counts)], probabilities[len(counts) :]
    return {
        "deletion_aopc": aopc((p.full - deleted).tolist()),
        "insertion_aopc": aopc((inserted - p.empty).tolist()),
    }


def soft(p: Perturbations, scores: torch.Tensor, samples: int, seed: int) -> dict[str, float]:
    scores = scores.double()
    spread = float(scores.max() - scores.min())
    q = (scores - scores.min()) / spread if spread > 0 else torch.ones_like(scores)
    n, d = p.embeds.shape
    generator = torch.Generator().manual_seed(seed)
    draws = torch.rand(samples, n, d, generator=generator, dtype=torch.float64)
    sufficient = p.probability(draws < q[None, :, None])  # element kept with probability q_i
    comprehensive = p.probability(draws < (1 - q)[None, :, None])
    s0 = 1 - max(0.0, float(p.full - p.empty))
    if 1 - s0 < SOFT_MIN_GAP:
        return {"soft_ns": math.nan, "soft_nc": math.nan}
    s = 1 - (p.full - sufficient).clamp(min=0)
    c = (p.full - comprehensive).clamp(min=0)
    return {"soft_ns": float(((s - s0) / (1 - s0)).mean()), "soft_nc": float((c / (1 - s0)).mean())}
