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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ...models.adapters import eager_attention
from ...runtime.packing import Pack
from ...runtime.precision import accumulation_dtype
from ...runtime.prefix import StreamPool, plan_chunks
from ...runtime.trace import hidden_arg
from ..objective import objective

_MIX = 0x9E3779B97F4A7C15  # splits (seed, position) into well-separated generator seeds
OVERSAMPLE = 8  # extra range-finder columns for low_rank (Halko et al. recommend 5-10)


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


def _token_rows(source: torch.Tensor, embeds: torch.Tensor, start: int, positions: torch.Tensor):
    """Suffix rows from ``start``, a leaf ``[B, d]`` holding ``source`` at each row's position, and its injector."""
    suffix = embeds[start:]
    offsets = positions - start
    leaf = source[positions].detach().clone().requires_grad_(True)
    at_leaf = (torch.arange(suffix.shape[0], device=suffix.device)[None, :] == offsets[:, None])[..., None]

    def inject(hidden: torch.Tensor) -> torch.Tensor:
        return torch.where(at_leaf, leaf[:, None, :].to(hidden.dtype), hidden)

    return suffix.expand(positions.shape[0], -1, -1), leaf, inject


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


class HvpChunk:
    """Work (:mod:`heta_core.runtime.schedule`): Π_i C (Π_i r_k) for the tokens ``positions`` (all ≥
    ``start``) of one context and their probes ``directions`` ``[m, b, d]``, reduced to
    (1/m) Σ_k ‖·‖₁ → ``[b]``. Chunks of several contexts share one batch: their rows are placed by
    :class:`~heta_core.runtime.packing.Pack`, one leaf ``[Σb, d]`` holds every row's token, and g is
    the sum of every row's objective — each row's leaf reaches only its own row, so the products are
    each row's own."""

    def __init__(
        self,
        runner,
        embeds,
        source,
        targets,
        start: int,
        positions,
        directions,
        curvature: Curvature,
        block,
        row_bytes,
        slot=None,
    ):
        self.runner, self.embeds, self.source, self.targets = runner, embeds, source, targets
        self.start, self.positions, self.directions = start, positions, directions
        self.curvature, self.block, self.row_bytes, self.slot = curvature, block, row_bytes, slot
        self.count, self.length = positions.shape[0], embeds.shape[0] - start

    def key(self):
        # the products of one batch share the operator (kind, block, foil) and the vmapped probe count
        c = self.curvature
        return ("hvp", c.kind, c.layer, c.foil, self.directions.shape[0], self.targets.shape[0], self.embeds.dtype)

    def part(self):
        return self.runner, self.start, self.embeds[self.start :][None].expand(self.positions.shape[0], -1, -1)

    def bytes_at(self, span: int, context: int) -> int:
        return self.positions.shape[0] * self.row_bytes(span, context + span)

    def run(self) -> torch.Tensor:
        with eager_attention(self.runner.model):  # double backward needs eager attention
            return self._run()

    def _run(self) -> torch.Tensor:
        products = block_products(
            lambda rows: self.runner.logits(self.start, rows, self.targets.shape[0]),
            self.embeds,
            self.source,
            self.targets,
            self.start,
            self.positions,
            self.directions,
            self.curvature,
            self.block,
        )
        return _reduce(products, self.embeds.dtype)

    @staticmethod
    def run_together(items, packing: str) -> list[torch.Tensor]:
        with eager_attention(items[0].runner.model):
            return HvpChunk._together(items)

    @staticmethod
    def _together(items) -> list[torch.Tensor]:
        first = items[0]
        pack = Pack([(item.runner, item.start, item.count, item.length) for item in items])
        rows = pack.place([item.part()[2] for item in items])
        leaf = torch.cat([item.source[item.positions] for item in items]).detach().clone().requires_grad_(True)
        columns = torch.cat([item.positions - item.start + pad for item, pad in zip(items, pack.pads, strict=True)])
        at_leaf = (torch.arange(pack.span, device=rows.device)[None, :] == columns[:, None])[..., None]

        def inject(hidden: torch.Tensor) -> torch.Tensor:
            return torch.where(at_leaf, leaf[:, None, :].to(hidden.dtype), hidden)

        count = first.targets.shape[0]
        targets = torch.cat([item.targets[None].expand(item.positions.shape[0], -1) for item in items])
        directions = torch.cat([item.directions for item in items], 1)
        operator = CurvatureOperator(
            lambda placed: pack.logits(placed, count),
            rows,
            leaf,
            inject,
            targets,
            first.curvature.kind,
            first.block,
            first.curvature.foil,
        )
        products = _reduce(operator.apply(directions), first.embeds.dtype)
        return list(products.split(pack.sizes))


