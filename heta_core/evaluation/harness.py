"""``heta eval``: methods × metrics on a dataset with known important tokens.

Datasets
  synthetic   the demo retrieval task (:mod:`heta_core.demo.task`), held-out seed 0: gold = the
              queried key and its value, distractor = other copies of the answer value and their
              keys, candidates = the pair region.
  PATH        the paper's curated NarrativeQA⊕SciQ JSON (``examples`` with ``input_text``,
              ``narrative_segment``, ``sciq_support_segment``, ``target_first_answer_token``,
              ``important_word_indices_in_sciq_support``): the prompt is ``input_text + " Answer:"``
              and the target the first token of ``" " + target_first_answer_token``; gold = the
              important words' tokens, support = the SciQ segment, distractor = the narrative.

Gold positions are carried as character spans and mapped to tokens through the tokenizer's
offsets, so any tokenizer works. Each metric is averaged over items, with a 95% percentile
bootstrap interval (1,000 resamples, seeded). Metric definitions: :mod:`heta_core.metrics`,
:mod:`heta_core.faithfulness`, docs/evaluation.md.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import HetaConfig
from ..errors import InputError
from ..inputs.document import encode_text
from ..runtime.masking import mask_vector
from . import faithfulness, metrics

Span = tuple[int, int]


@dataclass
class Item:
    """A prompt, the answer whose first token is explained, and character spans of known positions."""

    prompt: str
    answer: str
    gold: list[Span]
    support: list[Span] = field(default_factory=list)
    distractor: list[Span] = field(default_factory=list)
    candidates: list[Span] | None = None  # None: every prompt token is ranked


def _word_spans(text: str, offset: int = 0) -> list[Span]:
    return [(m.start() + offset, m.end() + offset) for m in re.finditer(r"\S+", text)]


def synthetic_items(count: int, seed: int = 0) -> list[Item]:
    """Held-out examples of the demo task (training draws from other seeds)."""
    from .demo import task

    return example_items(task.examples(count, seed))


def example_items(examples) -> list[Item]:
    """Items of demo-task examples (:class:`heta_core.evaluation.demo.task.Example`): one word, one token."""
    items = []
    for example in examples:
        spans = _word_spans(example.text)
        items.append(
            Item(
                prompt=example.text,
                answer=" " + example.answer,
                gold=[spans[i] for i in example.gold],
                support=[spans[i] for i in example.gold],
                distractor=[spans[i] for i in example.distractors],
                candidates=spans[: example.candidates],
            )
        )
    return items


QA_FIELDS = (
    "input_text",
    "narrative_segment",
    "sciq_support_segment",
    "target_first_answer_token",
    "important_word_indices_in_sciq_support",
)


def qa_items(path: str | Path, count: int | None = None) -> list[Item]:
    """Items of the curated NarrativeQA⊕SciQ file (see the module docstring)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise InputError(f"cannot read dataset {str(path)!r}: {error.strerror}", code="invalid_dataset") from None
    except json.JSONDecodeError as error:
        raise InputError(
            f"dataset {str(path)!r} is not valid JSON: {error.msg} at position {error.pos}", code="invalid_dataset"
        ) from None
    examples = data.get("examples") if isinstance(data, dict) else data
    if not isinstance(examples, list) or not examples:
        raise InputError(f"dataset {str(path)!r} has no examples list", code="invalid_dataset")
    items = []
    for number, example in enumerate(examples[:count] if count is not None else examples):
        missing = [name for name in QA_FIELDS if not isinstance(example, dict) or name not in example]
        if missing:
            raise InputError(f"dataset example {number} lacks field(s) {', '.join(missing)}", code="invalid_dataset")
        text, support, narrative = example["input_text"], example["sciq_support_segment"], example["narrative_segment"]
        start, narrative_start = text.find(support), text.find(narrative)
        if start < 0 or narrative_start < 0:
            raise InputError(
                f"dataset example {number}: the segments are not part of input_text", code="invalid_dataset"
            )
        words = _word_spans(support, start)
        indices = example["important_word_indices_in_sciq_support"]
        if not all(isinstance(i, int) and 0 <= i < len(words) for i in indices) or not indices:
            raise InputError(f"dataset example {number}: important word indices out of range", code="invalid_dataset")
        items.append(
            Item(
                prompt=text + " Answer:",
                answer=" " + str(example["target_first_answer_token"]),
                gold=[words[i] for i in indices],
                support=[(start, start + len(support))],
                distractor=[(narrative_start, narrative_start + len(narrative))],
            )
        )
    return items


