"""Contrastive targets (foil_text / foil_id): every method explains log p(target) − log p(foil).

The literal definitions (autograd of the difference, leave-one-out of the difference), the fast
path against the reference loops, the refusals, and a planted task on heta-demo.
"""

import random

import pytest
import torch

from heta_core import Attributor, HetaConfig, InputError
from heta_core.evaluation.demo.task import examples
from heta_core.methods.registry import METHODS

from .conftest import TEXT, assert_rel_close

PROMPT = "the cat sat on the mat . the dog ate the"  # target " bone", foil " mat" (both one word-level token)


def _contrast(model, embeds, target: int, foil: int):
    logprobs = torch.log_softmax(model(inputs_embeds=embeds[None]).logits[0, -1], -1)
    return logprobs[target] - logprobs[foil]


def _setup(attributor):
    """(ids of TEXT, the foil " mat", the context's input embeddings)."""
    ids = attributor.tokenizer(TEXT)["input_ids"]
    embeds = attributor.model.get_input_embeddings()(torch.tensor(ids[:-1], device=attributor.device)).detach()
    return ids, attributor.tokenizer.convert_tokens_to_ids("mat"), embeds


@torch.no_grad()
def _leave_one_out(attributor) -> tuple[int, torch.Tensor]:
    """(foil, g_c(X) − g_c(X with x_i zeroed) for every context position i), literally."""
    ids, foil, embeds = _setup(attributor)
    base = _contrast(attributor.model, embeds, ids[-1], foil)
    drops = []
    for i in range(len(embeds)):
        masked = embeds.clone()
        masked[i] = 0
        drops.append(float(base - _contrast(attributor.model, masked, ids[-1], foil)))
    return foil, torch.tensor(drops, dtype=torch.float64)


def test_gradient_of_the_difference_equals_autograd(make_attributor):
    attributor = make_attributor("gpt2", method="gradient")
    ids, foil, embeds = _setup(attributor)
    leaf = embeds.clone().requires_grad_(True)
    _contrast(attributor.model, leaf, ids[-1], foil).backward()
    result = attributor.attribute(TEXT, foil_text=" mat")
    assert torch.allclose(result.scores.double(), leaf.grad.norm(dim=-1).cpu(), rtol=1e-6)
    assert result.target.foil.id == foil and result.target.foil.text == "mat"
    plain = attributor.attribute(TEXT)
    assert not torch.allclose(plain.scores, result.scores)  # the foil changes the objective
    ixg = attributor.attribute(TEXT, foil_id=foil, config=HetaConfig(method="input_x_gradient"))
    assert torch.allclose(ixg.scores.double(), (leaf.grad * embeds).sum(-1).cpu(), rtol=1e-6, atol=1e-9)


def test_occlusion_is_leave_one_out_of_the_difference(make_attributor):
    attributor = make_attributor("llama", method="occlusion")
    foil, expected = _leave_one_out(attributor)
    assert torch.allclose(attributor.attribute(TEXT, foil_id=foil).scores.double(), expected, rtol=1e-6, atol=1e-9)


def test_integrated_gradients_completeness_for_the_difference(make_attributor):
    """Σ IG = g(X) − g(masked X) with g the difference (GPT-2: Llama's zero baseline is not resolvable, see
    test_baselines)."""
    attributor = make_attributor("gpt2", method="integrated_gradients", ig_steps=64)
    ids, foil, embeds = _setup(attributor)
    with torch.no_grad():
        gap = _contrast(attributor.model, embeds, ids[-1], foil) - _contrast(
            attributor.model, torch.zeros_like(embeds), ids[-1], foil
        )
    total = float(attributor.attribute(TEXT, foil_id=foil).scores.double().sum())
    assert abs(total - float(gap)) <= 1e-4 * abs(float(gap)), (total, float(gap))


@pytest.mark.parametrize(
    "family, options",
    [("llama", {}), ("gpt2", {"mask": "mean", "flow": "official"}), ("phi3", {"curvature_layers": 1})],
)
def test_heta_fast_equals_reference_with_a_foil(make_attributor, family, options):
    attributor = make_attributor(family, num_hvp_samples=3, seed=5, **options)
    fast = attributor.attribute(PROMPT, target_text=" bone", foil_text=" mat")
    reference = attributor.attribute(
        PROMPT, target_text=" bone", foil_text=" mat", config=attributor.config.replace(strategy="reference")
    )
    plain = attributor.attribute(PROMPT, target_text=" bone")
    for name in ("flow", "hessian", "kl", "scores"):
        assert_rel_close(getattr(fast, name), getattr(reference, name), 1e-4, f"{family} {name}")
    assert torch.equal(fast.flow, plain.flow)  # M_T does not depend on the objective
    assert not torch.allclose(fast.hessian, plain.hessian) and not torch.allclose(fast.kl, plain.kl)
    assert fast.target.foil.logprob == pytest.approx(reference.target.foil.logprob, rel=1e-9)