def _reduce(products: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(1/m) Σ_k ‖products_k‖₁ per row; |·| summed over d in float32 at least (a bf16 sum of d terms
    keeps ~3 significant digits)."""
    return products.to(accumulation_dtype(dtype)).abs().sum(-1).mean(0)


def hvp_chunks(
    runner,
    embeds,
    source,
    targets,
    scored: int,
    samples: int,
    seed: int,
    curvature: Curvature,
    block,
    *,
    row_bytes,
    budget_bytes: int,
    slot=None,
) -> list[HvpChunk]:
    """The :class:`HvpChunk` items of S_i for the first ``scored`` positions. All probes are drawn
    and copied to the device once, up front."""
    size, dim = source.shape
    positions = list(range(scored))
    index = torch.arange(scored, device=embeds.device)
    host = torch.stack([probes(seed, i, samples, dim) for i in positions], 1)
    if embeds.device.type == "cuda":  # a pageable upload would block the host: pinned, it is queued like a kernel
        host = host.pin_memory()
    all_probes = host.to(embeds.device, non_blocking=True).to(embeds.dtype)
    return [
        HvpChunk(
            runner, embeds, source, targets, lo, index[lo:hi], all_probes[:, lo:hi], curvature, block, row_bytes, slot
        )
        for lo, hi in plan_chunks(positions, size, row_bytes, budget_bytes)
    ]


def sensitivity(
    runner,
    embeds,
    source,
    targets,
    scored: int,
    samples: int,
    seed: int,
    curvature: Curvature,
    block,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool,
) -> tuple[torch.Tensor, int]:
    """S_i for the first ``scored`` positions, batched and chunked; returns (S on the device, HVP count).

    Per-chunk results stay on the device until the end: no host synchronisation per probe. The
    caller must ``streams.join()`` before reading S.
    """
    parts = []
    for chunk in hvp_chunks(
        runner,
        embeds,
        source,
        targets,
        scored,
        samples,
        seed,
        curvature,
        block,
        row_bytes=row_bytes,
        budget_bytes=budget_bytes,
    ):
        with streams.next():
            parts.append(chunk.run())
    return streams.gather(parts), scored * samples


def low_rank_sensitivity(
    runner,
    embeds,
    source,
    targets,
    scored: int,
    samples: int,
    seed: int,
    curvature: Curvature,
    block,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool | None = None,
) -> tuple[torch.Tensor, int]:
    """S_i from a randomized rank-k eigen-approximation of the whole curvature matrix.

    One graph, so one stream: the work runs on the pool's next stream when a pool is given.
    """
    if streams is not None:
        with streams.next():
            scores, count = low_rank_sensitivity(
                runner,
                embeds,
                source,
                targets,
                scored,
                samples,
                seed,
                curvature,
                block,
                row_bytes=row_bytes,
                budget_bytes=budget_bytes,
            )
        return streams.gather([scores]), count
    size, dim = source.shape
    rank = curvature.low_rank
    columns = min(rank + OVERSAMPLE, size * dim)
    count = targets.shape[0]
    leaf = source.detach().clone()[None].requires_grad_(True)
    operator = CurvatureOperator(
        lambda rows: runner.logits(0, rows, count),
        embeds[None],
        leaf,
        lambda h: leaf.to(h.dtype),
        targets,
        curvature.kind,
        block,
        curvature.foil,
    )
    # the vmapped second pass holds one full-sequence activation set per direction: group them
    group = max(1, min(columns, budget_bytes // max(1, row_bytes(size))))

    def apply(directions: torch.Tensor) -> torch.Tensor:  # [c, T·d] -> [c, T·d]
        shaped = directions.to(embeds.dtype).view(-1, 1, size, dim)
        out = [operator.apply(shaped[a : a + group]) for a in range(0, shaped.shape[0], group)]
        return torch.cat(out).reshape(directions.shape[0], -1).to(directions.dtype)

    work = accumulation_dtype(embeds.dtype)
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(columns, size * dim, generator=generator, dtype=work).to(embeds.device)
    basis, _ = torch.linalg.qr(apply(omega).T)  # [T·d, c]
    projected = basis.T @ apply(basis.T).T  # Qᵀ H Q  [c, c]
    values, vectors = torch.linalg.eigh(0.5 * (projected + projected.T))
    keep = values.abs().argsort(descending=True)[:rank]
    factors = (basis @ vectors[:, keep]).view(size, dim, -1)  # U_i blocks  [T, d, k]
    eigen = values[keep]
    scores = torch.empty(scored, dtype=work, device=embeds.device)
    for i in range(scored):
        draws = probes(seed, i, samples, dim).to(embeds.device, work)  # [m, d]
        products = (draws @ factors[i]) * eigen @ factors[i].T  # U_i Λ U_iᵀ r
        scores[i] = products.abs().sum(-1).mean()
    return scores, 2 * columns
