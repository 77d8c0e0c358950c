"""``heta attribute``: one attribution, printed as a table of bars or as the result JSON."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import get_args

from ..config import HetaConfig
from ..inputs.request import AttributionRequest, TargetMode
from ..methods.registry import METHOD_ALIASES, METHODS
from .placement import add_placement_flags, placement
from .usage import UsageError

# HetaConfig's own defaults, for the help text: a flag left out is not passed, so the config's default (or preset's)
# holds
_DEFAULT = {field.name: field.default for field in dataclasses.fields(HetaConfig)}

BAR_WIDTH = 12
_BLOCKS = " ▏▎▍▌▋▊▉█"


def bar(value: float, largest: float, width: int = BAR_WIDTH) -> str:
    """A left-aligned unicode bar of ``width`` cells, full at ``largest`` (eighth-cell resolution)."""
    if largest <= 0 or value <= 0:
        return " " * width
    eighths = round(min(value / largest, 1.0) * width * 8)
    full, rest = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[rest] if rest else "")).ljust(width)


def _columns(result) -> list[str]:
    """The score and, for HETA, its three components (a baseline has the score only)."""
    return [name for name in ("scores", "flow", "hessian", "kl") if getattr(result, name) is not None]


def _table_rows(result, granularity: str, row: int | None):
    """(label, {column: value}) per token or aggregated unit; ``row`` picks a target in "each" mode."""

    def pick(value):
        return value[row] if row is not None else value

    columns = _columns(result)
    if granularity == "token":
        for token in result.tokens:
            label = token.text if token.text is not None else str(token.id)
            values = {name: float(pick(getattr(result, name)[..., token.position])) for name in columns}
            yield label, values
        return
    for unit in result.aggregates[granularity]:
        yield unit.text, {name: pick(getattr(unit, "score" if name == "scores" else name)) for name in columns}


def render_table(result, granularity: str = "token") -> str:
    """Each token (or word / sentence) with a bar per score (each column scaled to its own maximum).

    Bars show positive values; a signed baseline's negative scores show as numbers only."""
    columns = _columns(result)
    lines = []
    rows = range(len(result.targets)) if result.target_mode == "each" else [None]
    for row in rows:
        targets = result.targets if row is None else [result.targets[row]]
        described = " ".join(repr(t.text) for t in targets)
        logprob = sum(t.logprob for t in targets)
        lines.append(
            f"model {result.meta.model}  method {result.method}  target {described} at position "
            f"{targets[0].position}  log p = {logprob:.4f}"
        )
        lines.append(
            f"{'#':>4}  {granularity:<14}"
            + "".join(f"  {name.removesuffix('s') if name == 'scores' else name:<{BAR_WIDTH + 11}}" for name in columns)
        )
        table = list(_table_rows(result, granularity, row))
        largest = {name: max((v[name] for _, v in table), default=0.0) for name in columns}
        for i, (label, values) in enumerate(table):
            label = label.replace("\n", "\\n")
            label = label if len(label) <= 14 else label[:13] + "…"
            cells = "".join(f"  {bar(values[n], largest[n])} {values[n]:>10.4g}" for n in columns)
            lines.append(f"{i:>4}  {label:<14}{cells}")
    if result.diagnostics is not None:
        from ..results.diagnostics import describe

        lines += ["faithfulness: " + line for line in describe(result)]
    return "\n".join(lines)


