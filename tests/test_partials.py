"""Partial results: HETA publishes each stage as it finishes (on_partial, iter_stages), scored by the
documented estimator, in the one result schema."""

import pytest
import torch

from heta_core import AttributionResult, HetaConfig
from heta_core.methods.heta.combine import combine, to_simplex

from .conftest import TEXT


def _collect(attributor, **kwargs):
    partials = []
    final = attributor.attribute(TEXT, on_partial=partials.append, **kwargs)
    return partials, final


def test_flow_then_kl_then_the_final_result(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=3)
    partials, final = _collect(attributor)
    assert [p.stages_done for p in partials] == [["flow"], ["flow", "kl"]]
    assert all(p.partial for p in partials) and not final.partial
    assert final.stages_done == ["flow", "kl", "hessian"]
    first, second = partials
    # every partial is a full document of the one schema
    for document in partials:
        assert AttributionResult.model_validate(document.to_dict()) == document
        assert [t.position for t in document.tokens] == [t.position for t in final.tokens]
        assert document.targets == final.targets
    # the terms a partial holds are the final's own numbers; the missing ones are null
    assert first.hessian is None and first.kl is None and second.hessian is None
    torch.testing.assert_close(first.flow, final.flow)
    torch.testing.assert_close(second.kl, final.kl)
    assert first.meta.hvps == 0 and second.meta.hvps == 0 and final.meta.hvps == len(final.tokens) * 3
    n = len(final.tokens)
    beta, gamma = attributor.config.beta, attributor.config.gamma
    flow, kl = final.flow.double(), final.kl.double()
    # the estimator: a missing term is the uniform 1/n on the simplex
    torch.testing.assert_close(first.scores.double(), flow * (beta + gamma) / n, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(second.scores.double(), flow * (beta / n + gamma * to_simplex(kl)), rtol=1e-6, atol=1e-9)
    expected = combine(flow, final.hessian.double(), kl, beta=beta, gamma=gamma, normalize="simplex")
    torch.testing.assert_close(final.scores.double(), expected, rtol=1e-6, atol=1e-9)
    # timings grow stage by stage; a partial reports what it has
    assert first.meta.timings.kl_s == 0 and second.meta.timings.kl_s > 0 and second.meta.timings.hessian_s == 0
    assert first.meta.timings.compute_s <= second.meta.timings.compute_s <= final.meta.timings.compute_s


def test_iter_stages_yields_the_partials_then_the_final(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    partials, final = _collect(attributor)
    documents = list(attributor.iter_stages(TEXT))
    assert [d.stages_done for d in documents] == [["flow"], ["flow", "kl"], ["flow", "kl", "hessian"]]
    assert [d.partial for d in documents] == [True, True, False]
    for got, expected in zip(documents, [*partials, final], strict=True):
        torch.testing.assert_close(got.scores, expected.scores)


def test_closing_iter_stages_early_stops_the_run(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    calls = []
    stages = attributor.iter_stages(TEXT, progress=calls.append)
    first = next(stages)
    assert first.stages_done == ["flow"]
    stages.close()  # stops the helper thread at its next chunk; the attributor stays usable
    assert attributor.attribute(TEXT).stages_done == ["flow", "kl", "hessian"]
    with pytest.raises(ValueError, match="on_partial"):
        next(attributor.iter_stages(TEXT, on_partial=print))


def test_errors_reach_the_iterating_caller(make_attributor):
    attributor = make_attributor("gpt2")
    with pytest.raises(ValueError, match="target_position"):
        list(attributor.iter_stages(TEXT, target_position=99))


@pytest.mark.parametrize(
    "options",
    [
        {"target_text": " the dog", "target_mode": "each"},
        {"config": HetaConfig(num_hvp_samples=2, window=5, overlap=0.5)},
    ],
)
def test_partials_in_each_mode_and_with_windows(make_attributor, options):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    partials, final = _collect(attributor, **options)
    assert [p.stages_done for p in partials] == [["flow"], ["flow", "kl"]]
    torch.testing.assert_close(partials[-1].kl, final.kl)
    torch.testing.assert_close(partials[0].flow, final.flow)
    assert partials[0].scores.shape == final.scores.shape


def test_diagnostics_wait_for_the_final_result(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    partials, final = _collect(attributor, config=HetaConfig(num_hvp_samples=2, diagnostics=True))
    assert [p.stages_done for p in partials] == [["flow"], ["flow", "kl"], ["flow", "kl", "hessian"]]
    assert all(p.diagnostics is None for p in partials)
    assert final.stages_done == ["flow", "kl", "hessian", "diagnostics"] and final.diagnostics is not None
    torch.testing.assert_close(partials[-1].scores, final.scores)


def test_baselines_publish_no_partials(make_attributor):
    attributor = make_attributor("gpt2")
    partials, final = _collect(attributor, config=HetaConfig(method="occlusion"))
    assert partials == [] and final.stages_done == ["baseline"] and not final.partial


def test_a_raising_partial_callback_aborts_the_call(make_attributor):
    attributor = make_attributor("gpt2")

    def stop(_document):
        raise KeyError("enough")

    with pytest.raises(KeyError, match="enough"):
        attributor.attribute(TEXT, on_partial=stop)
