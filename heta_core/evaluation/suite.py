"""``heta eval --suite``: per condition, where each attribution method finds the causal tokens, with intervals.

A *condition* is a list of :class:`~.harness.Item` whose causal tokens are known (the demo models'
conditions come from :mod:`.demo.conditions`; a curated data set is one condition). Per condition:

1. The model answers every prompt (greedy next token); **only prompts it answers correctly are
   attributed**, and its accuracy is reported (Wilson 95% interval).
2. Every method attributes those prompts (timed). Per prompt: hit@1 (the top-ranked candidate is
   causal), the rank of the first causal token among the candidates (1 = top), deletion and
   insertion AOPC (:mod:`.faithfulness`, over all prompt tokens).
3. HETA's ablations come from the same run's components (HETA.md §4): M_T, S, I alone, the pairs
   M_T·S, M_T·I, β·S + γ·I, Eq. 5 with ``normalize`` none and simplex, and the partial result
   published after the KL stage (``partial flow+kl``; the one after the flow ranks as M_T); then
   HETA again with m = 2 / 10 / 50 Hessian samples under the probe seeds ``config.seed`` and
   ``config.seed + 1`` (``flips``: the share of prompts whose top-1 candidate changes with the seed),
   and with each of ``variants`` (e.g. the presets: ``preset=fast``). Every ablation and variant
   reports its Spearman ρ with HETA's scores over the prompt (``rho_vs_heta``, mean and interval).
4. Aggregates: hit@1 with its Wilson interval; mean rank and AOPCs with percentile bootstrap
   intervals (seeded); the **paired** bootstrap interval of hit@1 minus the best baseline's on the
   same prompts (the best baseline = the highest hit@1, then the lowest mean rank); for each
   ablation, the paired interval of its hit@1 minus HETA's (``hit@1_minus_heta``: what a choice
   such as ``normalize`` changes, measured on the same prompts); seconds per prompt.

"The methods separate" in a condition when the best and the worst of HETA, gradient, attention
rollout and occlusion have disjoint Wilson intervals (``report["separating"]``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch

from ..config import PRESETS, HetaConfig
from ..methods.heta.combine import combine, estimate
from ..methods.registry import METHODS
from ..runtime.masking import mask_vector
from . import faithfulness, metrics
from .harness import Item, Prepared, _finite, bootstrap_ci, prepare
from .stats import spearman, wilson

BASELINES = tuple(m for m in METHODS if m != "heta")
SEPARATION = ("heta", "gradient", "attention_rollout", "occlusion")  # the "Done when" set
COMPONENTS = ("M_T", "S", "I", "M_T·S", "M_T·I", "βS+γI", "normalize=none", "normalize=simplex", "partial flow+kl")


@dataclass(frozen=True)
class SuiteSettings:
    n: int = 100  # prompts drawn per condition (attributed: those answered correctly)
    samples: tuple[int, ...] = (2, 10, 50)  # Hessian samples of the ablation
    curve_steps: int = 20  # points of the deletion / insertion curves
    bootstrap: int = 1000
    seed: int = 0  # prompts and bootstrap resamples
    variants: tuple[tuple[str, tuple[tuple[str, object], ...]], ...] = ()  # (name, HETA config changes) run as well


PRESET_VARIANTS = tuple((f"preset={name}", (("preset", name),)) for name in PRESETS if name != "exact")


# CI's bound (≤ 3 minutes for both demo models on 2 cores): fewer prompts, and no m = 50 (its two
# runs per prompt were about 60% of the time)
QUICK = SuiteSettings(n=12, samples=(2, 10), bootstrap=400)


def _rank(scores: torch.Tensor, prepared: Prepared) -> int:
    order = metrics.ranking(scores, prepared.candidates)
    return 1 + min(order.index(g) for g in prepared.gold if g in order)


class _Prompt:
    """One correctly answered prompt: what every variant's scores are measured against."""

    def __init__(self, attributor, prepared: Prepared, mask: str, curve_steps: int):
        model = attributor.model
        embedding = model.get_input_embeddings()
        embeds = embedding(torch.tensor(prepared.ids, device=attributor.device)).detach()
        self.prepared, self.curve_steps = prepared, curve_steps
        self.probe = faithfulness.Perturbations(model, embeds, prepared.target, mask_vector(embeds, mask, embedding))
        with torch.no_grad():
            self.predicted = int(model(inputs_embeds=embeds[None], logits_to_keep=1).logits[0, -1].argmax())

    @property
    def correct(self) -> bool:
        return self.predicted == self.prepared.target

    def measure(self, scores: torch.Tensor) -> dict[str, float]:
        scores = scores.double()
        row = {
            "hit@1": metrics.hit_at_k(scores, self.prepared.gold, 1, self.prepared.candidates),
            "rank": _rank(scores, self.prepared),
        }
        row.update(faithfulness.deletion_insertion(self.probe, scores, self.curve_steps))
        return row