def test_heta_masking_term_is_the_change_of_the_difference(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=1)
    foil, drops = _leave_one_out(attributor)
    assert torch.allclose(attributor.attribute(TEXT, foil_id=foil).kl.double(), drops.abs(), rtol=1e-5, atol=1e-9)


def test_low_rank_and_window_take_the_foil(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    exact = attributor.attribute(PROMPT, target_text=" bone", foil_text=" mat")
    full_rank = attributor.attribute(
        PROMPT, target_text=" bone", foil_text=" mat", config=attributor.config.replace(low_rank=10_000)
    )
    assert_rel_close(full_rank.hessian, exact.hessian, 1e-3, "full-rank low_rank with a foil")
    covering = attributor.attribute(
        PROMPT, target_text=" bone", foil_text=" mat", config=attributor.config.replace(window=64)
    )
    assert torch.equal(covering.scores, exact.scores)


@pytest.mark.parametrize(
    "kwargs, config, fragment",
    [
        ({"target_text": " bone", "foil_text": " mat", "foil_id": 5}, {}, "at most one"),
        ({"target_text": " bone", "foil_text": " mat dog"}, {}, "exactly one token"),
        ({"target_text": " bone", "foil_text": ""}, {}, "non-empty"),
        ({"target_text": " bone", "foil_id": 10_000}, {}, "outside the vocabulary"),
        ({"target_text": " bone", "foil_id": True}, {}, "integer"),
        ({"target_text": " bone", "foil_text": " bone"}, {}, "target token itself"),
        ({"target_text": " bone .", "foil_text": " mat"}, {}, "one target token"),
        ({"generate": 1, "foil_text": " mat"}, {}, "not generate"),
        ({"target_text": " bone", "foil_text": " mat"}, {"method": "attention_rollout"}, "attention_rollout"),
        ({"target_text": " bone", "foil_text": " mat"}, {"curvature": "ggn"}, "ggn"),
    ],
)
def test_bad_foils_are_refused_before_the_run(make_attributor, kwargs, config, fragment):
    attributor = make_attributor("gpt2")
    cfg = HetaConfig(**config)
    for call in (attributor.estimate, attributor.attribute):
        with pytest.raises(InputError, match=fragment) as error:
            call(PROMPT, config=cfg, **kwargs)
        assert error.value.code == "invalid_foil"


def test_every_method_but_rollout_takes_a_foil(make_attributor):
    attributor = make_attributor("llama", num_hvp_samples=1, ig_steps=4)
    for name in METHODS:
        if name == "attention_rollout":
            continue
        config = attributor.config.replace(method=name)
        result = attributor.attribute(PROMPT, target_text=" bone", foil_text=" mat", config=config)
        assert result.targets[0].foil.text == "mat" and torch.isfinite(result.scores).all()
        each = attributor.attribute(PROMPT, target_text=" bone", foil_text=" mat", target_mode="each", config=config)
        assert torch.allclose(each.scores[0], result.scores)  # one target token: "each" is the same attribution
    assert attributor.attribute(PROMPT, target_text=" bone").target.foil is None


@pytest.fixture(scope="module")
def demo():
    return Attributor.from_pretrained("heta-demo")


def test_planted_task_contrast_moves_mass_to_the_foils_pairs(demo):
    """heta-demo recalls the value stored under the queried key ("c=6 e=6 b=3 h=3 m=6 ? h" → " 3").

    With a foil value stored under other keys (" 6"), the contrast still ranks the queried pair
    first — it is what separates 3 from 6 — and HETA's contrastive scores give the foil's pairs
    (c=6, m=6) several times the share of the pair region's score they get from the plain scores.
    Measured on 30 held-out prompts (seed 700): queried pair top 30/30, the foil's share up 30/30
    (≥ 3.2×, median 10.8×). Asserted on 20 others with a margin.
    """
    rng = random.Random(0)
    top = increased = 0
    cases = examples(20, seed=900)
    for example in cases:
        values = [pair.split("=")[1] for pair in example.words[: example.candidates]]
        foil = rng.choice(sorted(set(values) - {example.answer}))
        foil_pairs = [i for i, value in enumerate(values) if value == foil]
        plain = demo.attribute(example.text, target_text=" " + example.answer)
        contrast = demo.attribute(example.text, target_text=" " + example.answer, foil_text=" " + foil)
        assert contrast.target.foil.text.strip() == foil and contrast.target.foil.logprob < plain.target.logprob

        def share(scores):
            scores = scores.double()[: example.candidates]  # noqa: B023 - called in this iteration
            return float(scores[foil_pairs].sum() / scores.sum())  # noqa: B023

        top += int(contrast.scores[: example.candidates].argmax()) in example.gold
        increased += share(contrast.scores) >= 2 * share(plain.scores)
    assert top >= 18, f"the queried pair ranked first in {top}/20 contrastive attributions"
    assert increased >= 17, f"the foil's pairs gained ≥ 2× share in {increased}/20"
