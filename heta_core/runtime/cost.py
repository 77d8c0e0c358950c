"""Memory model for one batch row, used to size chunks to ``HetaConfig.memory_budget_mb``.

A row runs n positions of a T-token context (the first T − n come from the shared KV prefix).
Calibrated against ``torch.cuda.max_memory_allocated`` on an H200 (GPT-2-small float32 and a
1B-class Llama bfloat16, 256 tokens, rows of 32–256 positions; ``scripts/gpu-check`` reports the
measured peak beside the estimate):

- **Per position**, per block: the hidden-size activations (norms, q/k/v, attention output,
  residuals: ~16·d), the MLP intermediates (~3·ffn), a score/probability/mask row over all T keys
  per head (~4·H·T) and its grown KV cache (2·KV·hd). A masked forward (no graph) holds about one
  block's MLP and scores at a time; a Hessian-vector product keeps every block's, plus the first
  backward's graph (~3× in all), and its m probes' second backward passes run vmapped, so about m
  blocks' worth of probe-batched gradients are live at once. Half-precision models keep part of
  this in float32 (norms, softmaxes): 3 bytes per element on average, measured.
- **Per row**: the KV cache over the whole context that attention concatenates (2·KV·hd·T per
  block), and in an HVP the keys/values repeated to all H heads (grouped-query attention) once per
  probe — measured as the per-row constant of 0.2–0.35 GB at T = 256. And the vocabulary-sized
  log-softmax at the predicting position.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from ..models.adapters import HeadLayout

HVP_GRAPH_FACTOR = 3
MARGIN = 1.15  # the worst calibration row measured 13 % above the bare model


def row_bytes_fn(model_config, layout: HeadLayout, dtype: torch.dtype, *, probes: int = 0) -> Callable[..., int]:
    """Bytes of one batch row, ``row_bytes(positions, context=positions)``: a masked forward
    (``probes=0``) or a token's Hessian-vector products with ``probes`` probes, running ``positions``
    positions at the end of a ``context``-token sequence."""
    d = model_config.hidden_size
    ffn = getattr(model_config, "intermediate_size", None) or getattr(model_config, "n_inner", None) or 4 * d
    layers = model_config.num_hidden_layers
    vocab = model_config.vocab_size
    elem = torch.finfo(dtype).bits // 8
    act = elem if elem >= 4 else (elem + 4) / 2
    heads, kv_heads, head_dim = layout.heads, layout.kv_heads, layout.head_dim

    def row_bytes(positions: int, context: int | None = None) -> int:
        context = max(positions, context or positions)
        cache = layers * 2 * context * head_dim * elem
        if not probes:
            transient = positions * (ffn + 2 * heads * context) * act
            return int(MARGIN * (cache * kv_heads + transient + vocab * 4 * 2))
        per_block = 16 * d + 3 * ffn + 4 * heads * context + 2 * kv_heads * head_dim
        blocks_alive = HVP_GRAPH_FACTOR * layers + 4 * probes
        graph = positions * per_block * blocks_alive * act + cache * (2 * kv_heads + probes * heads)
        return int(MARGIN * (graph + vocab * 4 * (HVP_GRAPH_FACTOR + probes)))

    return row_bytes


CPU_BUDGET_MB = 512


def budget_bytes(memory_budget_mb: int | None, device: torch.device) -> int:
    """The chunk budget: the configured one, or auto (512 MB on CPU, half the free memory on CUDA)."""
    if memory_budget_mb is not None:
        return memory_budget_mb * 2**20
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        # memory this process's allocator caches from earlier calls is free to it, but not to the
        # driver: without it a warm worker's budget shrank call after call (measured on an H200)
        cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
        return (free + cached) // 2
    return CPU_BUDGET_MB * 2**20


def trace_bytes(
    model_config, layout: HeadLayout, dtype: torch.dtype, positions: int, predicting: int, official: bool
) -> int:
    """The trace: per block the head-mean attention [T, T], k attention rows [H, k, T], values
    [T, KV·hd] and KV cache [2, T, KV·hd]; plus every head's [T, T] and the block inputs for
    ``flow="official"``."""
    elem = torch.finfo(dtype).bits // 8
    per_block = (
        positions * positions
        + layout.heads * predicting * positions
        + 3 * positions * layout.kv_heads * layout.head_dim
    )
    if official:
        per_block += layout.heads * positions * positions + positions * model_config.hidden_size
    return model_config.num_hidden_layers * per_block * elem


# ---------------------------------------------------------------------- time

# Work is counted per stage as (units, chunks): a unit is one token position through the model — a
# masked forward's or the trace's — and a Hessian row position counts 1 + m (its forward and first
# backward, then one vmapped second backward per probe). The planners count it (Plan.work) with the
# same chunk planner the run uses, so only the seconds per unit and per chunk are measured.


def hessian_units(positions: int, probes: int) -> int:
    """The units of ``positions`` Hessian row positions with ``probes`` probes each."""
    return positions * (1 + probes)


@dataclass(frozen=True)
class Speed:
    """Seconds per unit of work and per batched chunk of each stage, and per call (preparation,
    assembly), on one model and device: measured by ``Attributor.calibrate`` or assumed from the
    model's size (:func:`assumed_speed`)."""

    unit_s: dict[str, float]
    chunk_s: dict[str, float]
    fixed_s: float
    source: Literal["measured", "assumed"]

    def seconds(self, work: Mapping[str, tuple[float, int]]) -> float:
        """Predicted seconds of a call with this work per stage (a stage it has no rate for counts as
        the slowest rate it has)."""
        slowest = max(self.unit_s.values(), default=0.0)
        slowest_chunk = max(self.chunk_s.values(), default=0.0)
        return self.fixed_s + sum(
            units * self.unit_s.get(stage, slowest) + chunks * self.chunk_s.get(stage, slowest_chunk)
            for stage, (units, chunks) in work.items()
        )

    def to_dict(self) -> dict:
        return {"unit_s": self.unit_s, "chunk_s": self.chunk_s, "fixed_s": self.fixed_s, "source": self.source}

    @classmethod
    def from_dict(cls, values: dict) -> Speed:
        return cls(dict(values["unit_s"]), dict(values["chunk_s"]), float(values["fixed_s"]), values["source"])