def _components(result, config: HetaConfig) -> dict[str, torch.Tensor]:
    """HETA's ablations from one run's M_T, S and I (no extra model work)."""
    flow, s, i = result.flow.double(), result.hessian.double(), result.kl.double()
    ones = torch.ones_like(flow)
    terms = dict(beta=config.beta, gamma=config.gamma)
    return {
        "M_T": flow,
        "S": s,
        "I": i,
        "M_T·S": flow * s,
        "M_T·I": flow * i,
        "βS+γI": combine(ones, s, i, **terms, normalize=config.normalize),
        "normalize=none": combine(flow, s, i, **terms, normalize="none"),
        "normalize=simplex": combine(flow, s, i, **terms, normalize="simplex"),
        "partial flow+kl": estimate(flow, None, i, **terms, normalize=config.normalize),
    }


def _top1(scores: torch.Tensor, prepared: Prepared) -> int:
    return metrics.ranking(scores.double(), prepared.candidates)[0]


def score_prompt(attributor, prompt: _Prompt, methods: Sequence[str], config: HetaConfig, settings: SuiteSettings):
    """{variant: per-prompt measures} for one prompt: the methods, then HETA's ablations."""
    ids = prompt.prepared.ids + [prompt.prepared.target]
    rows: dict[str, dict[str, float]] = {}

    def run(cfg: HetaConfig):
        clock = time.perf_counter()
        result = attributor.attribute(input_ids=ids, config=cfg)
        return result, time.perf_counter() - clock

    def planned(cfg: HetaConfig) -> float:
        """The time model's seconds (the measured speed's price of the planned work): a cost that does not
        depend on what else the machine is doing."""
        return attributor.estimate(input_ids=ids, config=cfg).seconds

    heta = None
    for method in methods:
        result, seconds = run(config.replace(method=method))
        rows[method] = {**prompt.measure(result.scores), "seconds": seconds}
        if method == "heta":
            heta = (result, seconds)
            rows[method]["planned"] = planned(config.replace(method=method))
    if heta is None:
        return rows
    exact = heta[0].scores.double()

    def measured(scores: torch.Tensor, seconds: float) -> dict[str, float]:
        return {**prompt.measure(scores), "seconds": seconds, "rho": spearman(scores.double(), exact)}

    for name, scores in _components(heta[0], config).items():
        rows[name] = measured(scores, heta[1])
    for m in settings.samples:
        tops = []
        for seed in (config.seed, config.seed + 1):
            cfg = config.replace(method="heta", num_hvp_samples=m, seed=seed)
            result, seconds = heta if cfg == config.replace(method="heta") else run(cfg)
            tops.append(_top1(result.scores, prompt.prepared))
            if seed == config.seed:
                rows[f"m={m}"] = measured(result.scores, seconds)
        rows[f"m={m}"]["flips"] = float(tops[0] != tops[-1])
    for name, changes in settings.variants:
        cfg = config.replace(method="heta", **dict(changes))
        result, seconds = run(cfg)
        rows[name] = {**measured(result.scores, seconds), "planned": planned(cfg)}
    return rows


