"""``Attributor.estimate`` predicts the work of ``attribute`` before running it."""

import pytest

from heta_core import HetaConfig, InputError
from heta_core.cli.bench_long import counting_forward_tokens

from .conftest import TEXT


@pytest.mark.parametrize(
    "kwargs, changes",
    [
        ({}, {}),
        ({}, {"memory_budget_mb": 16}),
        ({"target_text": " . the cat"}, {}),
        ({"target_text": " . the cat", "target_mode": "each"}, {}),
        ({}, {"low_rank": 8}),
        ({}, {"curvature_layers": 1, "low_rank": 8}),
        ({}, {"window": 5, "overlap": 0.4}),
        ({}, {"strategy": "reference"}),
        ({"target_text": " . the", "target_mode": "each"}, {"strategy": "reference"}),
        ({"target_text": " . the", "target_mode": "each"}, {"strategy": "reference", "low_rank": 4}),
        ({}, {"method": "gradient"}),
        ({}, {"method": "integrated_gradients", "ig_steps": 5, "memory_budget_mb": 16}),
        ({"target_text": " . the", "target_mode": "each"}, {"method": "occlusion"}),
        ({"target_text": " . the cat"}, {"method": "attention_rollout"}),
        ({}, {"method": "input_x_gradient"}),
        # diagnostics: the extra full-length forwards are counted too
        ({}, {"diagnostics": True}),
        ({"target_text": " . the", "target_mode": "each"}, {"diagnostics": True, "memory_budget_mb": 16}),
        ({"target_text": " . the cat"}, {"method": "occlusion", "diagnostics": True}),
    ],
)
def test_estimate_matches_the_run(make_attributor, kwargs, changes):
    attributor = make_attributor("llama", num_hvp_samples=3, **changes)
    estimate = attributor.estimate(TEXT, **kwargs)
    with counting_forward_tokens(attributor) as counter:
        result = attributor.attribute(TEXT, **kwargs)
    assert estimate.hvps == (result.meta.hvps or 0)  # baselines: no HVPs (null in the result)
    assert estimate.forward_tokens == counter["tokens"]
    assert estimate.prompt_tokens == len(result.tokens) and estimate.target_tokens == len(result.targets)
    weights = sum(p.numel() * p.element_size() for p in attributor.model.parameters())
    assert estimate.peak_bytes > weights


def test_estimate_for_generation_assumes_every_token(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    estimate = attributor.estimate(TEXT, generate=4)
    assert estimate.target_tokens == 4 and estimate.hvps == len(TEXT.split()) * 2


def test_estimate_grows_with_length_and_rejects_bad_input(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    short, long = attributor.estimate(input_ids=list(range(4, 14))), attributor.estimate(input_ids=list(range(4, 34)))
    assert long.hvps > short.hvps and long.forward_tokens > short.forward_tokens and long.peak_bytes > short.peak_bytes
    assert set(long.to_dict()) == {
        "prompt_tokens",
        "target_tokens",
        "hvps",
        "forward_tokens",
        "peak_bytes",
        "seconds",
        "plan",
    }
    assert long.seconds > short.seconds > 0 and long.plan is None  # the plan is a budget's
    with pytest.raises(InputError):
        attributor.estimate("")
    low_rank = attributor.estimate(input_ids=list(range(4, 34)), config=HetaConfig(low_rank=4))
    assert low_rank.hvps == 2 * (4 + 8) < long.hvps


@pytest.mark.parametrize(
    "changes",
    [{}, {"memory_budget_mb": 16}, {"low_rank": 4}, {"strategy": "reference"}, {"window": 5}, {"diagnostics": True}],
)
def test_progress_is_reported_per_chunk_and_reaches_one(make_attributor, changes):
    attributor = make_attributor("gpt2", num_hvp_samples=2, **changes)
    seen = []
    attributor.attribute(TEXT, target_text=" . the", target_mode="each", progress=seen.append)
    assert seen[0] == 0.0 and seen[-1] == 1.0
    assert seen == sorted(seen) and len(seen) >= 2
    assert seen[-2] < 1.0  # the plan counted every chunk: no early 100%


def test_raising_from_progress_aborts_and_restores_the_model(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=2)
    attributor.model.config._attn_implementation = "sdpa"
    calls = []

    def cancel(fraction):
        calls.append(fraction)
        if len(calls) == 3:
            raise KeyboardInterrupt("cancelled")

    with pytest.raises(KeyboardInterrupt):
        attributor.attribute(TEXT, config=HetaConfig(num_hvp_samples=2, memory_budget_mb=16), progress=cancel)
    assert len(calls) == 3
    assert attributor.model.config._attn_implementation == "sdpa"
    assert all(p.requires_grad for p in attributor.model.parameters())
    attributor.model.config._attn_implementation = "eager"
