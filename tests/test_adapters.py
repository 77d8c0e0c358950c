"""Value vectors, W_O slices and attention probabilities per architecture, against hand computations."""

import pytest
import torch
from transformers import BloomConfig

from heta_core import Attributor, UnsupportedArchitectureError
from heta_core.methods.heta.flow import head_value_norms, official_value_norms
from heta_core.models.adapters import SUPPORTED_MODEL_TYPES, HeadLayout, adapter_for, eager_attention
from heta_core.models.toymodels import random_model
from heta_core.runtime.trace import run_trace

IDS = [5, 9, 14, 20, 7, 30]


def _trace(model):
    embeds = model.get_input_embeddings()(torch.tensor(IDS, device=model.device)).detach()
    with eager_attention(model):
        return embeds, run_trace(
            model,
            adapter_for(model.config),
            HeadLayout.from_config(model.config),
            embeds,
            keep_cache=False,
            full_attention=True,
        )


def _norms_by_hand(values_per_head, out_proj_weight, heads, head_dim):
    """‖value_h · W_O^{(h)}‖_1 with W_O^{(h)} = columns h·hd:(h+1)·hd of an nn.Linear weight [d, H·hd]."""
    return torch.stack(
        [
            (values_per_head[h] @ out_proj_weight[:, h * head_dim : (h + 1) * head_dim].T).abs().sum(-1)
            for h in range(heads)
        ]
    )


