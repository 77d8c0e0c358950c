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

from typing import Callable

import torch

from ..models.adapters import HeadLayout

HVP_GRAPH_FACTOR = 3
MARGIN = 1.15  # the worst calibration row measured 13 % above the bare model


def row_bytes_fn(model_config, layout: HeadLayout, dtype: torch.dtype, *, probes: int = 0) -> Callable[..., int]:
    """Bytes of one batch row, ``row_bytes(positions, context=positions)``: a masked forward
    (``probes=0``) or a token's Hessian-vector products with ``probes`` probes, running ``positions``
    positions at the end of a ``context``-token sequence."""
    d = model_config.hidden_size
    ffn = (
        getattr(model_config, "intermediate_size", None)
        or getattr(model_config, "n_inner", None)
        or 4 * d
    )
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


def trace_bytes(model_config, layout: HeadLayout, dtype: torch.dtype, positions: int, predicting: int, official: bool) -> int:
    """The trace: per block the head-mean attention [T, T], k attention rows [H, k, T], values
    [T, KV·hd] and KV cache [2, T, KV·hd]; plus every head's [T, T] and the block inputs for
    ``flow="official"``."""
    elem = torch.finfo(dtype).bits // 8
    per_block = positions * positions + layout.heads * predicting * positions + 3 * positions * layout.kv_heads * layout.head_dim
    if official:
        per_block += layout.heads * positions * positions + positions * model_config.hidden_size
    return model_config.num_hidden_layers * per_block * elem
