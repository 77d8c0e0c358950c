"""One forward pass over the context that records what the flow term needs.

Per block l it keeps the attention probabilities ``A^{(l)}`` ``[H, T, T]``, the value vectors the
model computed ``[T, KV, hd]`` and the residual stream entering the block ``[T, d]`` (for
``flow="official"``). It also returns the log-probabilities at the predicting position p and, when
asked, the key/value cache of the whole context, which later passes reuse as a detached prefix.
Must run under :func:`~heta_core.adapters.eager_attention` so the probabilities exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .adapters import Adapter, HeadLayout
from .precision import accumulation_dtype


@dataclass
class Trace:
    attentions: list[torch.Tensor] = field(default_factory=list)  # [H, T, T] per block
    values: list[torch.Tensor] = field(default_factory=list)  # [T, KV, hd] per block
    block_inputs: list[torch.Tensor] = field(default_factory=list)  # [T, d] per block
    logprobs: torch.Tensor | None = None  # [V] at p, in the accumulation dtype
    kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # per block (keys, values) of the context


def _hidden_arg(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


@torch.no_grad()
def run_trace(
    model: nn.Module,
    adapter: Adapter,
    layout: HeadLayout,
    embeds: torch.Tensor,
    *,
    keep_cache: bool,
    full_logits: bool = False,
) -> Trace:
    """Forward ``embeds`` ``[T, d]`` once with hooks on every block and attention module.

    ``full_logits`` projects every position through the LM head (the literal reference path);
    otherwise only position p is projected.
    """
    trace = Trace()
    handles = []

    def on_block(_module, args, kwargs):
        trace.block_inputs.append(_hidden_arg(args, kwargs)[0])

    def on_attention_input(module, args, kwargs):
        trace.values.append(adapter.values(module, _hidden_arg(args, kwargs), layout)[0])

    def on_attention_output(module, _args, output):
        probs = output[1] if isinstance(output, tuple) and len(output) > 1 else None
        if probs is None:
            raise RuntimeError(
                f"{type(module).__name__} returned no attention probabilities under eager attention; "
                "load the model with attn_implementation='eager' or 'sdpa'"
            )
        trace.attentions.append(probs[0])

    try:
        for block in adapter.blocks(model):
            attn = adapter.attention(block)
            handles.append(block.register_forward_pre_hook(on_block, with_kwargs=True))
            handles.append(attn.register_forward_pre_hook(on_attention_input, with_kwargs=True))
            handles.append(attn.register_forward_hook(on_attention_output))
        out = model(
            inputs_embeds=embeds[None],
            use_cache=keep_cache,
            logits_to_keep=0 if full_logits else 1,
        )
    finally:
        for handle in handles:
            handle.remove()
    trace.logprobs = torch.log_softmax(out.logits[0, -1].to(accumulation_dtype(embeds.dtype)), dim=-1)
    if keep_cache:
        trace.kv = [(layer.keys, layer.values) for layer in out.past_key_values.layers]
    return trace
