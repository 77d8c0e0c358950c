"""config.diagnostics: comprehensiveness and sufficiency of the result's own top-k tokens, against a
literal float64 reference (one full forward per masked variant, no batching, no logits_to_keep)."""

import math

import pytest
import torch

from heta_core import ConfigError, HetaConfig
from heta_core.results.diagnostics import describe

from .conftest import TEXT


def reference_logprobs(attributor, result, keep: list[bool], mask: str) -> list[float]:
    """log P(y_j | ...) of every target token with the prompt tokens not in ``keep`` replaced by the mask vector."""
    model = attributor.model
    ids = [t.id for t in result.tokens] + [t.id for t in result.targets]
    n = len(result.tokens)
    embeds = model.get_input_embeddings()(torch.tensor(ids[:-1], device=model.device)).detach()
    fill = torch.zeros_like(embeds[0]) if mask == "zero" else embeds[:n].mean(0)
    masked = embeds.clone()
    for i in range(n):
        if not keep[i]:
            masked[i] = fill
    with torch.no_grad():
        logits = model(inputs_embeds=masked[None], use_cache=False).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return [float(logprobs[n - 1 + j, ids[n + j]]) for j in range(len(result.targets))]


CASES = [
    ({}, {}),
    ({"target_text": " . the cat"}, {"mask": "mean"}),
    ({"target_text": " . the", "target_mode": "each"}, {"method": "occlusion"}),
    ({}, {"method": "integrated_gradients", "ig_steps": 4}),
]


@pytest.mark.parametrize("kwargs, changes", CASES, ids=["heta-next", "heta-sum-mean-mask", "occlusion-each", "ig"])
def test_diagnostics_match_a_literal_reference(make_attributor, kwargs, changes):
    attributor = make_attributor("llama", num_hvp_samples=2, diagnostics=True, **changes)
    result = attributor.attribute(TEXT, **kwargs)
    n, each = len(result.tokens), result.target_mode == "each"
    mask = changes.get("mask", "zero")
    diagnostics = result.diagnostics
    assert diagnostics.mask == mask and len(diagnostics.rows) == (len(result.targets) if each else 1)
    expected_k = [min(1, n), min(3, n), min(5, n), max(1, math.ceil(0.1 * n))]
    full = reference_logprobs(attributor, result, [True] * n, mask)
    for r, row in enumerate(diagnostics.rows):
        scores = [t.score[r] if each else t.score for t in result.tokens]
        order = sorted(range(n), key=lambda i: (-scores[i], i))
        picked = [r] if each else list(range(len(result.targets)))
        assert row.targets == picked

        def p(logprobs):
            return math.exp(sum(logprobs[j] for j in picked))  # noqa: B023 - called in this iteration

        assert row.probability == pytest.approx(p(full), rel=1e-10, abs=1e-15)
        assert [point.k for point in row.points] == expected_k
        assert [point.fraction for point in row.points] == [None, None, None, 0.1]
        for point in row.points:
            top = order[: point.k]
            assert point.tokens == top
            removed = p(reference_logprobs(attributor, result, [i not in top for i in range(n)], mask))
            kept = p(reference_logprobs(attributor, result, [i in top for i in range(n)], mask))
            assert point.removed == pytest.approx(removed, rel=1e-9, abs=1e-15)
            assert point.kept == pytest.approx(kept, rel=1e-9, abs=1e-15)
            assert point.comprehensiveness == pytest.approx(p(full) - removed, rel=1e-9, abs=1e-13)
            assert point.sufficiency == pytest.approx(p(full) - kept, rel=1e-9, abs=1e-13)
    timings = result.meta.timings
    assert timings.diagnostics_s > 0 and timings.compute_s >= timings.diagnostics_s


def test_diagnostics_are_opt_in_and_validated(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    plain = attributor.attribute(TEXT)
    assert plain.diagnostics is None and plain.meta.timings.diagnostics_s is None
    assert plain.to_dict()["diagnostics"] is None
    with pytest.raises(ConfigError) as error:
        HetaConfig(diagnostics="yes")
    assert error.value.field == "diagnostics"
    measured = attributor.attribute(TEXT, config=HetaConfig(num_hvp_samples=2, diagnostics=True))
    # the scores are the same computation: diagnostics only read them
    assert torch.equal(measured.scores, plain.scores)
    assert measured.to_dict()["diagnostics"]["rows"][0]["points"][1]["k"] == 3


def test_describe_puts_the_k3_point_in_words(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2, diagnostics=True)
    result = attributor.attribute(TEXT, target_text=" . the")
    (line,) = describe(result)
    point, p = result.diagnostics.rows[0].points[1], result.diagnostics.rows[0].probability
    assert line == (
        f'removing the 3 top tokens changes p(". the") from {p:.3g} to {point.removed:.3g}; keeping only them gives '
        f"{point.kept:.3g}"
    )