def register(commands) -> None:
    parser = commands.add_parser("attribute", help="attribute a model's next-token prediction to its context")
    parser.add_argument(
        "--model", default="heta-demo", help="Hugging Face id, local path (safetensors) or heta-demo (default)"
    )
    parser.add_argument(
        "--method", help=f"{' | '.join(METHODS)} (short: {', '.join(METHOD_ALIASES)}; default {_DEFAULT['method']})"
    )
    parser.add_argument(
        "--ig-steps", type=int, help=f"integrated_gradients quadrature points (default {_DEFAULT['ig_steps']})"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the input; the last token is the target by default")
    source.add_argument("--messages", help="chat messages as JSON ([{role, content}, ...]) or @FILE")
    source.add_argument(
        "--input", metavar="FILE.jsonl", help="many prompts: one API request body per line (docs/python.md)"
    )
    parser.add_argument(
        "--output", metavar="FILE.jsonl", help="with --input: one result (or error) per line; a rerun resumes it"
    )
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-position", type=int, default=None, help="index of the explained token")
    target.add_argument("--target-text", default=None, help="a continuation to attribute (appended to the input)")
    target.add_argument(
        "--generate", type=int, default=None, metavar="N", help="greedily generate N tokens and attribute them"
    )
    target.add_argument(
        "--response-ids",
        type=_id_list,
        default=None,
        metavar="1,2,3",
        help="a response produced elsewhere, as token ids (appended as given; attributed like --target-text)",
    )
    foil = parser.add_mutually_exclusive_group()
    foil.add_argument(
        "--foil-text", default=None, help="contrastive: explain log p(target) - log p(foil) for this one-token foil"
    )
    foil.add_argument("--foil-id", type=int, default=None, help="contrastive: the foil as a token id")
    parser.add_argument(
        "--target-mode",
        choices=get_args(TargetMode),
        default=AttributionRequest.defaults()["target_mode"],
        help="a span as one target or one row per token",
    )
    parser.add_argument("--granularity", choices=("token", "word", "sentence"), default="token")
    parser.add_argument("--include-template", action="store_true", help="count chat-template tokens in aggregates")
    parser.add_argument("--spans", help="character spans to aggregate, as JSON ([[start, end], ...]) or @FILE")
    parser.add_argument(
        "--preset",
        choices=("exact", "balanced", "fast"),
        default=None,
        help="HETA's cost bundle (default exact; docs/benchmarks.md: "
        "what each costs and loses); the flags below override it",
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=None,
        metavar="S",
        help="a time budget: the most exact preset whose estimate fits runs, ending with what it has when time is up",
    )
    parser.add_argument(
        "--samples", type=int, default=None, help="Rademacher probes per token (m; default: the preset's, 10)"
    )
    parser.add_argument("--seed", type=int, help=f"seeds the probes (default {_DEFAULT['seed']})")
    parser.add_argument("--beta", type=float, default=None, help="weight of S (default: the preset's, 0.5)")
    parser.add_argument("--gamma", type=float, help=f"weight of I (default {_DEFAULT['gamma']})")
    parser.add_argument("--mask", help=f"zero | mean | token:<id> (default {_DEFAULT['mask']})")
    parser.add_argument("--flow", help=f"heta | official (default {_DEFAULT['flow']})")
    parser.add_argument("--normalize", default=None, help="simplex (default) | none (the paper's Eq. 5)")
    parser.add_argument("--strategy", help=f"fast | reference (default {_DEFAULT['strategy']})")
    parser.add_argument("--memory-budget-mb", type=int, default=None, help="default: auto")
    add_placement_flags(parser)
    parser.add_argument("--curvature", default=None, help="exact | ggn (default: the preset's, exact)")
    parser.add_argument("--curvature-layers", type=int, default=None, metavar="K")
    parser.add_argument("--low-rank", type=int, default=None, metavar="K")
    parser.add_argument("--window", type=int, default=None, metavar="W")
    parser.add_argument(
        "--overlap", type=float, help=f"with --window: overlap fraction of windows (default {_DEFAULT['overlap']})"
    )
    parser.add_argument(
        "--diagnostics",
        action="store_true",
        default=None,
        help="also measure faithfulness: p(target) with the top 1, 3, 5, 10%% tokens removed / only kept",
    )
    parser.add_argument(
        "--format",
        choices=("json", "table", "html"),
        default="table",
        help="html: a self-contained report (the explorer page's heatmap), e.g. > report.html",
    )
    parser.set_defaults(run=run)


def _id_list(argument: str) -> list[int]:
    """``--response-ids 1,2,3`` (spaces allowed)."""
    try:
        return [int(part) for part in argument.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token ids, got {argument!r}") from None


def _json_argument(argument: str | None, flag: str):
    """A JSON value given inline or as @FILE."""
    if argument is None:
        return None
    try:
        if argument.startswith("@"):
            with open(argument[1:], encoding="utf-8") as handle:
                argument = handle.read()
        return json.loads(argument)
    except OSError as error:
        raise UsageError(f"cannot read {flag} file: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"{flag} is not valid JSON: {error.msg} at position {error.pos}") from None


def run(args) -> int:
    from ..attributor import Attributor

    given = dict(
        method=args.method,
        ig_steps=args.ig_steps,
        num_hvp_samples=args.samples,
        seed=args.seed,
        beta=args.beta,
        gamma=args.gamma,
        mask=args.mask,
        flow=args.flow,
        normalize=args.normalize,
        strategy=args.strategy,
        memory_budget_mb=args.memory_budget_mb,
        curvature=args.curvature,
        curvature_layers=args.curvature_layers,
        low_rank=args.low_rank,
        window=args.window,
        overlap=args.overlap,
        diagnostics=args.diagnostics,
        preset=args.preset,
        budget_s=args.budget_s,
    )
    # flags left out take HetaConfig's defaults (a preset's knobs: the preset's)
    config = HetaConfig.from_dict({name: value for name, value in given.items() if value is not None})
    if (args.input is None) != (args.output is None):
        raise UsageError("--input and --output go together (prompts.jsonl in, results.jsonl out)")
    if args.input is not None:
        from . import jsonl

        items = jsonl.read_items(args.input)  # a missing or empty file fails before the model loads
        attributor = Attributor.from_pretrained(args.model, config=config, **placement(args))
        return jsonl.run(attributor, items, Path(args.output), config)
    messages = _json_argument(args.messages, "--messages")
    spans = _json_argument(args.spans, "--spans")
    attributor = Attributor.from_pretrained(args.model, config=config, **placement(args))
    # the request's fields by their flags (input_ids has none: a JSONL line of --input carries it)
    parsed = {"messages": messages, "spans": spans}
    request = {
        name: parsed.get(name, getattr(args, name)) for name in AttributionRequest.fields() if hasattr(args, name)
    }
    result = attributor.attribute(**request, granularity=args.granularity)
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    elif args.format == "html":
        from ..results.report import render_report

        print(render_report(result))
    else:
        print(render_table(result, args.granularity))
    return 0
