"""Presets (bundles of HETA's cost knobs), the time model, and time budgets (HetaConfig.budget_s)."""

import pytest
import torch

from heta_core import PRESETS, BudgetError, ConfigError, HetaConfig, Speed
from heta_core.config import EXACT
from heta_core.runtime.cost import fit_speed, hessian_units

from .conftest import TEXT


def test_a_preset_is_a_bundle_and_explicit_knobs_override_it():
    assert HetaConfig() == HetaConfig(preset="exact") and HetaConfig().num_hvp_samples == 10
    for name, bundle in PRESETS.items():
        config = HetaConfig(preset=name)
        assert {k: getattr(config, k) for k in EXACT} == {**EXACT, **bundle}
    mixed = HetaConfig(preset="balanced", num_hvp_samples=7, curvature_layers=1)
    assert (
        mixed.num_hvp_samples == 7
        and mixed.curvature_layers == 1
        and mixed.explicit == {"num_hvp_samples", "curvature_layers"}
    )
    # replace re-applies a preset to the knobs that came from one, never to explicit ones
    assert mixed.replace(preset="fast").num_hvp_samples == 7 and mixed.replace(preset="fast").beta == PRESETS[
        "fast"
    ].get("beta", 0.5)
    assert HetaConfig(preset="fast").replace(preset="exact") == HetaConfig()
    assert HetaConfig.from_dict(HetaConfig(preset="fast").to_dict()) == HetaConfig(preset="fast")
    with pytest.raises(ConfigError, match="preset must be one of exact, balanced, fast") as error:
        HetaConfig(preset="quick")
    assert error.value.field == "preset"


@pytest.mark.parametrize("value", [0, -1.5, float("inf"), float("nan"), True, "5"])
def test_a_bad_budget_is_refused_with_its_field(value):
    with pytest.raises(ConfigError) as error:
        HetaConfig(budget_s=value)
    assert error.value.field == "budget_s"


def test_a_budget_needs_stages_to_drop():
    with pytest.raises(ConfigError, match="no stages to drop") as error:
        HetaConfig(method="occlusion", budget_s=2.0)
    assert error.value.field == "budget_s"


