"""S_i and its Hessian-vector products against exact second derivatives."""

import itertools

import pytest
import torch

from heta_core import Attributor, HetaConfig
from heta_core.methods.heta.hessian import Curvature, CurvatureOperator, block_products, probes, target_logprob
from heta_core.models.adapters import HeadLayout, adapter_for, eager_attention
from heta_core.runtime.prefix import SuffixRunner
from heta_core.runtime.trace import run_trace

IDS = [5, 9, 14, 20, 7, 30, 11]


def _logprob_fn(model, target_id):
    def g(x):
        return target_logprob(model(inputs_embeds=x[None]).logits[0, -1:], torch.tensor([target_id], device=x.device))[
            0
        ]

    return g


def _full_hessian(model, embeds, target_id):
    with eager_attention(model):
        return torch.autograd.functional.hessian(_logprob_fn(model, target_id), embeds)  # [T, d, T, d]


# GPT-2 computes in pure float64. Llama-family RMSNorm upcasts/downcasts through float32 even in a
# float64 model, which bounds the agreement there at float32 precision.
@pytest.mark.parametrize("family, rtol", [("gpt2", 1e-8), ("qwen2", 1e-5)])
def test_block_hvps_match_autograd_hessian(tiny, family, rtol):
    model = tiny(family).requires_grad_(False)
    embeds = model.get_input_embeddings()(torch.tensor(IDS[:-1], device=model.device)).detach()
    target = IDS[-1]
    hessian = _full_hessian(model, embeds, target)
    size, dim = embeds.shape
    start = 2
    positions = torch.arange(start, size, device=model.device)
    directions = torch.stack([probes(3, int(i), 2, dim) for i in positions], 1).double().to(model.device)  # [m, B, d]
    targets = torch.tensor([target], device=model.device)
    with eager_attention(model):
        trace = run_trace(
            model, adapter_for(model.config), HeadLayout.from_config(model.config), embeds, keep_cache=True
        )
        runner = SuffixRunner(model, trace.kv)
        batched = block_products(
            lambda rows: runner.logits(start, rows, 1),
            embeds,
            embeds,
            targets,
            start,
            positions,
            directions,
            Curvature(),
            None,
        )
        leaf = embeds.clone()[None].requires_grad_(True)
        full = CurvatureOperator(
            lambda rows: model(inputs_embeds=rows).logits[:, -1:],
            embeds[None],
            leaf,
            lambda h: leaf,
            targets,
            "exact",
            None,
        )
        for b, i in enumerate(positions.tolist()):
            for k in range(2):
                exact = hessian[i, :, i, :] @ directions[k, b]
                direction = torch.zeros_like(leaf)
                direction[0, i] = directions[k, b]
                literal = full.apply(direction[None])[0, 0, i]
                atol = rtol * float(exact.abs().max())
                torch.testing.assert_close(batched[k, b], exact, rtol=rtol, atol=atol)
                torch.testing.assert_close(literal, exact, rtol=rtol, atol=atol)


def test_sensitivity_matches_exact_expectation_over_all_sign_vectors(tiny):
    """S_i with large m is within 5% of E‖H_ii r‖_1, enumerated over all 2^d sign vectors (d = 8)."""
    model = tiny(
        "llama", hidden_size=8, intermediate_size=16, num_attention_heads=2, num_key_value_heads=1, head_dim=4
    ).requires_grad_(False)
    embeds = model.get_input_embeddings()(torch.tensor(IDS[:-1], device=model.device)).detach()
    hessian = _full_hessian(model, embeds, IDS[-1])
    size, dim = embeds.shape
    assert dim == 8
    signs = torch.tensor(list(itertools.product((-1.0, 1.0), repeat=dim)), dtype=torch.float64)  # [256, d]
    exact = torch.stack([(signs @ hessian[i, :, i, :].T.cpu()).abs().sum(-1).mean() for i in range(size)])

    result = Attributor(model, config=HetaConfig(num_hvp_samples=4000, seed=1)).attribute(input_ids=IDS)
    relative = (result.hessian.double() - exact).abs() / exact
    assert float(relative.max()) < 0.05, relative
    assert result.meta.hvps == size * 4000
