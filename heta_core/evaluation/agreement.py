"""``heta eval --agreement``: how far a model's placement (int8 weights, bf16, a device map) moves its
attributions away from the same weights in float32 on one device.

Per prompt and method, both models attribute the same target; the report gives Spearman's ρ between
the two score vectors and the overlap of their top-k tokens (:mod:`.stats`), with the mean and the
worst prompt per method. Both runs use the same seed, so HETA's Rademacher probes are the same draws:
what differs is the placement alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..config import HetaConfig
from .harness import Item, prepare
from .stats import spearman, topk_overlap


def agreement(
    reference,
    candidate,
    items: Sequence[Item],
    methods: Sequence[str],
    config: HetaConfig,
    *,
    top_k: int = 3,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """{placement of each, prompts, per method: ρ and top-k overlap (mean, min)} over ``items``."""
    configs = {method: config.replace(method=method) for method in methods}
    rho: dict[str, list[float]] = {m: [] for m in methods}
    overlap: dict[str, list[float]] = {m: [] for m in methods}
    for index, item in enumerate(items):
        prepared = prepare(reference.tokenizer, item)
        ids = prepared.ids + [prepared.target]
        for method, method_config in configs.items():
            want = reference.attribute(input_ids=ids, config=method_config).scores.double()
            got = candidate.attribute(input_ids=ids, config=method_config).scores.double()
            rho[method].append(spearman(got, want))
            overlap[method].append(topk_overlap(got, want, top_k))
        if progress is not None:
            progress(index + 1, len(items))
    summary = {
        method: {
            "rho_mean": _mean(rho[method]),
            "rho_min": min(rho[method]),
            f"top{top_k}_mean": _mean(overlap[method]),
            f"top{top_k}_min": min(overlap[method]),
        }
        for method in methods
    }
    return {
        "model": reference.name,
        "reference": reference.placement.to_dict(),
        "candidate": candidate.placement.to_dict(),
        "prompts": len(items),
        "top_k": top_k,
        "methods": summary,
    }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _label(placement: dict) -> str:
    parts = [placement["dtype"]] + ([placement["quantization"]] if placement["quantization"] else [])
    if placement["device_map"]:
        parts.append("split " + "+".join(f"{device}:{count}" for device, count in placement["device_map"].items()))
    return " ".join(parts)


def render(reports: Sequence[dict]) -> str:
    lines = []
    for report in reports:
        k = report["top_k"]
        lines.append(
            f"{report['model']}: {_label(report['candidate'])} vs "
            f"{_label(report['reference'])}, {report['prompts']} prompts"
        )
        lines.append(f"  {'method':<22} {'rho mean':>8} {'rho min':>8} {f'top-{k} mean':>10} {f'top-{k} min':>9}")
        for method, row in report["methods"].items():
            lines.append(
                f"  {method:<22} {row['rho_mean']:8.3f} {row['rho_min']:8.3f} {row[f'top{k}_mean']:10.2f} "
                f"{row[f'top{k}_min']:9.2f}"
            )
    return "\n".join(lines)