# without a measurement: a forward at this FLOP rate, a backward unit at thrice the forward's cost
ASSUMED_FLOPS = {"cpu": 2e10, "cuda": 5e13}
ASSUMED_CHUNK_S = {"cpu": 2e-3, "cuda": 1e-3}


def assumed_speed(model_config, device: torch.device) -> Speed:
    """A conservative guess from the model's size, for planners that cannot measure (no weights)."""
    d = model_config.hidden_size
    ffn = getattr(model_config, "intermediate_size", None) or getattr(model_config, "n_inner", None) or 4 * d
    flops = 2 * model_config.num_hidden_layers * (4 * d * d + 2 * d * ffn) + 2 * d * model_config.vocab_size
    rate = ASSUMED_FLOPS.get(device.type, ASSUMED_FLOPS["cpu"])
    chunk = ASSUMED_CHUNK_S.get(device.type, ASSUMED_CHUNK_S["cpu"])
    forward = flops / rate
    units = {"flow": forward, "kl": forward, "hessian": 3 * forward, "baseline": 3 * forward, "diagnostics": forward}
    return Speed(units, dict.fromkeys(units, chunk), 5 * chunk, "assumed")


def fit_speed(samples: Sequence[tuple[Mapping[str, tuple[float, int]], Mapping[str, float], float]]) -> Speed:
    """Per-stage (seconds per unit, seconds per chunk) by least squares over calibration runs, each
    (work per stage, measured seconds per stage, the whole call's seconds); never negative."""
    units, chunks = {}, {}
    for stage in {stage for work, _, _ in samples for stage in work}:
        rows = [
            (work[stage][0], work[stage][1], seconds[stage])
            for work, seconds, _ in samples
            if stage in work and stage in seconds
        ]
        if not rows:
            continue
        design = torch.tensor([[u, c] for u, c, _ in rows], dtype=torch.float64)
        measured = torch.tensor([t for _, _, t in rows], dtype=torch.float64)
        solution = torch.linalg.lstsq(design, measured[:, None]).solution[:, 0]
        if bool((solution < 0).any()):  # one regressor alone, the better fitting one
            fits = []
            for column in (0, 1):
                x = design[:, column]
                k = float((x @ measured) / (x @ x)) if float(x @ x) > 0 else 0.0
                fits.append((float(((measured - k * x) ** 2).sum()), column, max(0.0, k)))
            _, column, k = min(fits)
            solution = torch.tensor([k, 0.0] if column == 0 else [0.0, k], dtype=torch.float64)
        units[stage], chunks[stage] = float(solution[0]), float(solution[1])
    fixed = sorted(total - sum(seconds.values()) for _, seconds, total in samples)[len(samples) // 2]
    return Speed(units, chunks, max(0.0, fixed), "measured")
