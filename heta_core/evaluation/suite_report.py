"""The condition suite's report for people: its tables (per condition and method, the ablations,
the presets against exact) and its plot. The numbers come from :func:`heta_core.evaluation.suite.run_suite`."""

from __future__ import annotations

from collections.abc import Sequence

from ..methods.registry import REGISTRY


def _cell(cell: dict | None, digits: int = 2) -> str:
    if not cell or cell["mean"] is None:
        return "n/a"
    low, high = cell["ci95"]
    return f"{cell['mean']:.{digits}f} [{low:.{digits}f},{high:.{digits}f}]"


# the short names the CLI accepts, so that the overview's columns stay 18 characters wide


def render(report: dict) -> str:
    """The overview (hit@1 per condition × method) and one block per condition."""
    conditions = report["conditions"]
    methods = report["settings"]["methods"]
    lines = [
        f"heta eval --suite  model {report['model']} (revision {report['revision']})  "
        f"{report['settings']['n']} prompts per condition; only correctly answered prompts are attributed",
        "",
        "hit@1 [Wilson 95%] of the top-ranked candidate being causal",
        f"{'condition':<10} {'accuracy':>18}"
        + "".join(f"  {REGISTRY[m].short if m in REGISTRY else m:>18}" for m in methods),
    ]
    for name, block in conditions.items():
        cells = "".join(
            f"  {_cell(block['methods'][m]['hit@1']) if m in block['methods'] else 'n/a':>18}" for m in methods
        )
        lines.append(f"{name:<10} {_cell(block['model_accuracy']):>18}" + cells)
    lines.append("")
    if report["separating"]:
        lines.append(
            "methods separate (disjoint intervals among heta, gradient, rollout, occlusion) in: "
            + ", ".join(
                f"{s['condition']} ({s['best']} {s['best_hit@1']['mean']:.2f} vs {s['worst']} "
                f"{s['worst_hit@1']['mean']:.2f})"
                for s in report["separating"]
            )
        )
    else:
        lines.append(
            "methods do not separate: every condition's intervals of heta, gradient, rollout and occlusion overlap"
        )
    lines += [
        "",
        "across conditions: mean hit@1, the worst condition, and the conditions where the paired "
        "interval of hit@1 minus the best baseline's lies above 0 (wins), covers 0 (ties) or "
        "lies below 0 (losses; where a variant is the best baseline, it is not counted); for "
        "HETA's ablations, where the paired interval of hit@1 minus HETA's lies above or below 0",
        f"{'variant':<20} {'mean hit@1':>10} {'worst':>16}  {'wins':>4} {'ties':>4} {'losses':>6}  losses in; vs heta",
    ]
    for variant, entry in report["summary"].items():
        worst = f"{entry['worst_condition']} {entry['worst_hit1']:.2f}" if entry["worst_condition"] else "n/a"
        mean = f"{entry['mean_hit1']:.3f}" if entry["mean_hit1"] is not None else "n/a"
        versus = ""
        if "better_than_heta" in entry:
            above, below = (", ".join(entry[k]) or "-" for k in ("better_than_heta", "worse_than_heta"))
            versus = f"; above heta in: {above}, below in: {below}"
        lines.append(
            f"{variant:<20} {mean:>10} {worst:>16}  {len(entry['wins']):>4} {len(entry['ties']):>4} "
            f"{len(entry['losses']):>6}  " + ", ".join(entry["losses"]) + versus
        )
    for name, block in conditions.items():
        best = block["best_baseline"]
        lines += [
            "",
            f"== {name}: model accuracy {_cell(block['model_accuracy'])}, {block['attributed']}/{block['prompts']} "
            f"attributed; best baseline {best}",
            f"{'variant':<20} {'hit@1':>18} {'rank of 1st causal':>20} {'deletion AOPC':>20} {'insertion AOPC':>20} "
            f"{'hit@1 - best baseline':>22} {'hit@1 - heta':>18} {'s/prompt':>9} {'flips':>18}",
        ]
        for variant, cell in {**block["methods"], **block["ablations"]}.items():
            lines.append(
                f"{variant:<20} {_cell(cell['hit@1']):>18} {_cell(cell['rank']):>20} "
                f"{_cell(cell['deletion_aopc'], 3):>20} {_cell(cell['insertion_aopc'], 3):>20} "
                f"{_cell(cell.get('hit@1_minus_best_baseline')):>22} "
                f"{_cell(cell['hit@1_minus_heta']) if 'hit@1_minus_heta' in cell else '':>18} "
                f"{cell['seconds_per_prompt']:>9.4f} {_cell(cell['flips']) if 'flips' in cell else '':>18}"
            )
    presets = render_presets(report)
    return "\n".join(lines + (["", presets] if presets else []))


