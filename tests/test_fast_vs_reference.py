"""The fast path (batched, chunked, KV-prefix reuse) equals the literal reference loops."""

import pytest
import torch

from heta_core import HetaConfig
from heta_core.models.toymodels import TINY_CONFIGS

from .conftest import TEXT, assert_rel_close

COMPONENTS = ("flow", "hessian", "kl", "scores")


@pytest.mark.parametrize("family", sorted(TINY_CONFIGS))
def test_fast_equals_reference_on_every_family(make_attributor, family):
    attributor = make_attributor(family, num_hvp_samples=3, seed=7)
    fast = attributor.attribute(TEXT)
    reference = attributor.attribute(TEXT, config=attributor.config.replace(strategy="reference"))
    assert fast.meta.config["strategy"] == "fast" and reference.meta.config["strategy"] == "reference"
    for name in COMPONENTS:
        assert_rel_close(getattr(fast, name), getattr(reference, name), 1e-4, f"{family} {name}")
    assert fast.target.logprob == pytest.approx(reference.target.logprob, rel=1e-9)
    assert float(fast.hessian.min()) > 0 and float(fast.kl.max()) > 0  # a real signal, not zeros


@pytest.mark.parametrize(
    "family, options",
    [
        ("gpt2", {"flow": "official"}),
        ("phi3", {"flow": "official", "mask": "mean"}),
        ("qwen2", {"mask": "token:3", "normalize": "simplex"}),
        ("gpt_neox", {"mask": "mean", "beta": 0.2, "gamma": 0.8}),
    ],
)
def test_fast_equals_reference_with_options(make_attributor, family, options):
    attributor = make_attributor(family, num_hvp_samples=2, **options)
    fast = attributor.attribute(TEXT, target_position=7)
    reference = attributor.attribute(TEXT, target_position=7, config=attributor.config.replace(strategy="reference"))
    assert len(fast.scores) == 7
    for name in COMPONENTS:
        assert_rel_close(getattr(fast, name), getattr(reference, name), 1e-4, f"{family} {options} {name}")


def test_chunking_does_not_change_numbers(make_attributor):
    """One row per chunk (tiny budget) and one chunk for everything give the same S and I."""
    attributor = make_attributor("llama", num_hvp_samples=4)
    small = attributor.attribute(TEXT, config=HetaConfig(num_hvp_samples=4, memory_budget_mb=16))
    large = attributor.attribute(TEXT, config=HetaConfig(num_hvp_samples=4, memory_budget_mb=4096))
    for name in COMPONENTS:
        torch.testing.assert_close(getattr(small, name), getattr(large, name), rtol=1e-6, atol=0)


def test_fast_equivalents_compute_the_same_function_and_leave_the_model_as_it_was(tiny, device):
    from transformers.activations import NewGELUActivation

    from heta_core.models.adapters import fast_equivalents

    model = tiny("gpt2", dtype=torch.float64)
    activations = [m for m in model.modules() if type(m) is NewGELUActivation]
    assert activations, "the tiny GPT-2 uses gelu_new"
    embeds = torch.randn(
        3,
        7,
        model.config.n_embd,
        dtype=torch.float64,
        device=device,
    )
    head_inputs = []
    watch = model.get_output_embeddings().register_forward_hook(lambda _m, args, _out: head_inputs.append(args[0]))
    try:
        plain = model(inputs_embeds=embeds, logits_to_keep=1).logits
        with fast_equivalents(model):
            fused = model(inputs_embeds=embeds, logits_to_keep=1).logits
    finally:
        watch.remove()
    torch.testing.assert_close(fused, plain, rtol=1e-12, atol=1e-12)
    # the strided slice hidden[:, -1:] reaches the head contiguous inside the context only
    assert not head_inputs[0].is_contiguous() and head_inputs[1].is_contiguous()
    assert all("forward" not in vars(m) for m in activations)
    assert not model.get_output_embeddings()._forward_pre_hooks