def test_zero_weight_terms_are_not_computed(make_attributor):
    attributor = make_attributor("gpt2", num_hvp_samples=2)
    exact = attributor.attribute(TEXT)
    without_s = attributor.attribute(TEXT, config=attributor.config.replace(beta=0))
    without_i = attributor.attribute(TEXT, config=attributor.config.replace(gamma=0))
    assert without_s.stages_done == ["flow", "kl"] and without_s.hessian is None and without_s.meta.hvps == 0
    assert without_i.stages_done == ["flow", "hessian"] and without_i.kl is None and not without_i.partial
    # Eq. 5 with the term's weight 0: the same numbers as computing it and multiplying by 0
    flow, kl, s = exact.flow.double(), exact.kl.double(), exact.hessian.double()
    torch.testing.assert_close(without_s.scores.double(), flow * 0.5 * kl / kl.sum(), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(without_i.scores.double(), flow * 0.5 * s / s.sum(), rtol=1e-6, atol=1e-9)
    # the planner counts no work for them
    assert attributor.estimate(TEXT, config=attributor.config.replace(beta=0)).hvps == 0
    assert (
        attributor.estimate(TEXT, config=attributor.config.replace(gamma=0)).forward_tokens
        < attributor.estimate(TEXT).forward_tokens
    )


def test_the_speed_fit_recovers_known_rates():
    truth = Speed(
        {"flow": 1e-4, "kl": 2e-5, "hessian": 5e-5}, {"flow": 1e-3, "kl": 4e-4, "hessian": 2e-3}, 3e-3, "measured"
    )
    works = [
        {"flow": (8, 1), "kl": (36, 1), "hessian": (hessian_units(36, 2), 1)},
        {"flow": (16, 1), "kl": (136, 2), "hessian": (hessian_units(136, 4), 3)},
        {"flow": (32, 1), "kl": (528, 3), "hessian": (hessian_units(528, 2), 6)},
    ]
    samples = []
    for work in works:
        seconds = {
            stage: units * truth.unit_s[stage] + chunks * truth.chunk_s[stage]
            for stage, (units, chunks) in work.items()
        }
        samples.append((work, seconds, sum(seconds.values()) + truth.fixed_s))
    fitted = fit_speed(samples)
    for stage in ("kl", "hessian"):
        assert fitted.unit_s[stage] == pytest.approx(truth.unit_s[stage], rel=1e-6)
        assert fitted.chunk_s[stage] == pytest.approx(truth.chunk_s[stage], rel=1e-6)
    assert fitted.fixed_s == pytest.approx(truth.fixed_s) and fitted.source == "measured"
    for work in works:
        assert fitted.seconds(work) == pytest.approx(truth.seconds(work), rel=1e-6)
    assert Speed.from_dict(fitted.to_dict()) == fitted


def test_calibration_measures_every_stage(make_attributor):
    attributor = make_attributor("gpt2")
    attributor.speed = None
    assumed = attributor.estimate(TEXT).seconds
    speed = attributor.calibrate()
    assert speed.source == "measured" and set(speed.unit_s) == {"flow", "kl", "hessian"}
    assert all(v >= 0 for v in [*speed.unit_s.values(), *speed.chunk_s.values(), speed.fixed_s])
    assert attributor.speed is speed and attributor.estimate(TEXT).seconds > 0 and assumed > 0


# a speed that makes the choice deterministic: 1 ms per HVP unit, 0.1 ms per other unit, nothing fixed
SPEED = Speed({"flow": 1e-4, "kl": 1e-4, "hessian": 1e-3}, {"flow": 0.0, "kl": 0.0, "hessian": 0.0}, 0.0, "measured")


def test_the_budget_picks_the_most_exact_preset_that_fits(make_attributor):
    attributor = make_attributor("gpt2")
    attributor.speed = SPEED
    seconds = {name: attributor.estimate(TEXT, config=HetaConfig(preset=name)).seconds for name in PRESETS}
    assert seconds["exact"] > seconds["balanced"] > seconds["fast"]
    for name in PRESETS:
        chosen = attributor.estimate(TEXT, config=HetaConfig(budget_s=seconds[name] * 1.01))
        assert chosen.plan.preset == name and chosen.seconds == pytest.approx(seconds[name])
        assert chosen.plan.estimates[name] == pytest.approx(seconds[name]) and chosen.plan.speed == "measured"
    # never more exact than asked
    assert attributor.estimate(TEXT, config=HetaConfig(preset="balanced", budget_s=100)).plan.preset == "balanced"
    result = attributor.attribute(TEXT, config=HetaConfig(budget_s=seconds["balanced"] * 1.01))
    assert (
        result.meta.config["preset"] == "balanced"
        and result.meta.config["num_hvp_samples"] == PRESETS["balanced"]["num_hvp_samples"]
    )
    assert result.meta.plan.preset == "balanced" and result.meta.plan.budget_s == pytest.approx(
        seconds["balanced"] * 1.01
    )


def test_a_budget_the_flow_does_not_fit_is_refused_with_the_cheapest_estimate(make_attributor):
    attributor = make_attributor("gpt2")
    attributor.speed = SPEED
    flow = attributor.estimate(TEXT, config=HetaConfig(budget_s=100)).plan.estimates["flow"]
    with pytest.raises(BudgetError) as error:
        attributor.attribute(TEXT, config=HetaConfig(budget_s=flow / 2))
    assert error.value.code == "cost_over_ceiling" and error.value.field == "budget_s"
    cheapest = attributor.estimate(TEXT, config=HetaConfig(preset="fast"))
    assert error.value.details["estimate"]["seconds"] == pytest.approx(cheapest.seconds)
    # between the flow and the cheapest preset: the cheapest runs, and ends with what it has when time is up
    between = attributor.estimate(TEXT, config=HetaConfig(budget_s=flow * 1.01))
    assert between.plan.preset == "fast" and between.plan.estimated_s > between.plan.budget_s


def test_a_run_past_its_budget_ends_with_the_stages_it_has(make_attributor):
    attributor = make_attributor("gpt2")
    attributor.speed = Speed(
        {"flow": 0.0, "kl": 0.0, "hessian": 0.0}, {}, 0.0, "measured"
    )  # estimates everything at 0 s
    partials = []
    slow = HetaConfig(num_hvp_samples=400, memory_budget_mb=16, budget_s=0.05)  # many chunks of Hessian work
    result = attributor.attribute(TEXT, config=slow, on_partial=partials.append)
    assert result.partial and result.meta.plan.stopped == "budget" and result.meta.plan.preset == "exact"
    assert "hessian" not in result.stages_done and result.stages_done == ["flow", "kl"][: len(result.stages_done)]
    assert result.hessian is None and [p.stages_done for p in partials] == [["flow"], ["flow", "kl"]][: len(partials)]
    # the scores are the partial estimate of what it had, the same document a partial publishes
    torch.testing.assert_close(result.scores, partials[len(result.stages_done) - 1].scores)
    unbounded = attributor.attribute(TEXT, config=slow.replace(budget_s=None, num_hvp_samples=2))
    assert unbounded.meta.plan is None and not unbounded.partial
