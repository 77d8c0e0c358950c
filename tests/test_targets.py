"""Target spans ("sum" / "each"), greedy generation, and how they relate (HETA.md "Targets")."""

import pytest
import torch

from heta_core import InputError

from .conftest import assert_rel_close

PROMPT = "she gave him the key to the red"
SPAN = " door . the cat"


def test_sum_equals_aggregated_each_rows(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=3)
    total = attributor.attribute(PROMPT, target_text=SPAN, target_mode="sum")
    each = attributor.attribute(PROMPT, target_text=SPAN, target_mode="each")
    n, k = len(PROMPT.split()), len(SPAN.split())
    assert total.target_mode == "sum" and total.scores.shape == (n,)
    assert each.target_mode == "each" and each.scores.shape == (k, n)
    torch.testing.assert_close(total.kl, each.kl.sum(0), rtol=1e-6, atol=0)
    mean_flow = each.flow.mean(0)
    torch.testing.assert_close(total.flow, mean_flow / mean_flow.sum(), rtol=1e-6, atol=0)
    assert not torch.allclose(total.hessian, each.hessian.sum(0))  # ‖Σ‖ ≠ Σ‖·‖: S is not additive
    assert [t.text for t in total.targets] == SPAN.split()
    assert [t.position for t in total.targets] == list(range(n, n + k))
    assert all(t.text == total.text[t.start : t.end] for t in total.targets)
    assert total.text == PROMPT + SPAN


def test_each_row_is_an_independent_attribution(make_attributor):
    # raw Eq. 5: "simplex" rescales each row over its n prompt tokens, a single attribution over n + j
    attributor = make_attributor("gpt2", num_hvp_samples=2, normalize="none")
    each = attributor.attribute(PROMPT, target_text=SPAN, target_mode="each")
    n = len(PROMPT.split())
    words = (PROMPT + SPAN).split()
    for j in range(len(SPAN.split())):
        single = attributor.attribute(" ".join(words[: n + j + 1]))
        for name in ("flow", "hessian", "kl", "scores"):
            assert_rel_close(getattr(each, name)[j], getattr(single, name)[:n], 1e-5, f"row {j} {name}")
        assert each.targets[j].logprob == pytest.approx(single.target.logprob, rel=1e-9)


@pytest.mark.parametrize("mode", ["sum", "each"])
def test_span_fast_equals_reference(make_attributor, mode):
    attributor = make_attributor("phi3", num_hvp_samples=2)
    fast = attributor.attribute(PROMPT, target_text=SPAN, target_mode=mode)
    reference = attributor.attribute(
        PROMPT, target_text=SPAN, target_mode=mode, config=attributor.config.replace(strategy="reference")
    )
    for name in ("flow", "hessian", "kl", "scores"):
        assert_rel_close(getattr(fast, name), getattr(reference, name), 1e-4, f"{mode} {name}")


def test_span_logprobs_sum_to_the_span_logprob(make_attributor):
    attributor = make_attributor("qwen2", num_hvp_samples=1)
    result = attributor.attribute(PROMPT, target_text=SPAN)
    ids = [t.id for t in result.tokens] + [t.id for t in result.targets]
    with torch.no_grad():
        logits = attributor.model(torch.tensor([ids], device=attributor.device)).logits[0]
    n = len(result.tokens)
    expected = sum(float(torch.log_softmax(logits[n - 1 + j], -1)[ids[n + j]]) for j in range(len(result.targets)))
    assert sum(t.logprob for t in result.targets) == pytest.approx(expected, rel=1e-9)


def test_generate_attributes_the_greedy_continuation(make_attributor):
    attributor = make_attributor("gpt_neox", num_hvp_samples=1)
    result = attributor.attribute(PROMPT, generate=3, target_mode="each")
    ids = [t.id for t in result.tokens]
    with torch.no_grad():
        for target in result.targets:
            assert target.id == int(
                attributor.model(torch.tensor([ids], device=attributor.device)).logits[0, -1].argmax()
            )
            ids.append(target.id)
    eos = attributor.model.generation_config.eos_token_id
    assert len(result.targets) == 3 or result.targets[-1].id == eos
    assert result.scores.shape == (len(result.targets), len(PROMPT.split()))
    assert all(t.logprob <= 0 for t in result.targets)


def test_generation_stops_after_eos(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=1)
    first = attributor.attribute(PROMPT, generate=1).targets[0].id
    attributor.model.generation_config.eos_token_id = first  # the first greedy token is now EOS
    try:
        result = attributor.attribute(PROMPT, generate=5)
    finally:
        attributor.model.generation_config.eos_token_id = 3
    assert [t.id for t in result.targets] == [first]


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"target_text": ""}, "empty_input"),
        ({"target_text": " door", "generate": 2}, "invalid_target"),
        ({"target_text": " door", "target_position": 2}, "invalid_target"),
        ({"target_text": " door", "target_mode": "max"}, "invalid_target"),
        ({"generate": 0}, "invalid_target"),
        ({"generate": 1.5}, "invalid_target"),
    ],
)
def test_bad_target_arguments(make_attributor, kwargs, code):
    with pytest.raises(InputError) as error:
        make_attributor("gpt2").attribute(PROMPT, **kwargs)
    assert error.value.code == code
