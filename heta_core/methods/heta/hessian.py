"""Hessian sensitivity S_i — second-order curvature of the target log-probability (HETA.md §2).

g(X) = Σ_j log softmax(logits_{p_j})[y_j] as a function of the input embeddings X ∈ R^{T×d}
(one term for a next token, one per target token for a span in "sum" mode). H = ∇²_X g is never
formed. With m Rademacher probes r_k and Π_i the selector of token i's block:

    S_i = (1/m) Σ_k ‖ Π_i H (Π_i r_k) ‖_1          (an estimate of E_r ‖H_ii r‖_1)

Each term is one Hessian-vector product by double backward: u = ∂g/∂x_i (graph kept), then
H_ii r = ∂(u · r)/∂x_i. Because only the block H_ii is wanted, the fast path differentiates with
respect to x_i alone: each batch row holds the context with a leaf tensor spliced in at position i.
Positions before i do not depend on x_i (causality), so they come from the detached KV prefix
(see :mod:`heta_core.runtime.prefix`), and only the predicting positions are projected. A token's m
probes share its forward and first backward: their second backward passes run as one vmapped pass.

Approximations (opt-in; HETA.md "Approximations"):

- ``curvature_layers=k``: differentiate w.r.t. the residual stream entering the last k blocks
  instead of X. The leaf is spliced into that block's input by a forward pre-hook, so the first
  L−k blocks run forward only. Cost per token: forward through all blocks, backward and
  second-order passes through k.
- ``curvature="ggn"``: the Gauss–Newton surrogate G = J^T (diag(q) − q q^T) J (J = ∂logits/∂x,
  q = softmax at each predicting position), positive semi-definite. G v is computed with two
  reverse passes (J v by the double-vjp trick, then J^T w) and no second derivatives of the network.
- ``low_rank=k``: a randomized range finder (Halko et al. 2011) on the whole Hessian from 2(k+o)
  full-sequence HVPs: Y = H Ω, Q = qr(Y), B = Qᵀ H Q, keep the top-k eigenpairs U Λ Uᵀ; then
  S_i = (1/m) Σ_k ‖U_i Λ U_iᵀ r_k‖_1 with the same probes. Cost independent of the number of
  tokens; exact when rank(H) ≤ k + o.

Contrastive (``Curvature.foil``, the project's extension; docs/engine.md): g is replaced by
log p(y) − log p(f) = z_y − z_f at the target's predicting position, and S_i is read from that
difference's Hessian. Only the exact operator has one: the GGN of a function linear in the logits is 0.

Probes are a deterministic function of (seed, position): both paths, any chunking and any device
draw the same r_k for token i, so the same seed gives the same numbers.

This module holds the operator and the literal reference path; the batched fast path is
:mod:`.hessian_chunks`, the range finder :mod:`.low_rank`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...runtime.precision import accumulation_dtype
from ...runtime.trace import hidden_arg
from ..objective import objective

_MIX = 0x9E3779B97F4A7C15  # splits (seed, position) into well-separated generator seeds


def probes(seed: int, position: int, count: int, dim: int) -> torch.Tensor:
    """The ``count`` Rademacher probes ``[count, dim]`` (±1, int8, CPU) for token ``position``."""
    generator = torch.Generator().manual_seed((seed * _MIX + position + 1) % (2**63))
    return torch.randint(0, 2, (count, dim), generator=generator, dtype=torch.int8) * 2 - 1


def target_logprob(logits: torch.Tensor, target_ids: torch.Tensor, foil: int | None = None) -> torch.Tensor:
    """log softmax(logits)[y_j] ``[..., k]`` for logits ``[..., k, V]`` and targets ``[k]`` (minus the
    foil's log-probability with a foil)."""
    return objective(torch.log_softmax(logits.to(accumulation_dtype(logits.dtype)), dim=-1), target_ids, foil)


@dataclass(frozen=True)
class Curvature:
    """Which second-order operator S reads: exact Hessian or GGN, w.r.t. X or a block's input."""

    kind: str = "exact"  # "exact" | "ggn"
    layer: int | None = None  # block whose input is differentiated (curvature_layers); None: X
    low_rank: int | None = None
    foil: int | None = None  # contrastive objective log p(y) − log p(foil) (exact kind only)


def _replace_hidden(inject: Callable[[torch.Tensor], torch.Tensor]):
    def hook(_module, args, kwargs):
        hidden = inject(hidden_arg(args, kwargs))
        if args:
            return (hidden, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": hidden}

    return hook


class CurvatureOperator:
    """The curvature of g w.r.t. ``leaf`` for one batch of rows; :meth:`apply` may be called repeatedly.

    ``forward(rows)`` returns logits ``[B, k, V]`` at the predicting positions. ``inject(hidden)``
    puts the leaf into the rows' embeddings (``block=None``) or into ``block``'s hidden input.
    """

    def __init__(
        self,
        forward,
        rows,
        leaf,
        inject,
        targets: torch.Tensor,
        kind: str,
        block: nn.Module | None,
        foil: int | None = None,
    ):
        if foil is not None and kind != "exact":
            raise ValueError("a contrastive objective is linear in the logits: its Gauss-Newton matrix is zero")
        self.leaf, self.kind = leaf, kind
        if block is None:
            logits = forward(inject(rows))
        else:
            handle = block.register_forward_pre_hook(_replace_hidden(inject), with_kwargs=True)
            try:
                logits = forward(rows)
            finally:
                handle.remove()
        if kind == "exact":
            g = target_logprob(logits, targets, foil).sum()
            (self.grad,) = torch.autograd.grad(g, leaf, create_graph=True)
        else:
            self.logits = logits.to(accumulation_dtype(logits.dtype))
            self.dual = torch.zeros_like(self.logits, requires_grad=True)
            # J^T u is linear in u; differentiating it w.r.t. u gives J v (the double-vjp trick)
            (self.transposed,) = torch.autograd.grad(self.logits, leaf, grad_outputs=self.dual, create_graph=True)
            self.probs = torch.softmax(self.logits.detach(), dim=-1)

    def apply(self, directions: torch.Tensor) -> torch.Tensor:
        """Products ``[m, *leaf.shape]`` for directions ``[m, *leaf.shape]``."""
        if self.kind == "exact":
            (out,) = torch.autograd.grad(
                self.grad, self.leaf, grad_outputs=directions, is_grads_batched=True, retain_graph=True
            )
            return out
        (jv,) = torch.autograd.grad(
            self.transposed, self.dual, grad_outputs=directions, is_grads_batched=True, retain_graph=True
        )
        q = self.probs
        weighted = q * jv - q * (q * jv).sum(-1, keepdim=True)  # (diag(q) − q qᵀ) J v per position
        (out,) = torch.autograd.grad(
            self.logits, self.leaf, grad_outputs=weighted, is_grads_batched=True, retain_graph=True
        )
        return out


def reduce_products(products: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1/m) Σ_k ‖products_k‖₁ per row; |·| summed over d in float32 at least (a bf16 sum of d terms
    keeps ~3 significant digits)."""
    return products.to(accumulation_dtype(dtype)).abs().sum(-1).mean(0)


def _token_rows(source: torch.Tensor, embeds: torch.Tensor, start: int, positions: torch.Tensor):
    """Suffix rows from ``start``, a leaf ``[B, d]`` holding ``source`` at each row's position, and its injector."""
    suffix = embeds[start:]
    leaf = source[positions].detach().clone().requires_grad_(True)
    return suffix.expand(positions.shape[0], -1, -1), leaf, leaf_injector(leaf, positions - start, suffix.shape[0])


def leaf_injector(leaf: torch.Tensor, columns: torch.Tensor, span: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``inject(hidden)``: row b of ``hidden`` ``[B, span, d]`` with ``leaf[b]`` at position ``columns[b]``
    — how every path splices the differentiated token into its rows."""
    at_leaf = (torch.arange(span, device=leaf.device)[None, :] == columns[:, None])[..., None]

    def inject(hidden: torch.Tensor) -> torch.Tensor:
        return torch.where(at_leaf, leaf[:, None, :].to(hidden.dtype), hidden)

    return inject


def block_products(
    forward, embeds, source, targets, start, positions, directions, curvature: Curvature, block
) -> torch.Tensor:
    """Π_i C (Π_i r_k) for rows (one per token i in ``positions``, all >= ``start``) and m probes.

    C is the configured curvature; ``source`` ``[T, d]`` is what it is taken w.r.t. (X or a block
    input); ``directions`` ``[m, B, d]``; returns ``[m, B, d]``.
    """
    rows, leaf, inject = _token_rows(source, embeds, start, positions)
    return CurvatureOperator(forward, rows, leaf, inject, targets, curvature.kind, block, curvature.foil).apply(
        directions
    )


def sensitivity_reference(
    model: nn.Module, embeds, source, targets, scored: int, samples: int, seed: int, curvature: Curvature, block
) -> torch.Tensor:
    """S_i by the literal double loop over tokens i and probes k: full sequence, all logits projected."""
    size, dim = source.shape
    count = targets.shape[0]
    scores = torch.zeros(scored, dtype=accumulation_dtype(embeds.dtype))

    def forward(rows):
        return model(inputs_embeds=rows, use_cache=False).logits[:, -count:]

    for i in range(scored):
        draws = probes(seed, i, samples, dim).to(embeds)
        for k in range(samples):
            leaf = source.detach().clone()[None].requires_grad_(True)
            direction = torch.zeros_like(leaf)
            direction[0, i] = draws[k]
            operator = CurvatureOperator(
                forward,
                embeds[None],
                leaf,
                lambda h: leaf.to(h.dtype),  # noqa: B023 - used in this iteration only
                targets,
                curvature.kind,
                block,
                curvature.foil,
            )
            scores[i] += operator.apply(direction[None])[0, 0, i].abs().sum().cpu()
    return scores / samples