def _positions(offsets: list, spans: Sequence[Span]) -> list[int]:
    """Token positions whose character range overlaps any span (tokens without offsets never do)."""
    return [
        i
        for i, offset in enumerate(offsets)
        if offset is not None and offset[1] > offset[0] and any(offset[0] < b and offset[1] > a for a, b in spans)
    ]


@dataclass
class Prepared:
    ids: list[int]  # prompt ids
    target: int
    gold: list[int]
    support: list[int]
    distractor: list[int]
    candidates: list[int] | None


def prepare(tokenizer, item: Item) -> Prepared:
    ids, offsets = encode_text(tokenizer, item.prompt)
    answer, _ = encode_text(tokenizer, item.answer, special_tokens=False)
    if not answer:
        raise InputError(f"answer {item.answer!r} encodes to no tokens", code="invalid_dataset")
    gold = _positions(offsets, item.gold)
    if not gold:
        raise InputError(f"no token of {item.prompt[:40]!r}… overlaps its gold spans", code="invalid_dataset")
    candidates = _positions(offsets, item.candidates) if item.candidates is not None else None
    return Prepared(
        ids, answer[0], gold, _positions(offsets, item.support), _positions(offsets, item.distractor), candidates
    )


@dataclass(frozen=True)
class EvalSettings:
    top_k: int = 3  # hit@k, comp@k, suff@k
    curve_steps: int = 20  # points of the deletion / insertion curves
    soft_samples: int = 8  # Bernoulli draws for Soft-NC / Soft-NS
    seed: int = 0
    bootstrap: int = 1000


def metric_names(settings: EvalSettings) -> list[str]:
    k = settings.top_k
    return [
        "hit@1",
        f"hit@{k}",
        "f1",
        "dsa",
        "soft_nc",
        "soft_ns",
        f"comp@{k}",
        f"suff@{k}",
        "deletion_aopc",
        "insertion_aopc",
    ]


def score_item(attributor, prepared: Prepared, method_configs: dict[str, HetaConfig], settings: EvalSettings):
    """{method: {metric: value}} for one item, and whether the model predicts the target."""
    model = attributor.model
    embedding = model.get_input_embeddings()
    embeds = embedding(torch.tensor(prepared.ids, device=attributor.device)).detach()
    fill = mask_vector(embeds, next(iter(method_configs.values())).mask, embedding)
    probe = faithfulness.Perturbations(model, embeds, prepared.target, fill)
    with torch.no_grad():
        predicted = int(model(inputs_embeds=embeds[None], logits_to_keep=1).logits[0, -1].argmax())
    k = settings.top_k
    out, seconds = {}, {}
    for method, config in method_configs.items():
        clock = time.perf_counter()
        result = attributor.attribute(input_ids=prepared.ids + [prepared.target], config=config)
        seconds[method] = time.perf_counter() - clock
        scores = result.scores.double()
        row = {
            "hit@1": metrics.hit_at_k(scores, prepared.gold, 1, prepared.candidates),
            f"hit@{k}": metrics.hit_at_k(scores, prepared.gold, k, prepared.candidates),
            "f1": metrics.f1(scores, prepared.gold, prepared.candidates),
            "dsa": metrics.dsa(scores, prepared.support, prepared.distractor),
            **faithfulness.soft(probe, scores, settings.soft_samples, settings.seed),
        }
        hard = faithfulness.hard(probe, scores, k)
        row[f"comp@{k}"], row[f"suff@{k}"] = hard["comp"], hard["suff"]
        row.update(faithfulness.deletion_insertion(probe, scores, settings.curve_steps))
        out[method] = row
    return out, predicted == prepared.target, seconds


