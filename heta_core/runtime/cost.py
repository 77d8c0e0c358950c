"""Memory model for one batch row, used to size chunks to ``HetaConfig.memory_budget_mb``.

A row running n positions through L blocks keeps, per block and position, roughly the
hidden-size activations (norms, q/k/v, attention output, residuals: ~16·d), the MLP
intermediates (~3·ffn), a score/probability/mask row over up to n keys per head (~4·H·n) and its
grown KV cache (2·KV·hd). A plain forward keeps about two blocks' worth alive; a Hessian-vector
product keeps every block's, plus the first backward's graph (~3× in all), and its m probes'
second backward passes run vmapped, so about m blocks' worth of probe-batched gradients are live
at once. The vocabulary-sized log-softmax at p is per row. These are estimates: the benchmark prints measured peak memory
beside them.
"""

from __future__ import annotations

from typing import Callable

import torch

from ..models.adapters import HeadLayout

HVP_GRAPH_FACTOR = 3


def row_bytes_fn(model_config, layout: HeadLayout, dtype: torch.dtype, *, probes: int = 0) -> Callable[[int], int]:
    """Bytes of one batch row as a function of its positions: a masked forward (``probes=0``) or a
    token's Hessian-vector products with ``probes`` probes."""
    d = model_config.hidden_size
    ffn = (
        getattr(model_config, "intermediate_size", None)
        or getattr(model_config, "n_inner", None)
        or 4 * d
    )
    layers = model_config.num_hidden_layers
    vocab = model_config.vocab_size
    elem = torch.finfo(dtype).bits // 8

    def row_bytes(positions: int) -> int:
        per_block = 16 * d + 3 * ffn + 4 * layout.heads * positions + 2 * layout.kv_heads * layout.head_dim
        blocks_alive = HVP_GRAPH_FACTOR * layers + 4 * probes if probes else 2
        logits = vocab * 4 * (HVP_GRAPH_FACTOR + probes if probes else 2)
        return positions * per_block * blocks_alive * elem + logits

    return row_bytes


CPU_BUDGET_MB = 512


def budget_bytes(memory_budget_mb: int | None, device: torch.device) -> int:
    """The chunk budget: the configured one, or auto (512 MB on CPU, half the free memory on CUDA)."""
    if memory_budget_mb is not None:
        return memory_budget_mb * 2**20
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free // 2
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
