"""Long-context approximations: exact in their limits, and their agreement with the exact estimator."""

import pytest
import torch

from heta_core import ConfigError, HetaConfig
from heta_core.cli.bench_long import approximation_agreement
from heta_core.methods.heta.hessian import Curvature, block_products, probes
from heta_core.models.adapters import HeadLayout, adapter_for, eager_attention
from heta_core.runtime.prefix import SuffixRunner
from heta_core.runtime.trace import run_trace

from .conftest import TEXT, assert_rel_close

IDS = [5, 9, 14, 20, 7, 30, 11]


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_curvature_over_all_layers_is_the_exact_estimator(make_attributor, family):
    """Block 0's input is X (plus a constant position embedding for GPT-2): same Hessian."""
    attributor = make_attributor(family, num_hvp_samples=3)
    exact = attributor.attribute(TEXT)
    layers = attributor.attribute(TEXT, config=attributor.config.replace(curvature_layers=attributor.num_layers))
    assert_rel_close(layers.hessian, exact.hessian, 1e-5, "S")


def test_full_rank_low_rank_is_the_exact_estimator(make_attributor):
    """With rank + oversampling >= T·d the range finder spans everything: S is exact (same probes)."""
    attributor = make_attributor("qwen2", num_hvp_samples=4)
    exact = attributor.attribute(input_ids=IDS)
    full = attributor.attribute(input_ids=IDS, config=attributor.config.replace(low_rank=6 * 16))
    assert_rel_close(full.hessian, exact.hessian, 1e-6, "S")
    assert full.meta.hvps == 2 * 6 * 16


@pytest.mark.parametrize(
    "changes", [{"curvature_layers": 1}, {"curvature": "ggn"}, {"curvature": "ggn", "curvature_layers": 2}]
)
def test_approximations_fast_equal_reference(make_attributor, changes):
    attributor = make_attributor("llama", num_hvp_samples=2, **changes)
    fast = attributor.attribute(TEXT, target_text=" . the", target_mode="each")
    reference = attributor.attribute(
        TEXT, target_text=" . the", target_mode="each", config=attributor.config.replace(strategy="reference")
    )
    assert_rel_close(fast.hessian, reference.hessian, 1e-4, f"{changes} S")


def test_ggn_products_match_the_explicit_gauss_newton_matrix(tiny):
    model = tiny("gpt2").requires_grad_(False)
    embeds = model.get_input_embeddings()(torch.tensor(IDS[:-1], device=model.device)).detach()
    target = torch.tensor([IDS[-1]], device=model.device)
    i, dim = 3, embeds.shape[1]

    def logits_of(x_i):
        x = embeds.clone()
        x[i] = x_i
        return model(inputs_embeds=x[None]).logits[0, -1]

    with eager_attention(model):
        jacobian = torch.autograd.functional.jacobian(logits_of, embeds[i])  # [V, d]
        q = torch.softmax(logits_of(embeds[i]), -1)
        gauss_newton = jacobian.T @ (torch.diag(q) - torch.outer(q, q)) @ jacobian
        trace = run_trace(
            model, adapter_for(model.config), HeadLayout.from_config(model.config), embeds, keep_cache=True
        )
        runner = SuffixRunner(model, trace.kv)
        directions = probes(0, i, 3, dim).double()[:, None, :].to(model.device)
        products = block_products(
            lambda rows: runner.logits(2, rows, 1),
            embeds,
            embeds,
            target,
            2,
            torch.tensor([i], device=model.device),
            directions,
            Curvature(kind="ggn"),
            None,
        )
    torch.testing.assert_close(products[:, 0], directions[:, 0] @ gauss_newton.T, rtol=1e-8, atol=1e-10)
    assert all(float(d @ gauss_newton @ d) >= 0 for d in directions[:, 0])  # positive semi-definite


def test_window_covering_the_prompt_is_exact_and_windows_cover_every_token(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    exact = attributor.attribute(TEXT)
    covering = attributor.attribute(TEXT, config=attributor.config.replace(window=50))
    torch.testing.assert_close(covering.scores, exact.scores)
    windowed = attributor.attribute(TEXT, config=attributor.config.replace(window=4, overlap=0.5))
    assert windowed.scores.shape == exact.scores.shape and bool((windowed.hessian > 0).all())
    assert float(windowed.flow.sum()) == pytest.approx(1.0, abs=1e-6)
    assert windowed.meta.hvps == 5 * 4 * 2  # windows start at 0, 2, 4, 6, 7 over 11 prompt tokens


def test_reported_agreement_with_exact():
    """The numbers docs/engine.md reports (`heta bench-approx`), pinned just below their measured values."""
    rows = {(r["family"], r["approximation"]): r for r in approximation_agreement()}
    for family in ("gpt2", "llama"):
        assert rows[family, "low_rank=32"]["s_spearman"] >= 0.95 and rows[family, "low_rank=32"]["s_top5"] == 1.0
        assert rows[family, "low_rank=8"]["s_spearman"] >= 0.85
        assert rows[family, "curvature=ggn"]["s_spearman"] >= 0.7
        assert rows[family, "curvature_layers=2"]["score_spearman"] >= 0.7
        assert rows[family, "window=12,overlap=0.5"]["score_spearman"] >= 0.35
        assert rows[family, "low_rank=32"]["hvps"] < rows[family, "low_rank=32"]["exact_hvps"] / 5


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"curvature_layers": 0}, "curvature_layers"),
        ({"low_rank": 0}, "low_rank"),
        ({"curvature": "fisher"}, "curvature"),
        ({"window": 1}, "window"),
        ({"overlap": 1.0}, "overlap"),
        ({"overlap": -0.1}, "overlap"),
    ],
)
def test_invalid_approximation_settings(changes, field):
    with pytest.raises(ConfigError) as error:
        HetaConfig(**changes)
    assert error.value.field == field


def test_curvature_layers_beyond_the_model(make_attributor):
    with pytest.raises(ConfigError, match="exceeds"):
        make_attributor("gpt2", curvature_layers=3).attribute(TEXT)