def bootstrap_ci(values: Sequence[float], resamples: int, seed: int) -> tuple[float, float, float]:
    """(mean, 2.5th, 97.5th percentile of resampled means); NaNs (undefined items) dropped; all-NaN gives NaNs."""
    data = torch.tensor([v for v in values if not math.isnan(v)], dtype=torch.float64)
    if data.numel() == 0:
        return math.nan, math.nan, math.nan
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(0, data.numel(), (resamples, data.numel()), generator=generator)
    means = data[picks].mean(1)
    low, high = torch.quantile(means, torch.tensor([0.025, 0.975], dtype=torch.float64)).tolist()
    return float(data.mean()), low, high


def evaluate(
    attributor,
    items: Sequence[Item],
    methods: Sequence[str],
    *,
    config: HetaConfig | None = None,
    settings: EvalSettings = EvalSettings(),
    dataset: str = "",
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """The ``heta eval`` report:
    ``{"model", "dataset", "n", "results": {method: {metric: {"mean", "ci95", "n"}}}, ...}``.

    A metric's own ``n`` counts the items where it is defined (Soft-NC/NS may be undefined).
    """
    if attributor.tokenizer is None:
        raise InputError("evaluation needs the model's tokenizer", code="no_tokenizer")
    base = config or attributor.config
    # short names ("ig") are reported under the full name, once
    method_configs = {c.method: c for c in (base.replace(method=m) for m in methods)}
    methods = list(method_configs)
    rows: dict[str, dict[str, list[float]]] = {m: {name: [] for name in metric_names(settings)} for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    correct = 0
    for number, item in enumerate(items):
        scored, right, took = score_item(attributor, prepare(attributor.tokenizer, item), method_configs, settings)
        correct += right
        for method, values in scored.items():
            seconds[method] += took[method]
            for name, value in values.items():
                rows[method][name].append(value)
        if progress is not None:
            progress(number + 1, len(items))
    results = {}
    for method, table in rows.items():
        results[method] = {}
        for name, values in table.items():
            mean, low, high = bootstrap_ci(values, settings.bootstrap, settings.seed)
            defined = sum(not math.isnan(v) for v in values)
            results[method][name] = {"mean": _finite(mean), "ci95": [_finite(low), _finite(high)], "n": defined}
    return {
        "model": attributor.name,
        "dataset": dataset,
        "n": len(items),
        "results": results,
        "model_accuracy": correct / len(items) if items else None,
        "seconds_per_item": {m: s / max(1, len(items)) for m, s in seconds.items()},
        "settings": {**settings.__dict__, "config": base.to_dict()},
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def render(report: dict) -> str:
    """Metrics × methods as a text table under 120 columns: each metric's mean on one line and its
    95% interval on the line below (methods by their short names: ig, ixg, rollout, ...)."""
    from ..methods.registry import METHOD_ALIASES

    methods = list(report["results"])
    names = list(next(iter(report["results"].values()))) if methods else []
    short = {
        name: name
        if len(name) <= 10
        else min([alias for alias, full in METHOD_ALIASES.items() if full == name] + [name], key=len)
        for name in methods
    }
    cell = max([14] + [len(short[m]) + 2 for m in methods])
    label = max([len(n) for n in names] + [6])
    lines = [
        f"model {report['model']}  dataset {report['dataset']}  n={report['n']}  "
        f"model accuracy on the targets {report['model_accuracy']:.3f}",
        f"{'metric':<{label}}" + "".join(f"{short[m]:>{cell}}" for m in methods),
    ]
    for name in names:
        values = [report["results"][m][name] for m in methods]
        lines.append(
            f"{name:<{label}}"
            + "".join(f"{v['mean']:>{cell}.3f}" if v["mean"] is not None else f"{'n/a':>{cell}}" for v in values)
        )
        intervals = [f"[{v['ci95'][0]:.2f},{v['ci95'][1]:.2f}]" if v["mean"] is not None else "" for v in values]
        lines.append(f"{'':<{label}}" + "".join(f"{text:>{cell}}" for text in intervals))
    return "\n".join(lines)
