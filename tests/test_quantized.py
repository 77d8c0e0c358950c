"""Quantized weights (torchao int8 weight-only): second derivatives with respect to the activations go
through the quantized linear layers — the Hessian-vector products of an int8 model equal those of its
dequantized float copy — and every method runs on an int8 model of every family."""

import copy

import pytest
import torch
from torch import nn

from heta_core import METHODS, Attributor, HetaConfig
from heta_core.errors import ConfigError, InputError
from heta_core.methods.heta.hessian import Curvature, block_products, probes
from heta_core.models.adapters import ADAPTERS, HeadLayout, adapter_for, eager_attention
from heta_core.models.placement import linear_from_conv1d, plain, quantize_model, stored_bytes
from heta_core.models.toymodels import tiny_model
from heta_core.runtime.prefix import SuffixRunner
from heta_core.runtime.trace import run_trace

from .conftest import TEXT

FAMILIES = [a.family for a in ADAPTERS]
IDS = [5, 9, 14, 20, 7, 30, 11, 3, 17]


def quantized(family: str) -> nn.Module:
    model = tiny_model(family, dtype=torch.float32)
    quantize_model(model, "int8")
    return model


def dequantized_copy(model: nn.Module) -> nn.Module:
    """The same model with every quantized weight replaced by the float tensor it stands for."""
    twin = copy.deepcopy(model)
    for module in twin.modules():
        if isinstance(module, nn.Linear) and type(module.weight) is not nn.Parameter:
            module.weight = nn.Parameter(plain(module.weight).clone(), requires_grad=False)
    return twin


def quantized_layers(model: nn.Module) -> int:
    return sum(type(p).__name__ == "Int8Tensor" for p in model.parameters())


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request):
    model = quantized(request.param)
    return model, dequantized_copy(model)


def test_every_linear_layer_is_int8_and_the_copy_is_float(pair):
    model, twin = pair
    linears = sum(isinstance(m, nn.Linear) for m in model.modules())
    # GPT-2's Conv1D projections were turned into nn.Linear first, so they are quantized too
    assert quantized_layers(model) == linears >= 4 * model.config.num_hidden_layers
    assert quantized_layers(twin) == 0


def _hvps(model: nn.Module) -> torch.Tensor:
    """The engine's Hessian-vector products (every position, 3 Rademacher probes) for IDS."""
    model.requires_grad_(False)
    layout, adapter = HeadLayout.from_config(model.config), adapter_for(model.config)
    embeds = model.get_input_embeddings()(torch.tensor(IDS[:-1])).detach()
    n = len(IDS) - 1
    with eager_attention(model):
        trace = run_trace(model, adapter, layout, embeds, keep_cache=True)
        runner = SuffixRunner(model, trace.kv)
        draws = torch.stack([probes(4, i, 3, embeds.shape[1]) for i in range(n)], 1).to(embeds.dtype)
        return block_products(
            lambda rows: runner.logits(0, rows, 1),
            embeds,
            embeds,
            torch.tensor(IDS[-1:]),
            0,
            torch.arange(n),
            draws,
            Curvature(),
            None,
        )


def test_hvps_of_the_int8_model_equal_its_dequantized_copy(pair):
    model, twin = pair
    actual, expected = _hvps(model), _hvps(twin)
    assert actual.shape == expected.shape and float(expected.abs().max()) > 1e-3
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))


def test_heta_terms_of_the_int8_model_equal_its_dequantized_copy(pair, tokenizer):
    model, twin = pair
    config = HetaConfig(num_hvp_samples=4, seed=2)
    got = Attributor(model, tokenizer, config).attribute(TEXT)
    want = Attributor(twin, tokenizer, config).attribute(TEXT)
    assert got.meta.dtype == "float32"
    for name in ("scores", "flow", "hessian", "kl"):
        expected = getattr(want, name)
        torch.testing.assert_close(
            getattr(got, name), expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max()), msg=name
        )


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_on_an_int8_model(pair, tokenizer, method):
    model, twin = pair
    config = HetaConfig(method=method, num_hvp_samples=2, ig_steps=8)
    got = Attributor(model, tokenizer, config).attribute(TEXT)
    want = Attributor(twin, tokenizer, config).attribute(TEXT)
    assert bool(torch.isfinite(got.scores).all()) and float(got.scores.abs().max()) > 0
    torch.testing.assert_close(got.scores, want.scores, rtol=1e-3, atol=1e-4 * float(want.scores.abs().max()))


