"""Architecture adapters: the only place that knows how a model family is laid out.

The algorithm asks every model the same questions; an adapter answers them for one family:

- ``blocks(model)``: the decoder blocks, in order;
- ``attention(block)``: the block's self-attention module. Under eager attention its forward returns
  ``(output, probabilities)`` with probabilities ``[B, H, T, T]``;
- ``values(attn, hidden)``: the value vectors ``[B, T, KV, hd]`` the model computes from the
  attention input ``hidden`` — including any value bias, sliced out of fused projections;
- ``value_weight(attn)``: ``W_V`` as ``[KV, d, hd]`` (no bias), used by ``flow="official"``;
- ``out_weight(attn)``: ``W_O`` as ``[H, hd, d]``: head h writes ``value_h @ out_weight[h]``.

Weights are read through :func:`~heta_core.models.placement.weight`: on the device the block computes
on (loaded when a device map offloads it), dequantized when quantized, so the algorithm never asks
where a block lives or how its weights are stored.

Attention probabilities with SDPA / flash attention: those kernels never materialise the
probabilities (and their double backward is unsupported), so :func:`eager_attention` switches the
model's ``config._attn_implementation`` to ``"eager"`` for the passes that need probabilities or
second derivatives and restores it afterwards. Transformers reads that field on every forward, so
no reload is needed; the numbers are the same up to floating-point reassociation.

An unsupported architecture raises :class:`UnsupportedArchitectureError` listing the supported ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import UnsupportedArchitectureError
from .placement import weight


@dataclass(frozen=True)
class HeadLayout:
    """Query heads H, key/value heads KV (KV < H under grouped-query attention), head size hd."""

    heads: int
    kv_heads: int
    head_dim: int

    @property
    def group(self) -> int:
        """Query heads sharing one kv head: head h reads kv head ``h // group``."""
        return self.heads // self.kv_heads

    @classmethod
    def from_config(cls, config) -> HeadLayout:
        heads = config.num_attention_heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
        return cls(heads, kv_heads, head_dim)


def _linear_value_weight(weight: torch.Tensor, layout: HeadLayout) -> torch.Tensor:
    """``nn.Linear`` weight rows ``[KV*hd, d]`` -> ``[KV, d, hd]``."""
    return weight.view(layout.kv_heads, layout.head_dim, -1).transpose(1, 2)


def _linear_out_weight(weight: torch.Tensor, layout: HeadLayout) -> torch.Tensor:
    """``nn.Linear`` output projection ``[d, H*hd]`` -> ``[H, hd, d]``."""
    return weight.t().reshape(layout.heads, layout.head_dim, -1)


@dataclass(frozen=True)
class Adapter:
    family: str
    model_types: tuple[str, ...]
    blocks_attr: str  # attribute of ``model.base_model`` holding the blocks
    attention_attr: str  # attribute of a block holding its self-attention
    _values: Callable[[nn.Module, torch.Tensor, HeadLayout], torch.Tensor]
    _value_weight: Callable[[nn.Module, HeadLayout], torch.Tensor]
    _out_weight: Callable[[nn.Module, HeadLayout], torch.Tensor]

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return getattr(model.base_model, self.blocks_attr)

    def attention(self, block: nn.Module) -> nn.Module:
        return getattr(block, self.attention_attr)

    def values(self, attn: nn.Module, hidden: torch.Tensor, layout: HeadLayout) -> torch.Tensor:
        batch, seq = hidden.shape[:2]
        return self._values(attn, hidden, layout).reshape(batch, seq, layout.kv_heads, layout.head_dim)

    def value_weight(self, attn: nn.Module, layout: HeadLayout) -> torch.Tensor:
        return self._value_weight(attn, layout)

    def out_weight(self, attn: nn.Module, layout: HeadLayout) -> torch.Tensor:
        return self._out_weight(attn, layout)


def _separate(v_name: str, o_name: str, **kwargs) -> dict:
    """Families with their own ``v_proj``-style linear layer."""
    return dict(
        _values=lambda attn, h, lay: getattr(attn, v_name)(h),
        _value_weight=lambda attn, lay: _linear_value_weight(weight(getattr(attn, v_name)), lay),
        _out_weight=lambda attn, lay: _linear_out_weight(weight(getattr(attn, o_name)), lay),
        **kwargs,
    )


def _in_out(module: nn.Module) -> torch.Tensor:
    """GPT-2's projections as ``[in, out]``: a ``Conv1D`` stores that; the ``nn.Linear`` it becomes for
    quantization (:func:`~heta_core.models.placement.quantize_model`) stores ``[out, in]``."""
    value = weight(module)
    return value.t() if isinstance(module, nn.Linear) else value


