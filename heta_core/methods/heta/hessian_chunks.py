"""S_i on the fast path: Hessian-vector products in chunks of tokens, batched (HETA.md §2).

Row b of a chunk holds the context from ``start`` with a leaf spliced in at token i_b's position:
positions before ``start`` come from the detached KV prefix (:mod:`heta_core.runtime.prefix`),
only the predicting positions are projected, and a token's m probes share its forward and first
backward (one vmapped second backward). Chunks are sized by the memory model
(:func:`~heta_core.runtime.prefix.plan_chunks`); chunks of several requests share one batch
(:meth:`HvpChunk.run_together`, :mod:`heta_core.runtime.packing`). The operator and the probes are
:mod:`.hessian`'s, so this path equals :func:`.hessian.sensitivity_reference` to rounding.
"""

from __future__ import annotations

import torch

from ...models.adapters import eager_attention
from ...runtime.packing import Pack
from ...runtime.prefix import StreamPool, plan_chunks
from .hessian import Curvature, CurvatureOperator, block_products, leaf_injector, probes, reduce_products
from .hessian_static import static_hvp_chunks, static_layout


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
        return reduce_products(products, self.embeds.dtype)

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
        inject = leaf_injector(leaf, columns, pack.span)
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
        products = reduce_products(operator.apply(directions), first.embeds.dtype)
        return list(products.split(pack.sizes))


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
    static: bool = False,
    max_positions: int | None = None,
) -> list:
    """The :class:`HvpChunk` items of S_i for the first ``scored`` positions; with ``static``
    (``cuda_graphs``) the :class:`~.hessian_static.StaticHvpChunk` items of the bucketed layout (padded
    up to the model's ``max_positions``). All probes are drawn and copied to the device once, up front."""
    size, dim = source.shape
    positions = list(range(scored))
    index = torch.arange(scored, device=embeds.device)
    host = torch.stack([probes(seed, i, samples, dim) for i in positions], 1)
    if embeds.device.type == "cuda":  # a pageable upload would block the host: pinned, it is queued like a kernel
        host = host.pin_memory()
    all_probes = host.to(embeds.device, non_blocking=True).to(embeds.dtype)
    if static:
        layout = static_layout(scored, size, max_positions, row_bytes, budget_bytes)
        return static_hvp_chunks(runner, embeds, source, targets, all_probes, curvature, block, layout, slot)
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