@pytest.mark.parametrize(
    "changes",
    [{"flow": "official"}, {"curvature_layers": 1}, {"low_rank": 4}, {"strategy": "reference"}],
    ids=lambda c: next(iter(c)),
)
def test_heta_variants_run_on_an_int8_model(tokenizer, changes):
    model = quantized("llama")
    result = Attributor(model, tokenizer, HetaConfig(num_hvp_samples=2, **changes)).attribute(TEXT)
    assert bool(torch.isfinite(result.scores).all()) and float(result.hessian.min()) > 0


def test_int8_ranks_tokens_like_the_float_model(tokenizer):
    """Quantization error is small next to the scores: HETA's ranking barely moves (Spearman ρ)."""
    from heta_core.evaluation.stats import spearman

    config = HetaConfig(num_hvp_samples=4)
    full = Attributor(tiny_model("llama", dtype=torch.float32), tokenizer, config).attribute(TEXT)
    int8 = Attributor(quantized("llama"), tokenizer, config).attribute(TEXT)
    assert spearman(int8.scores, full.scores) > 0.9


def test_gpt2_conv1d_becomes_an_equal_linear():
    model = tiny_model("gpt2", dtype=torch.float64)
    conv = model.transformer.h[0].attn.c_attn
    x = torch.randn(3, conv.weight.shape[0], dtype=torch.float64)
    torch.testing.assert_close(linear_from_conv1d(conv)(x), conv(x), rtol=1e-12, atol=1e-12)


def test_from_pretrained_quantizes_and_reports_it(model_dir):
    attributor = Attributor.from_pretrained(model_dir, dtype="float32", quantize="int8")
    assert attributor.placement.to_dict() == {"dtype": "float32", "quantization": "int8", "device_map": {}}
    assert quantized_layers(attributor.model) > 0
    # the memory estimate counts int8 weights as stored: a byte per weight plus per-row scales
    weights = [m.weight for m in attributor.model.modules() if isinstance(m, nn.Linear)]
    int8_bytes, count = sum(stored_bytes(w) for w in weights), sum(w.numel() for w in weights)
    assert count <= int8_bytes <= 1.5 * count
    rest = sum(p.numel() * p.element_size() for p in attributor.model.parameters() if type(p) is nn.Parameter)
    assert attributor._weight_bytes == int8_bytes + rest
    assert torch.isfinite(attributor.attribute(TEXT).scores).all()
    with pytest.raises(ConfigError, match="not recast"):
        Attributor(attributor.model, attributor.tokenizer, HetaConfig(dtype="float64"))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"quantize": "int3"}, "quantize must be one of int8"),
        ({"quantize": "int8", "dtype": "float64"}, "needs a float32, bfloat16 or float16 model"),
    ],
)
def test_bad_quantization_is_refused(model_dir, kwargs, message):
    with pytest.raises(InputError, match=message) as error:
        Attributor.from_pretrained(model_dir, **kwargs)
    assert error.value.code == "invalid_quantize"


def test_quantize_refuses_offloaded_weights(model_dir, tmp_path):
    mapping = {
        "transformer.wte": "cpu",
        "transformer.wpe": "cpu",
        "transformer.drop": "cpu",
        "transformer.h": "disk",
        "transformer.ln_f": "cpu",
        "lm_head": "cpu",
    }
    with pytest.raises(InputError, match="does not combine with offloaded weights"):
        Attributor.from_pretrained(
            model_dir, dtype="float32", quantize="int8", device_map=mapping, offload_folder=str(tmp_path)
        )
