"""One forward pass over the fed sequence that records what the flow term needs.

The last k positions of the sequence are the *predicting positions* p_1..p_k (k = 1 for a single
next token; k = |span| for a target span). Per block l the trace keeps:

- ``mean_attentions[l]`` ``[T, T]``: mean_h A^{(l,h)} (the rollout input);
- ``attention_rows[l]`` ``[H, k, T]``: A^{(l,h)}[p_j, :] (where the flow ends);
- ``values[l]`` ``[T, KV, hd]``: the value vectors the model computed;
- ``attentions[l]`` ``[H, T, T]`` and ``block_inputs[l]`` ``[T, d]`` only when asked
  (``flow="official"`` chains every head; curvature_layers differentiates a block's input).

With a model split by a device map each block computes on its own device; the attention terms are
gathered on the device of ``embeds`` (where the flow is combined across layers), the value vectors
stay with their block (its ``W_O`` is there).

Keeping head-means and k rows instead of every head's T×T matrix bounds the trace at O(L·T²).
It also returns log P(·|X) at the predicting positions and, when asked, the key/value cache, which
later passes reuse as a detached prefix. Must run under
:func:`~heta_core.adapters.eager_attention` so the probabilities exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from ..models.adapters import Adapter, HeadLayout
from ..models.compat import cache_of
from .precision import accumulation_dtype


@dataclass
class Trace:
    mean_attentions: list[torch.Tensor] = field(default_factory=list)
    attention_rows: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    attentions: list[torch.Tensor] = field(default_factory=list)
    block_inputs: dict[int, torch.Tensor] = field(default_factory=dict)
    logprobs: torch.Tensor | None = None  # [k, V] in the accumulation dtype
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per block (keys, values), batch 1


def hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden-state input of a block / attention module call."""
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def run_trace(
    model: nn.Module,
    adapter: Adapter,
    layout: HeadLayout,
    embeds: torch.Tensor,
    *,
    predicting: int = 1,
    keep_cache: bool = True,
    full_logits: bool = False,
    full_attention: bool = False,
    block_input_layers: tuple[int, ...] = (),
) -> Trace:
    """Forward ``embeds`` ``[T, d]`` once with hooks on every block and attention module.

    ``full_logits`` projects every position through the LM head (the literal reference path);
    otherwise only the ``predicting`` last positions are projected.
    """
    trace = Trace()
    size = embeds.shape[0]
    rows = torch.arange(size - predicting, size, device=embeds.device)
    handles = []

    def on_block(layer):
        def hook(_module, args, kwargs):
            trace.block_inputs[layer] = hidden_arg(args, kwargs)[0]

        return hook

    def on_attention_input(module, args, kwargs):
        trace.values.append(adapter.values(module, hidden_arg(args, kwargs), layout)[0])

    def on_attention_output(module, _args, output):
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no attention probabilities under eager attention; "
                "load the model with attn_implementation='eager' or 'sdpa'"
            )
        probs = probs[0].to(embeds.device)
        trace.mean_attentions.append(probs.mean(0))
        trace.attention_rows.append(probs[:, rows, :])
        if full_attention:
            trace.attentions.append(probs)

    try:
        for layer, block in enumerate(adapter.blocks(model)):
            attn = adapter.attention(block)
            if full_attention or layer in block_input_layers:
                handles.append(block.register_forward_pre_hook(on_block(layer), with_kwargs=True))
            handles.append(attn.register_forward_pre_hook(on_attention_input, with_kwargs=True))
            handles.append(attn.register_forward_hook(on_attention_output))
        out = model(inputs_embeds=embeds[None], use_cache=keep_cache, logits_to_keep=0 if full_logits else predicting)
    finally:
        for handle in handles:
            handle.remove()
    logits = out.logits[0, -predicting:]
    trace.logprobs = torch.log_softmax(logits.to(accumulation_dtype(embeds.dtype)), dim=-1)
    if keep_cache:
        trace.kv = [(layer.keys, layer.values) for layer in cache_of(out).layers]
    return trace