def preset_rows(report: dict) -> list[dict]:
    """Per variant (the presets of ``--presets``) and condition: its hit@1, exact's, whether its value lies
    inside exact's Wilson interval, its mean Spearman ρ with exact, and its seconds per prompt relative to
    exact's (measured in the same run)."""
    names = [name for name, _ in report["settings"].get("variants", [])]
    rows = []
    for name in names:
        for condition, block in report["conditions"].items():
            cell, exact = block["ablations"].get(name), block["methods"].get("heta")
            if not cell or not exact or cell["hit@1"]["mean"] is None:
                continue
            low, high = exact["hit@1"]["ci95"]
            rows.append(
                {
                    "variant": name,
                    "condition": condition,
                    "hit@1": cell["hit@1"],
                    "exact_hit@1": exact["hit@1"],
                    "inside": low - 1e-12 <= cell["hit@1"]["mean"] <= high + 1e-12,
                    "rho": cell["rho_vs_heta"]["mean"],
                    "cost": cell["seconds_per_prompt"] / exact["seconds_per_prompt"],
                    "planned_cost": cell["planned_seconds_per_prompt"] / exact["planned_seconds_per_prompt"],
                    "paired": cell["hit@1_minus_heta"],
                }
            )
    return rows


def render_presets(report: dict) -> str:
    rows = preset_rows(report)
    if not rows:
        return ""
    lines = [
        "presets: hit@1 [Wilson 95%] per condition; in = inside exact's interval; ρ = mean Spearman with exact's "
        "scores; cost = seconds per prompt / exact's, measured and planned (the time model at the measured speed)",
        f"{'variant':<18} {'condition':<10} {'hit@1':>18} {'exact':>18} {'in':>3} {'ρ':>6} {'cost':>6} {'plan':>6}",
    ]
    for row in rows:
        lines.append(
            f"{row['variant']:<18} {row['condition']:<10} {_cell(row['hit@1']):>18} {_cell(row['exact_hit@1']):>18} "
            f"{'yes' if row['inside'] else 'NO':>3} {row['rho']:>6.3f} {row['cost']:>6.2f} {row['planned_cost']:>6.2f}"
        )
    for name in dict.fromkeys(row["variant"] for row in rows):
        mine = [row for row in rows if row["variant"] == name]
        cost = sum(row["cost"] for row in mine) / len(mine)
        planned = sum(row["planned_cost"] for row in mine) / len(mine)
        lines.append(
            f"{name}: inside exact's interval in {sum(r['inside'] for r in mine)}/{len(mine)} conditions; "
            f"mean cost {cost:.2f} measured, {planned:.2f} planned"
        )
    return "\n".join(lines)


# ---- the plot -----------------------------------------------------------------------------------


def plot(reports: Sequence[dict], path: str, methods: Sequence[str] | None = None) -> None:
    """hit@1 with Wilson error bars, methods × conditions, one panel per model, plus HETA with the
    other ``normalize`` (the choice of default is read off this); grey bars: the model's accuracy per
    condition (only its correct answers are attributed). PNG, headless."""
    import matplotlib

    matplotlib.use("Agg")  # no display: CI and servers
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(len(reports), 1, figsize=(11, 3.2 * len(reports) + 0.6), squeeze=False)
    for axis, report in zip(axes[:, 0], reports, strict=True):
        names = list(report["conditions"])
        shown = list(methods or report["settings"]["methods"])
        normalize = report["settings"]["config"]["normalize"]
        if "heta" in shown:
            shown.insert(shown.index("heta") + 1, "normalize=" + ("none" if normalize == "simplex" else "simplex"))
        accuracy = [report["conditions"][name]["model_accuracy"]["mean"] or 0.0 for name in names]
        axis.bar(range(len(names)), accuracy, width=0.9, color="0.9", label="model accuracy")
        width = 0.8 / len(shown)
        for k, method in enumerate(shown):
            xs, ys, low, high = [], [], [], []
            for c, name in enumerate(names):
                block = report["conditions"][name]
                cell = {**block["ablations"], **block["methods"]}.get(method, {}).get("hit@1")
                if cell and cell["mean"] is not None:
                    xs.append(c - 0.4 + width * (k + 0.5))
                    ys.append(cell["mean"])
                    low.append(cell["mean"] - cell["ci95"][0])
                    high.append(cell["ci95"][1] - cell["mean"])
            label = f"heta ({method})" if method.startswith("normalize=") else method
            label = f"heta (normalize={normalize})" if method == "heta" else label
            axis.errorbar(xs, ys, yerr=[low, high], fmt="o", markersize=4, capsize=2, label=label)
        axis.set_xticks(range(len(names)), names)
        axis.set_xlim(-0.5, len(names) - 0.5)
        axis.set_ylim(0, 1.04)
        axis.set_ylabel("hit@1")
        axis.set_title(f"{report['model']}: hit@1 of a causal token (Wilson 95%), attributed prompts only", fontsize=10)
        axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="lower center", ncol=(len(labels) + 1) // 2, fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