@pytest.mark.parametrize("family", ["llama", "qwen2", "gemma"])
def test_gqa_value_norms_by_hand(tiny, family):
    """KV heads < heads: head h reads kv head h // (H/KV); Qwen2's value bias is included."""
    model = tiny(family)
    layout = HeadLayout.from_config(model.config)
    assert layout.kv_heads < layout.heads
    embeds, trace = _trace(model)
    attn = model.model.layers[0].self_attn
    hidden = model.model.layers[0].input_layernorm(embeds)  # what layer 0's attention reads
    values = hidden @ attn.v_proj.weight.T
    if attn.v_proj.bias is not None:
        values = values + attn.v_proj.bias
    group = layout.heads // layout.kv_heads
    per_head = [
        values[:, (h // group) * layout.head_dim : (h // group + 1) * layout.head_dim] for h in range(layout.heads)
    ]
    expected = _norms_by_hand(per_head, attn.o_proj.weight, layout.heads, layout.head_dim)
    adapter = adapter_for(model.config)
    actual = head_value_norms(trace.values[0], adapter.out_weight(attn, layout), layout)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)
    if family == "qwen2":
        assert attn.v_proj.bias is not None and float(attn.v_proj.bias.detach().abs().sum()) > 0


def test_fused_qkv_value_norms_by_hand_phi3(tiny):
    """Phi-3's qkv_proj rows are [q: H·hd | k: KV·hd | v: KV·hd]."""
    model = tiny("phi3")
    layout = HeadLayout.from_config(model.config)
    embeds, trace = _trace(model)
    attn = model.model.layers[0].self_attn
    hidden = model.model.layers[0].input_layernorm(embeds)
    v_rows = attn.qkv_proj.weight[(layout.heads + layout.kv_heads) * layout.head_dim :]
    values = hidden @ v_rows.T
    group = layout.heads // layout.kv_heads
    per_head = [
        values[:, (h // group) * layout.head_dim : (h // group + 1) * layout.head_dim] for h in range(layout.heads)
    ]
    expected = _norms_by_hand(per_head, attn.o_proj.weight, layout.heads, layout.head_dim)
    actual = head_value_norms(trace.values[0], adapter_for(model.config).out_weight(attn, layout), layout)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


def test_fused_qkv_value_norms_by_hand_gpt2_and_neox(tiny):
    gpt2 = tiny("gpt2")
    layout = HeadLayout.from_config(gpt2.config)
    embeds, trace = _trace(gpt2)
    block = gpt2.transformer.h[0]
    positions = gpt2.transformer.wpe(torch.arange(len(IDS), device=gpt2.device))
    qkv = block.ln_1(embeds + positions) @ block.attn.c_attn.weight + block.attn.c_attn.bias  # Conv1D: x W + b
    width = layout.heads * layout.head_dim
    values = qkv[:, 2 * width :]
    per_head = [values[:, h * layout.head_dim : (h + 1) * layout.head_dim] for h in range(layout.heads)]
    expected = _norms_by_hand(per_head, block.attn.c_proj.weight.T, layout.heads, layout.head_dim)
    actual = head_value_norms(trace.values[0], adapter_for(gpt2.config).out_weight(block.attn, layout), layout)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)

    neox = tiny("gpt_neox")
    layout = HeadLayout.from_config(neox.config)
    embeds, trace = _trace(neox)
    layer = neox.gpt_neox.layers[0]
    fused = (
        layer.input_layernorm(embeds) @ layer.attention.query_key_value.weight.T + layer.attention.query_key_value.bias
    )
    hd = layout.head_dim
    per_head = [fused[:, h * 3 * hd + 2 * hd : (h + 1) * 3 * hd] for h in range(layout.heads)]  # q|k|v per head
    expected = _norms_by_hand(per_head, layer.attention.dense.weight, layout.heads, hd)
    actual = head_value_norms(trace.values[0], adapter_for(neox.config).out_weight(layer.attention, layout), layout)
    torch.testing.assert_close(actual, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("family", ["llama", "phi3", "gpt2"])
def test_official_value_norms_use_residual_stream_without_bias(tiny, family):
    model = tiny(family)
    layout = HeadLayout.from_config(model.config)
    adapter = adapter_for(model.config)
    embeds, trace = _trace(model)
    attn = adapter.attention(adapter.blocks(model)[1])
    residual = trace.block_inputs[1]
    value_weight = adapter.value_weight(attn, layout)  # [KV, d, hd]
    group = layout.heads // layout.kv_heads
    expected = torch.stack(
        [
            (residual @ value_weight[h // group] @ adapter.out_weight(attn, layout)[h]).abs().sum(-1)
            for h in range(layout.heads)
        ]
    )
    torch.testing.assert_close(
        official_value_norms(residual, value_weight, adapter.out_weight(attn, layout), layout), expected
    )
    # the value weight really is W_V: residual @ W_V (+ bias) reproduces the model's own value vectors
    # for the layer's normalised input
    norm = adapter.blocks(model)[1]
    normed = (norm.ln_1 if family == "gpt2" else norm.input_layernorm)(residual)
    bias = adapter.values(
        attn, torch.zeros(1, 1, residual.shape[-1], dtype=residual.dtype, device=residual.device), layout
    )[0, 0]
    direct = torch.einsum("td,kde->tke", normed, value_weight) + bias
    torch.testing.assert_close(direct, trace.values[1])


def test_attention_probabilities_are_causal_rows(tiny):
    model = tiny("mistral")
    _, trace = _trace(model)
    assert len(trace.attentions) == model.config.num_hidden_layers
    for probs in trace.attentions:
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1], dtype=probs.dtype, device=probs.device))
        assert float(probs.triu(1).abs().max()) == 0.0


def test_sdpa_loaded_model_gives_eager_numbers_and_keeps_its_setting(tiny, tokenizer):
    eager = Attributor(tiny("llama", attn_implementation="eager"), tokenizer).attribute("the cat sat on the mat")
    sdpa_model = tiny("llama", attn_implementation="sdpa")
    sdpa = Attributor(sdpa_model, tokenizer).attribute("the cat sat on the mat")
    for name in ("flow", "hessian", "kl", "scores"):
        torch.testing.assert_close(getattr(sdpa, name), getattr(eager, name), rtol=1e-5, atol=1e-7)
    assert sdpa_model.config._attn_implementation == "sdpa"


def test_unsupported_architecture_lists_supported_ones():
    bloom = random_model(BloomConfig(n_layer=1, hidden_size=8, n_head=2, vocab_size=40), attn_implementation="eager")
    with pytest.raises(UnsupportedArchitectureError) as error:
        Attributor(bloom)
    message = str(error.value)
    assert "bloom" in message
    for model_type in SUPPORTED_MODEL_TYPES:
        assert model_type in message
    assert error.value.code == "unsupported_architecture"