def _interval(values: list[float], settings: SuiteSettings) -> dict:
    mean, low, high = bootstrap_ci(values, settings.bootstrap, settings.seed)
    return {"mean": _finite(mean), "ci95": [_finite(low), _finite(high)]}


def _proportion(values: list[float]) -> dict:
    low, high = wilson(sum(values), len(values))
    return {"mean": _finite(sum(values) / len(values)) if values else None, "ci95": [_finite(low), _finite(high)]}


def _best_baseline(rows: dict[str, dict[str, list[float]]]) -> str | None:
    present = [m for m in BASELINES if m in rows and rows[m]["hit@1"]]
    if not present:
        return None
    mean = lambda m, key: sum(rows[m][key]) / len(rows[m][key])  # noqa: E731
    return min(present, key=lambda m: (-mean(m, "hit@1"), mean(m, "rank"), BASELINES.index(m)))


def evaluate_condition(
    attributor,
    items: Sequence[Item],
    methods: Sequence[str],
    config: HetaConfig,
    settings: SuiteSettings,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """One condition's block of the suite report (see the module docstring)."""
    prompts = [
        _Prompt(attributor, prepare(attributor.tokenizer, item), config.mask, settings.curve_steps) for item in items
    ]
    correct = [p for p in prompts if p.correct]
    rows: dict[str, dict[str, list[float]]] = {}
    for number, prompt in enumerate(correct):
        for variant, measures in score_prompt(attributor, prompt, methods, config, settings).items():
            for key, value in measures.items():
                rows.setdefault(variant, {}).setdefault(key, []).append(value)
        if progress is not None:
            progress(number + 1, len(correct))
    best = _best_baseline(rows)
    variants = {}
    for variant, measures in rows.items():
        cell = {
            "hit@1": _proportion(measures["hit@1"]),
            "rank": _interval(measures["rank"], settings),
            "deletion_aopc": _interval(measures["deletion_aopc"], settings),
            "insertion_aopc": _interval(measures["insertion_aopc"], settings),
            "seconds_per_prompt": sum(measures["seconds"]) / len(measures["seconds"]),
        }
        if best is not None:
            paired = [a - b for a, b in zip(measures["hit@1"], rows[best]["hit@1"], strict=True)]
            cell["hit@1_minus_best_baseline"] = _interval(paired, settings)
        if variant not in methods and "heta" in rows:  # an ablation against the configured HETA, paired
            cell["hit@1_minus_heta"] = _interval(
                [a - b for a, b in zip(measures["hit@1"], rows["heta"]["hit@1"], strict=True)], settings
            )
        if "flips" in measures:
            cell["flips"] = _proportion(measures["flips"])
        if "rho" in measures:
            cell["rho_vs_heta"] = _interval(measures["rho"], settings)
        if "planned" in measures:
            cell["planned_seconds_per_prompt"] = sum(measures["planned"]) / len(measures["planned"])
        variants[variant] = cell
    return {
        "prompts": len(prompts),
        "attributed": len(correct),
        "model_accuracy": _proportion([float(p.correct) for p in prompts]),
        "best_baseline": best,
        "methods": {m: variants[m] for m in methods if m in variants},
        "ablations": {v: cell for v, cell in variants.items() if v not in methods},
    }


def separating(conditions: dict[str, dict], among: Sequence[str] = SEPARATION) -> list[dict]:
    """Conditions where the best and the worst of ``among`` have disjoint hit@1 intervals."""
    out = []
    for name, block in conditions.items():
        cells = {m: block["methods"][m]["hit@1"] for m in among if m in block["methods"]}
        if len(cells) < 2:
            continue
        best = max(cells, key=lambda m: cells[m]["mean"])
        worst = min(cells, key=lambda m: cells[m]["mean"])
        if cells[best]["ci95"][0] > cells[worst]["ci95"][1]:
            out.append(
                {
                    "condition": name,
                    "best": best,
                    "best_hit@1": cells[best],
                    "worst": worst,
                    "worst_hit@1": cells[worst],
                }
            )
    return out


def _side(diff: dict | None) -> str | None:
    """Where a paired difference's interval lies: above 0, below 0, or covering it."""
    if not diff or diff["ci95"][0] is None:
        return None
    low, high = diff["ci95"]
    return "above" if low > 0 else "below" if high < 0 else "covers"


def summary(conditions: dict[str, dict]) -> dict[str, dict]:
    """Per variant across conditions: mean hit@1, the worst condition and its hit@1, and how often
    its interval of hit@1 minus the best baseline lies above 0 (wins), below 0 (losses) or covers 0;
    for an ablation also where its interval of hit@1 minus HETA's lies above 0 (``better_than_heta``)
    or below 0 (``worse_than_heta``)."""
    out: dict[str, dict] = {}
    for name, block in conditions.items():
        for variant, cell in {**block["methods"], **block["ablations"]}.items():
            entry = out.setdefault(variant, {"hit@1": {}, "wins": [], "ties": [], "losses": []})
            entry["hit@1"][name] = cell["hit@1"]["mean"]
            side = _side(cell.get("hit@1_minus_best_baseline")) if variant != block["best_baseline"] else None
            if side:
                entry[{"above": "wins", "below": "losses", "covers": "ties"}[side]].append(name)
            if "hit@1_minus_heta" in cell:
                side = _side(cell["hit@1_minus_heta"])
                entry.setdefault("better_than_heta", [])
                entry.setdefault("worse_than_heta", [])
                if side in ("above", "below"):
                    entry["better_than_heta" if side == "above" else "worse_than_heta"].append(name)
    for entry in out.values():
        values = {k: v for k, v in entry.pop("hit@1").items() if v is not None}
        worst = min(values, key=values.get) if values else None
        entry.update(
            mean_hit1=sum(values.values()) / len(values) if values else None,
            worst_condition=worst,
            worst_hit1=values.get(worst),
        )
    return out


def run_suite(
    attributor,
    conditions: dict[str, Sequence[Item]],
    methods: Sequence[str] = METHODS,
    *,
    config: HetaConfig | None = None,
    settings: SuiteSettings = SuiteSettings(),
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """The suite report of one model: ``{"model", "revision", "settings", "conditions": {name: block},
    "separating", "summary"}`` (module docstring)."""
    config = config or attributor.config
    methods = list(dict.fromkeys(config.replace(method=m).method for m in methods))  # "ig" → its full name, once
    if settings.variants and attributor.speed is None:
        attributor.calibrate()  # the variants' planned cost is priced at this model's measured speed
    first = next((items[0] for items in conditions.values() if items), None)
    if (
        first is not None
    ):  # warm-up (first kernels, lazy initialisation), so the first timed prompt is not charged for it
        warm = prepare(attributor.tokenizer, first)
        for method in methods:
            attributor.attribute(input_ids=warm.ids + [warm.target], config=config.replace(method=method))
    blocks = {}
    for name, items in conditions.items():
        blocks[name] = evaluate_condition(
            attributor,
            items,
            methods,
            config,
            settings,
            None if progress is None else lambda d, t, name=name: progress(name, d, t),
        )
    return {
        "model": attributor.name,
        "revision": attributor.revision,
        "settings": {**asdict(settings), "config": config.to_dict(), "methods": methods},
        "conditions": blocks,
        "separating": separating(blocks),
        "summary": summary(blocks),
    }


def demo_conditions(model: str, n: int, seed: int = 0, names: Sequence[str] | None = None) -> dict[str, list[Item]]:
    """A builtin demo model's conditions as items (:mod:`.demo.conditions`)."""
    from .demo import conditions
    from .harness import example_items

    allowed = conditions.MODEL_CONDITIONS[model][1]
    return {name: example_items(conditions.examples(n, seed, name, model)) for name in (names or allowed)}


# ---- the terminal table ------------------------------------------------------------------------
