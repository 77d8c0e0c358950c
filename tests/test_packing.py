"""Several attributions packed into shared batches (Attributor.attribute_many) equal solo runs."""

import pytest
import torch

from heta_core import HetaConfig, InputError
from heta_core.models.toymodels import TINY_CONFIGS

from .conftest import TEXT

COMPONENTS = ("scores", "flow", "hessian", "kl")
WORDS = TEXT.split()
# prompts of different lengths: the padded layout, prefixes of different lengths, several chunks
PROMPTS = [
    {"text": " ".join(WORDS[:5])},
    {"text": " ".join(WORDS[:9])},
    {"text": TEXT},
    {"text": " ".join(WORDS[:7]), "target_text": " the dog", "target_mode": "each"},
    {"text": " ".join(WORDS[:6]), "target_text": " the bone"},
]


def _same(packed, solo, tolerance=1e-6, what=""):
    """Two result documents agree (their values are float32: the float64 numbers are compared below)."""
    assert packed.tokens and [t.id for t in packed.tokens] == [t.id for t in solo.tokens]
    for name in COMPONENTS:
        a, b = getattr(packed, name), getattr(solo, name)
        assert (a is None) == (b is None), f"{what} {name}"
        if a is not None:
            torch.testing.assert_close(
                a.double(), b.double(), rtol=tolerance, atol=tolerance * float(b.abs().max()), msg=f"{what} {name}"
            )
    assert packed.meta.hvps == solo.meta.hvps


def _count_passes(model):
    """Counts forward passes of the model's first block (every pass goes through it)."""
    counter = {"passes": 0}
    block = model.transformer.h[0] if hasattr(model, "transformer") else model.model.layers[0]
    handle = block.register_forward_pre_hook(lambda *_: counter.__setitem__("passes", counter["passes"] + 1))
    return counter, handle


def _terms(attributor, prompts, packing=None):
    """The pipeline's float64 Parts of each prompt: packed together, or each alone (``packing=None``)."""
    from heta_core.attributor import _DEFAULTS
    from heta_core.methods.heta import pipeline
    from heta_core.running import _inputs_only
    from heta_core.runtime.progress import Progress

    calls = []
    for prompt in prompts:
        cfg, prepared, _ = attributor._prepare(None, {**_DEFAULTS, **prompt})
        calls.append((prepared.request, cfg, Progress(None, 1), None))
    with _inputs_only(attributor.model):
        if packing is None:
            return [pipeline.run(attributor.handle, *call) for call in calls]
        return pipeline.run_many(attributor.handle, calls, packing)


# GPT-2 computes in pure float64. The others pass parts of a float64 model through float32 (Llama-family
# RMSNorm, GPT-J's and GPT-NeoX's attention scores: see test_hessian), where a padded row's longer sums
# round differently: float32 precision bounds their agreement
@pytest.mark.parametrize("family, tolerance", [("gpt2", 1e-10), ("gptj", 1e-6), ("gpt_neox", 1e-6), ("llama", 1e-6)])
@pytest.mark.parametrize("packing", ["pad", "length"])
def test_packed_terms_equal_solo_terms_in_float64(make_attributor, family, tolerance, packing):
    attributor = make_attributor(family, dtype=torch.float64, num_hvp_samples=3, seed=2)
    prompts = PROMPTS + [{"text": TEXT}, {"text": " ".join(WORDS[:9]), "target_text": " the"}]  # two geometries twice
    for i, (packed, solo) in enumerate(
        zip(_terms(attributor, prompts, packing), _terms(attributor, prompts), strict=True)
    ):
        assert packed.values.keys() == solo.values.keys() == {"score", "flow", "hessian", "kl"}
        for name, value in solo.values.items():
            assert value.dtype == torch.float64
            scale = float(value.abs().max())
            assert float((packed.values[name] - value).abs().max()) <= tolerance * scale, (
                f"{family} {packing} prompt {i} {name}"
            )
        assert packed.hvps == solo.hvps and packed.logprobs == pytest.approx(solo.logprobs, rel=1e-12)


@pytest.mark.parametrize("packing", ["pad", "length"])
def test_packed_results_equal_solo_runs(make_attributor, packing):
    attributor = make_attributor("gpt2", dtype=torch.float64, num_hvp_samples=3, seed=2)
    solo = [attributor.attribute(**prompt) for prompt in PROMPTS]
    counter, handle = _count_passes(attributor.model)
    try:
        packed = attributor.attribute_many(PROMPTS, packing=packing)
        passes = counter["passes"]
        counter["passes"] = 0
        for prompt in PROMPTS:
            attributor.attribute(**prompt)
        alone = counter["passes"]
    finally:
        handle.remove()
    for i, (a, b) in enumerate(zip(packed, solo, strict=True)):
        _same(a, b, what=f"{packing} prompt {i}")
    # packing shares passes: padding packs every prompt's chunk of a stage into one batch; by length only
    # prompts of one geometry share (here: none of these five)
    assert passes < alone if packing == "pad" else passes <= alone


