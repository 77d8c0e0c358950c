"""Evaluation metrics on hand-computed cases, and the model-based ones against literal recomputation."""

import math

import pytest
import torch

from heta_core.evaluation import bootstrap_ci, faithfulness, metrics

from .conftest import TEXT

S = torch.tensor([0.1, 0.5, 0.3, 0.9])


def test_hit_at_k_by_hand():
    assert metrics.hit_at_k(S, [1], 1) == 0.0  # top-1 is position 3
    assert metrics.hit_at_k(S, [1], 2) == 1.0  # top-2 = {3, 1}
    assert metrics.hit_at_k(S, [1], 1, candidates=[0, 1, 2]) == 1.0  # position 3 is not a candidate
    assert metrics.hit_at_k(S, [0, 2], 3) == 0.5  # top-3 = {3, 1, 2}: one of two gold in min(3, 2) slots
    assert metrics.hit_at_k(torch.tensor([1.0, 1.0, 0.0]), [0], 1) == 1.0  # ties: earlier position first
    with pytest.raises(ValueError):
        metrics.hit_at_k(S, [], 1)


def test_f1_dsa_and_aopc_by_hand():
    assert metrics.f1(S, [3, 1]) == 1.0
    assert metrics.f1(S, [0, 2]) == 0.0
    assert metrics.f1(S, [3, 0]) == 0.5  # top-2 {3, 1}: P = R = 1/2
    assert metrics.f1(S, [3, 0], candidates=[0, 3]) == 1.0
    scores = torch.tensor([1.0, -1.0, 2.0, 0.0])  # |a| / Σ|a| = [.25, .25, .5, 0]
    assert metrics.dsa(scores, [2], [0, 1]) == pytest.approx(0.0)
    assert metrics.dsa(scores, [0, 2], [1]) == pytest.approx(0.5)
    assert metrics.dsa(torch.zeros(3), [0], [1]) == 0.0
    assert metrics.aopc([0.2, 0.4]) == pytest.approx(0.3)


def test_curve_counts_and_bootstrap():
    assert faithfulness.curve_counts(5, 20) == [1, 2, 3, 4, 5]
    assert faithfulness.curve_counts(40, 20) == list(range(2, 41, 2))
    assert bootstrap_ci([0.5] * 10, 200, 0) == (0.5, 0.5, 0.5)
    mean, low, high = bootstrap_ci([0.0, 1.0, math.nan, 1.0, 0.0], 500, 0)
    assert mean == 0.5 and 0.0 <= low < 0.5 < high <= 1.0
    assert all(math.isnan(v) for v in bootstrap_ci([math.nan], 10, 0))


@pytest.fixture
def probe(make_attributor):
    attributor = make_attributor("gpt2")
    ids = attributor.tokenizer(TEXT)["input_ids"]
    embeds = attributor.model.get_input_embeddings()(torch.tensor(ids[:-1])).detach()
    return faithfulness.Perturbations(attributor.model, embeds, ids[-1], torch.zeros_like(embeds[0]), batch=3)


def _p(probe, embeds):
    with torch.no_grad():
        return float(torch.softmax(probe.model(inputs_embeds=embeds[None]).logits[0, -1], -1)[probe.target])


def test_perturbed_probabilities_are_literal_forwards(probe):
    n = probe.embeds.shape[0]
    assert float(probe.full) == pytest.approx(_p(probe, probe.embeds), rel=1e-12)
    assert float(probe.empty) == pytest.approx(_p(probe, torch.zeros_like(probe.embeds)), rel=1e-12)
    keep = torch.rand(7, n) > 0.5  # more rows than the batch of 3
    expected = [_p(probe, torch.where(row[:, None], probe.embeds, 0.0)) for row in keep]
    assert probe.probability(keep).tolist() == pytest.approx(expected, rel=1e-12)


