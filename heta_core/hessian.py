"""Hessian sensitivity S_i — second-order curvature of the target log-probability (HETA.md §2).

g(X) = log softmax(logits_p)[x_t] as a function of the input embeddings X ∈ R^{T×d};
H = ∇²_X g is never formed. With m Rademacher probes r_k and Π_i the selector of token i's block:

    S_i = (1/m) Σ_k ‖ Π_i H (Π_i r_k) ‖_1          (an estimate of E_r ‖H_ii r‖_1)

Each term is one Hessian-vector product by double backward: u = ∂g/∂x_i (graph kept), then
H_ii r = ∂(u · r)/∂x_i. Because only the block H_ii is wanted, the fast path differentiates with
respect to x_i alone: each batch row holds the context with a leaf tensor spliced in at position i.
Positions before i do not depend on x_i (causality), so they come from the detached KV prefix
(see :mod:`heta_core.batching`), and only the logits at p are projected.

Probes are a deterministic function of (seed, position): both paths, any chunking and any device
draw the same r_k for token i, so the same seed gives the same numbers.
"""

from __future__ import annotations

import torch
from torch import nn

from .batching import StreamPool, SuffixRunner, plan_chunks
from .precision import accumulation_dtype

_MIX = 0x9E3779B97F4A7C15  # splits (seed, position) into well-separated generator seeds


def probes(seed: int, position: int, count: int, dim: int) -> torch.Tensor:
    """The ``count`` Rademacher probes ``[count, dim]`` (±1, int8, CPU) for token ``position``."""
    generator = torch.Generator().manual_seed((seed * _MIX + position + 1) % (2**63))
    return (torch.randint(0, 2, (count, dim), generator=generator, dtype=torch.int8) * 2 - 1)


def target_logprob(logits: torch.Tensor, target_id: int) -> torch.Tensor:
    """log softmax(logits)[target] per row, in the accumulation dtype."""
    return torch.log_softmax(logits.to(accumulation_dtype(logits.dtype)), dim=-1)[..., target_id]


def block_hvp_reference(model: nn.Module, embeds: torch.Tensor, target_id: int, position: int, probe: torch.Tensor) -> torch.Tensor:
    """Literal Π_i H (Π_i r): full sequence, all logits projected, gradient w.r.t. the whole X."""
    x = embeds.detach().clone().requires_grad_(True)
    logits = model(inputs_embeds=x[None], use_cache=False).logits[0]
    g = target_logprob(logits[-1], target_id)
    (grad,) = torch.autograd.grad(g, x, create_graph=True)
    direction = torch.zeros_like(x)
    direction[position] = probe
    (hvp,) = torch.autograd.grad((grad * direction).sum(), x)
    return hvp[position]


def block_hvps(
    runner: SuffixRunner, embeds: torch.Tensor, target_id: int, start: int, positions: torch.Tensor, directions: torch.Tensor
) -> torch.Tensor:
    """Batched Π_i H (Π_i r_k) for B rows (one per token i) and m probes each.

    ``positions`` ``[B]`` (all >= ``start``), ``directions`` ``[m, B, d]``; returns ``[m, B, d]``.
    A token's m probes share its forward and first backward: the m second backward passes run as
    one vmapped pass over that graph (``is_grads_batched``) instead of m separate rows.
    """
    batch = positions.shape[0]
    suffix = embeds[start:]
    offsets = positions - start
    leaf = suffix[offsets].detach().clone().requires_grad_(True)
    at_leaf = (torch.arange(suffix.shape[0], device=suffix.device)[None, :] == offsets[:, None])[..., None]
    rows = torch.where(at_leaf, leaf[:, None, :], suffix.expand(batch, -1, -1))
    g = target_logprob(runner.logits(start, rows), target_id).sum()
    (grad,) = torch.autograd.grad(g, leaf, create_graph=True)
    (hvp,) = torch.autograd.grad(grad, leaf, grad_outputs=directions, is_grads_batched=True)
    return hvp


def sensitivity_reference(model: nn.Module, embeds: torch.Tensor, target_id: int, samples: int, seed: int) -> torch.Tensor:
    """S_i by the literal double loop over tokens i and probes k."""
    size, dim = embeds.shape
    scores = torch.zeros(size, dtype=accumulation_dtype(embeds.dtype))
    for i in range(size):
        draws = probes(seed, i, samples, dim).to(embeds)
        for k in range(samples):
            scores[i] += block_hvp_reference(model, embeds, target_id, i, draws[k]).abs().sum().cpu()
    return scores / samples


def sensitivity(
    runner: SuffixRunner,
    embeds: torch.Tensor,
    target_id: int,
    samples: int,
    seed: int,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool,
) -> tuple[torch.Tensor, int]:
    """S_i for every context position, batched and chunked; returns (S on the device, HVP count).

    Per-chunk results stay on the device until the end: no host synchronisation per probe.
    The caller must ``streams.join()`` before reading S.
    """
    size, dim = embeds.shape
    positions = list(range(size))
    index = torch.arange(size, device=embeds.device)
    # [m, n, d]: probe k of token i, generated per token so chunking cannot change them
    all_probes = torch.stack([probes(seed, i, samples, dim) for i in positions], 1).to(embeds.device, embeds.dtype)
    parts = []
    for lo, hi in plan_chunks(positions, size, row_bytes, budget_bytes):
        with streams.next():
            hvp = block_hvps(runner, embeds, target_id, lo, index[lo:hi], all_probes[:, lo:hi])
            parts.append(hvp.abs().sum(-1).to(accumulation_dtype(embeds.dtype)).mean(0))
    return streams.gather(parts), size * samples