@pytest.mark.parametrize("family", sorted(set(TINY_CONFIGS) & {"llama", "gpt_neox", "phi3", "gptj"}))
def test_packing_equals_solo_on_every_family(make_attributor, family):
    attributor = make_attributor(family, num_hvp_samples=2, seed=1)
    prompts = PROMPTS[:3]
    solo = [attributor.attribute(**p) for p in prompts]
    for a, b in zip(attributor.attribute_many(prompts), solo, strict=True):
        _same(a, b, what=family)


def test_packing_mixes_options_safely(make_attributor):
    """Different configs in one call: chunks share a batch only where their operator is the same."""
    attributor = make_attributor("gpt2", dtype=torch.float64)
    calls = [
        {"text": TEXT, "config": HetaConfig(num_hvp_samples=2)},
        {"text": TEXT, "config": HetaConfig(num_hvp_samples=2, curvature_layers=1)},
        {"text": " ".join(WORDS[:8]), "config": HetaConfig(num_hvp_samples=2, curvature="ggn")},
        {
            "text": " ".join(WORDS[:8]),
            "target_text": " the",
            "foil_text": " a",
            "config": HetaConfig(num_hvp_samples=2),
        },
        {"text": TEXT, "config": HetaConfig(num_hvp_samples=2, window=6, overlap=0.5)},
        {"text": " ".join(WORDS[:6]), "config": HetaConfig(num_hvp_samples=2, strategy="reference")},
        {"text": " ".join(WORDS[:6]), "config": HetaConfig(num_hvp_samples=2, low_rank=4)},
        {"text": " ".join(WORDS[:6]), "config": HetaConfig(method="occlusion")},
        {"text": TEXT, "config": HetaConfig(num_hvp_samples=4)},
    ]
    packed = attributor.attribute_many(calls)
    for call, result in zip(calls, packed, strict=True):
        solo = attributor.attribute(**call)
        _same(result, solo, what=str(call["config"]))


def test_one_call_failing_or_cancelled_never_fails_the_others(make_attributor):
    attributor = make_attributor("gpt2", dtype=torch.float64, num_hvp_samples=2)

    class Cancelled(Exception):
        pass

    def cancel_in_the_hessian_stage(fraction):
        if fraction > 0.5:
            raise Cancelled

    calls = [
        {"text": TEXT},
        {"text": TEXT, "progress": cancel_in_the_hessian_stage},
        {"text": "x"},  # one token: nothing to explain
        {"text": TEXT, "target_position": 99},
        {"text": TEXT, "colour": "red"},
        {"text": " ".join(WORDS[:6])},
    ]
    outcomes = attributor.attribute_many(calls)
    assert isinstance(outcomes[1], Cancelled)
    assert isinstance(outcomes[2], InputError) and outcomes[2].code == "too_short"
    assert isinstance(outcomes[3], InputError) and outcomes[3].code == "target_out_of_range"
    assert isinstance(outcomes[4], InputError) and "colour" in str(outcomes[4])
    _same(outcomes[0], attributor.attribute(text=TEXT))
    _same(outcomes[5], attributor.attribute(text=" ".join(WORDS[:6])))


def test_a_batch_that_fails_is_rerun_alone(make_attributor, monkeypatch):
    """A failure inside a shared batch is charged to the call whose chunk fails on its own."""
    from heta_core.methods.heta import hessian_chunks

    attributor = make_attributor("gpt2", dtype=torch.float64, num_hvp_samples=2)
    poisoned = len(attributor.tokenizer(" ".join(WORDS[:6]))["input_ids"]) - 1
    original = hessian_chunks.HvpChunk.run

    def fail_for_one_prompt(self):
        if self.embeds.shape[0] == poisoned:
            raise RuntimeError("boom")
        return original(self)

    monkeypatch.setattr(hessian_chunks.HvpChunk, "run", fail_for_one_prompt)
    monkeypatch.setattr(
        hessian_chunks.HvpChunk,
        "run_together",
        staticmethod(lambda items, packing: (_ for _ in ()).throw(RuntimeError("batch"))),
    )
    outcomes = attributor.attribute_many([{"text": TEXT}, {"text": " ".join(WORDS[:6])}, {"text": " ".join(WORDS[:9])}])
    assert isinstance(outcomes[1], RuntimeError) and str(outcomes[1]) == "boom"
    monkeypatch.undo()
    _same(outcomes[0], attributor.attribute(text=TEXT))
    _same(outcomes[2], attributor.attribute(text=" ".join(WORDS[:9])))


def test_unknown_packing_is_refused(make_attributor):
    with pytest.raises(ValueError, match="packing"):
        make_attributor("gpt2").attribute_many([{"text": TEXT}], packing="tight")


def test_each_call_is_answered_when_its_own_work_is_done(make_attributor):
    """A small request packed with a large one is not held back: on_outcome reports it first."""
    attributor = make_attributor("gpt2", dtype=torch.float64)
    order = []
    calls = [
        {"text": TEXT, "config": HetaConfig(num_hvp_samples=64, memory_budget_mb=16)},  # many chunks of HVPs
        {"text": " ".join(WORDS[:4]), "config": HetaConfig(num_hvp_samples=1)},
        {"text": "x"},  # refused at once
    ]
    outcomes = attributor.attribute_many(calls, on_outcome=lambda index, outcome: order.append(index))
    assert order == [2, 1, 0]
    assert isinstance(outcomes[2], InputError) and outcomes[0].meta.hvps > outcomes[1].meta.hvps
