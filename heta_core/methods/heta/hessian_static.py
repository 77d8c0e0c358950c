"""S_i with static shapes (``cuda_graphs=True``): the HVP chunks padded to buckets and replayed as CUDA graphs.

The same products as :mod:`.hessian_chunks` — row b holds the context with a leaf spliced in at token
i_b's position, a token's m probes share its forward and first backward — laid out so that every
chunk of a context has one shape (:mod:`heta_core.runtime.graphs`):

- rows run the whole context from position 0 (no KV prefix: its length would differ per chunk),
  padded on the right to ``L = bucket_length(T)`` positions. Causal attention keeps positions < T
  blind to the padding, and the logits are read at the predicting positions by index
  (``logits_to_keep`` as a tensor), so the padding changes no number;
- every chunk holds ``B`` rows, a bucket size (:func:`~heta_core.runtime.graphs.bucket`) that fits the
  memory budget at length L; the last chunk's spare rows get a zero direction (their products are 0
  and are dropped).

Per chunk the host then issues one graph replay instead of every kernel of three passes. The price is
arithmetic: full rows instead of suffixes (≈2× the positions of the prefix path on average) plus the
padding (< 1.5× in length and in rows), so the switch pays where launches dominate — a GPU, a small
or medium model — and is off by default. On a CPU the padded chunks run eagerly (that is how CI tests
their numbers against the prefix path and the reference). Chunks are never packed with other
requests' (:meth:`StaticHvpChunk.key` is None): a packed batch has no fixed shape.
"""

from __future__ import annotations

import torch

from ...models.adapters import eager_attention
from ...runtime.graphs import bucket, bucket_length, graphs_for, ladder
from .hessian import Curvature, CurvatureOperator, leaf_injector, reduce_products


def static_layout(scored: int, length: int, max_positions: int | None, row_bytes, budget_bytes: int):
    """(rows per chunk B, padded length L, chunk count) for ``scored`` tokens of a ``length``-token
    context: B is the largest bucket size up to ``bucket(scored)`` whose rows fit the budget at length L."""
    padded = bucket_length(length, max_positions)
    per_row = max(1, row_bytes(padded, padded))
    rows = 1
    for size in ladder():
        if size > bucket(scored) or size * per_row > budget_bytes:
            break
        rows = size
    return rows, padded, -(-scored // rows)


class StaticHvpChunk:
    """Work (:mod:`heta_core.runtime.schedule`): the (1/m) Σ_k ‖Π_i C Π_i r_k‖₁ of tokens ``positions`` (a
    chunk of at most ``rows`` tokens), computed on the padded ``[rows, L]`` layout; output ``[len(positions)]``."""

    start = 0

    def __init__(self, runner, base, source, targets, positions, directions, curvature: Curvature, block, slot):
        self.runner, self.base, self.source, self.targets = runner, base, source, targets
        self.positions, self.directions = positions, directions
        self.curvature, self.block, self.slot = curvature, block, slot
        self.count, self.length = positions.shape[0], base.shape[0]

    def key(self) -> None:
        return None  # a fixed-shape chunk runs alone

    def run(self) -> torch.Tensor:
        model = self.runner.model
        rows, dim = self.directions.shape[1], self.base.shape[1]
        m, count, padded = self.directions.shape[0], self.targets.shape[0], self.base.shape[0]
        positions = torch.zeros(rows, dtype=torch.long, device=self.base.device)
        positions[: self.count] = self.positions
        leaf = self.source[positions].detach().clone().requires_grad_(True)  # spare rows: token 0, direction 0
        real = self.source.shape[0]
        inputs = {
            "base": self.base,
            "leaf": leaf,
            "columns": positions,
            "predict": torch.arange(real - count, real, device=self.base.device),
            "targets": self.targets,
            "directions": self.directions,
        }
        c = self.curvature
        key = ("hvp-static", c.kind, c.layer, c.foil, m, rows, padded, count, dim, self.base.dtype, self.base.device)
        runner, block = self.runner, self.block

        def compute(given: dict[str, torch.Tensor]) -> torch.Tensor:
            leaf = given["leaf"]
            operator = CurvatureOperator(
                lambda placed: runner.logits(0, placed, given["predict"]),
                given["base"][None].expand(rows, -1, -1),
                leaf,
                leaf_injector(leaf, given["columns"], padded),
                given["targets"],
                c.kind,
                block,
                c.foil,
            )
            return reduce_products(operator.apply(given["directions"]), given["base"].dtype)

        with eager_attention(model):
            return graphs_for(model).run(key, inputs, compute)[: self.count]


def static_hvp_chunks(
    runner, embeds, source, targets, directions, curvature: Curvature, block, layout, slot=None
) -> list[StaticHvpChunk]:
    """The chunks of S_i for the tokens of ``directions`` ``[m, scored, d]`` (their probes) in the
    :func:`static_layout` ``layout`` of the context ``embeds`` ``[T, d]``: its padded copy and the padded
    probes are made once, up front."""
    rows, padded, count = layout
    (samples, scored, dim), length = directions.shape, source.shape[0]
    base = embeds.new_zeros(padded, dim)
    base[:length] = embeds
    spare = directions.new_zeros(samples, count * rows - scored, dim)  # the last chunk's spare rows: direction 0
    directions = torch.cat([directions, spare], 1)
    index = torch.arange(scored, device=embeds.device)
    return [
        StaticHvpChunk(
            runner,
            base,
            source,
            targets,
            index[lo : min(lo + rows, scored)],
            directions[:, lo : lo + rows],
            curvature,
            block,
            slot,
        )
        for lo in range(0, scored, rows)
    ]