def test_hard_and_curves_against_a_literal_loop(probe):
    n = probe.embeds.shape[0]
    scores = torch.arange(n, dtype=torch.float64).flip(0)  # the ranking is 0, 1, 2, …
    prefix = lambda c: torch.arange(n) < c  # noqa: E731 - the top-c tokens
    hard = faithfulness.hard(probe, scores, 3)
    kept = _p(probe, torch.where(prefix(3)[:, None], probe.embeds, 0.0))
    removed = _p(probe, torch.where(~prefix(3)[:, None], probe.embeds, 0.0))
    assert hard["comp"] == pytest.approx(float(probe.full) - removed) and hard["suff"] == pytest.approx(
        float(probe.full) - kept
    )
    curves = faithfulness.deletion_insertion(probe, scores, steps=4)
    counts = faithfulness.curve_counts(n, 4)
    deletion = [float(probe.full) - _p(probe, torch.where(~prefix(c)[:, None], probe.embeds, 0.0)) for c in counts]
    insertion = [_p(probe, torch.where(prefix(c)[:, None], probe.embeds, 0.0)) - float(probe.empty) for c in counts]
    assert curves["deletion_aopc"] == pytest.approx(sum(deletion) / len(counts))
    assert curves["insertion_aopc"] == pytest.approx(sum(insertion) / len(counts))


@pytest.fixture(scope="module")
def demo_probe():
    """heta-demo on one of its prompts: p(X) ≈ 1 and the empty prompt far below, so Soft-NC/NS are defined."""
    from heta_core import Attributor

    attributor = Attributor.from_pretrained("heta-demo", device="cpu")
    vocab = attributor.tokenizer.get_vocab()
    ids = [vocab[w] for w in "c=6 e=6 b=3 h=3 m=6 ? h".split()]
    embeds = attributor.model.get_input_embeddings()(torch.tensor(ids)).detach()
    return faithfulness.Perturbations(attributor.model, embeds, vocab["3"], torch.zeros_like(embeds[0]))


def test_soft_metrics_at_their_limits(demo_probe):
    probe = demo_probe
    n = probe.embeds.shape[0]
    assert float(probe.full - probe.empty) >= faithfulness.SOFT_MIN_GAP  # defined for this fixture
    # equal scores: q = 1 everywhere, so Soft-NS keeps everything (=1) and Soft-NC removes everything (=1)
    flat = faithfulness.soft(probe, torch.ones(n), samples=3, seed=0)
    assert flat == {"soft_ns": pytest.approx(1.0), "soft_nc": pytest.approx(1.0)}
    # q = 1 on some tokens, 0 elsewhere: Soft-NS keeps exactly those, Soft-NC removes exactly those
    one = torch.zeros(n, dtype=torch.float64)
    one[2] = 1.0
    s0 = 1 - max(0.0, float(probe.full - probe.empty))
    one[3] = 1.0  # positions 2 and 3 (the answering pair) kept / removed together: a non-trivial value
    only = _p(probe, torch.where(((torch.arange(n) == 2) | (torch.arange(n) == 3))[:, None], probe.embeds, 0.0))
    without = _p(probe, torch.where(((torch.arange(n) != 2) & (torch.arange(n) != 3))[:, None], probe.embeds, 0.0))
    soft = faithfulness.soft(probe, one, samples=2, seed=1)
    assert soft["soft_ns"] == pytest.approx((1 - max(0.0, float(probe.full) - only) - s0) / (1 - s0))
    assert soft["soft_nc"] == pytest.approx(max(0.0, float(probe.full) - without) / (1 - s0))
    scores = torch.linspace(0, 1, n)
    assert faithfulness.soft(probe, scores, 4, seed=7) == faithfulness.soft(probe, scores, 4, seed=7)


def test_soft_metrics_are_undefined_when_the_empty_prompt_predicts_as_well(probe):
    probe.empty = probe.full - faithfulness.SOFT_MIN_GAP / 2
    soft = faithfulness.soft(probe, torch.linspace(0, 1, probe.embeds.shape[0]), 2, 0)
    assert math.isnan(soft["soft_nc"]) and math.isnan(soft["soft_ns"])