def _gpt2_split(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """GPT-2's fused ``c_attn`` (weight ``[d, 3d]`` as in-out, columns q|k|v): ``W_V`` and its bias."""
    fused = _in_out(attn.c_attn)
    width = fused.shape[1] // 3
    return fused[:, 2 * width :], weight(attn.c_attn, "bias")[2 * width :]


def _gpt2_values(attn, hidden, layout):
    weight, bias = _gpt2_split(attn)
    return torch.addmm(bias, hidden.reshape(-1, hidden.shape[-1]), weight)


# GPT-NeoX fuses q,k,v per head: the output of ``query_key_value`` viewed as [..., H, 3*hd] holds
# q | k | v for each head in turn.
def _neox_values(attn, hidden, layout):
    qkv = attn.query_key_value(hidden).view(*hidden.shape[:2], layout.heads, 3 * layout.head_dim)
    return qkv[..., 2 * layout.head_dim :]


def _neox_value_weight(attn, layout):
    fused = weight(attn.query_key_value).view(layout.heads, 3, layout.head_dim, -1)[:, 2]
    return fused.transpose(1, 2)


# Phi-3 fuses q,k,v as contiguous blocks: [H*hd | KV*hd | KV*hd].
def _phi3_value_slice(layout: HeadLayout) -> slice:
    start = (layout.heads + layout.kv_heads) * layout.head_dim
    return slice(start, start + layout.kv_heads * layout.head_dim)


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        "gpt2",
        ("gpt2",),
        "h",
        "attn",
        _values=_gpt2_values,
        _value_weight=lambda attn, lay: _gpt2_split(attn)[0].reshape(-1, lay.kv_heads, lay.head_dim).transpose(0, 1),
        _out_weight=lambda attn, lay: _in_out(attn.c_proj).reshape(lay.heads, lay.head_dim, -1),
    ),
    Adapter("gptj", ("gptj",), "h", "attn", **_separate("v_proj", "out_proj")),
    Adapter(
        "gpt_neox",
        ("gpt_neox",),
        "layers",
        "attention",
        _values=_neox_values,
        _value_weight=_neox_value_weight,
        _out_weight=lambda attn, lay: _linear_out_weight(weight(attn.dense), lay),
    ),
    Adapter(
        "llama",
        ("llama", "mistral", "qwen2", "gemma"),
        "layers",
        "self_attn",
        **_separate("v_proj", "o_proj"),
    ),
    Adapter(
        "phi3",
        ("phi3",),
        "layers",
        "self_attn",
        _values=lambda attn, h, lay: attn.qkv_proj(h)[..., _phi3_value_slice(lay)],
        _value_weight=lambda attn, lay: _linear_value_weight(weight(attn.qkv_proj)[_phi3_value_slice(lay)], lay),
        _out_weight=lambda attn, lay: _linear_out_weight(weight(attn.o_proj), lay),
    ),
)

SUPPORTED_MODEL_TYPES: tuple[str, ...] = tuple(t for a in ADAPTERS for t in a.model_types)


def adapter_for(config) -> Adapter:
    """The adapter for a model config; never a silent fallback."""
    model_type = getattr(config, "model_type", None)
    for adapter in ADAPTERS:
        if model_type in adapter.model_types:
            return adapter
    raise UnsupportedArchitectureError(
        f"unsupported architecture {model_type!r}; supported model types: {', '.join(SUPPORTED_MODEL_TYPES)}"
    )


@contextlib.contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run the enclosed forwards with eager attention (materialised probabilities, double backward)."""
    config = model.config
    previous = config._attn_implementation
    if previous == "eager":
        yield
        return
    config._attn_implementation = "eager"
    try:
        yield
    finally:
        config._attn_implementation = previous


def _contiguous_input(_module, args):
    return (args[0].contiguous(), *args[1:])


def _fused_gelu_tanh(hidden: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.gelu(hidden, approximate="tanh")


class FastEquivalents:
    """Run the enclosed forwards with kernels that compute the same function as the model's own.

    - The LM head gets a contiguous input. With ``logits_to_keep`` it sees a strided slice
      ``hidden[:, -k:]``, which ``linear`` cannot fold into one matrix product: it runs a batched
      product against the vocabulary matrix expanded per row, and under the vmapped second backward
      every probe of every row streams its own copy of the ``[d, V]`` matrix (measured on the GPT-2
      bench shape: ~10 GFLOP/s instead of the matmul rate; the whole Hessian stage 1.4x slower).
    - GPT-2's ``gelu_new`` (a Python expression of 8 element-wise ops, each with its own first and
      second derivative nodes, several falling back to a per-probe loop under the vmapped pass)
      runs as the fused ``gelu(approximate="tanh")`` — the same formula in one kernel.

    The numbers are the same up to floating-point rounding; the reference path keeps the model as is.
    The modules are found once (walking a model's modules costs ~40-150 µs): build one per run and
    enter it around every chunk.
    """

    def __init__(self, model: nn.Module):
        from transformers.activations import NewGELUActivation

        self.activations = [m for m in model.modules() if type(m) is NewGELUActivation]
        self.head = model.get_output_embeddings()
        self._hook = None

    def __enter__(self) -> None:
        if self.head is not None:
            self._hook = self.head.register_forward_pre_hook(_contiguous_input)
        for module in self.activations:
            module.forward = _fused_gelu_tanh

    def __exit__(self, *_exc) -> None:
        for module in self.activations:
            del module.forward
        if self._hook is not None:
            self._hook.remove()
            self._hook = None


def fast_equivalents(model: nn.Module) -> FastEquivalents:
    """A :class:`FastEquivalents` context for ``model``."""
    return FastEquivalents(model)
