"""The ``heta`` command line.

``heta attribute``, ``heta eval``, ``heta bench`` and ``heta train-demo`` live here. Other distributions' commands (the HTTP service's
``serve``, ``api``, ``worker``) are plugged in through the ``heta.commands`` entry-point group, so
the engine never imports them. Bad input exits with status 2 and one line on stderr, never a
traceback (set ``HETA_DEBUG=1`` to see one for unexpected errors).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from importlib import metadata
from typing import Sequence

from .config import METHODS
from .errors import HetaError

EXIT_USAGE = 2
EXIT_INTERNAL = 1
BAR_WIDTH = 12
_BLOCKS = " ▏▎▍▌▋▊▉█"


class UsageError(Exception):
    """A malformed command line (reported as one line, exit status 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print the whole usage block
        raise UsageError(message)


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
        yield unit["text"], {name: pick(unit["score" if name == "scores" else name]) for name in columns}


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
            f"model {result.meta.get('model')}  method {result.method}  target {described} at position "
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
    return "\n".join(lines)


def _add_attribute(commands) -> None:
    parser = commands.add_parser("attribute", help="attribute a model's next-token prediction to its context")
    parser.add_argument("--model", default="heta-demo", help="Hugging Face id, local path (safetensors) or heta-demo (default)")
    parser.add_argument("--method", default="heta", help=f"{' | '.join(METHODS)} (short: ig, ixg, rollout, loo)")
    parser.add_argument("--ig-steps", type=int, default=32, help="integrated_gradients quadrature points")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the input; the last token is the target by default")
    source.add_argument("--messages", help="chat messages as JSON ([{role, content}, ...]) or @FILE")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--target-position", type=int, default=None, help="index of the explained token")
    target.add_argument("--target-text", default=None, help="a continuation to attribute (appended to the input)")
    target.add_argument("--generate", type=int, default=None, metavar="N", help="greedily generate N tokens and attribute them")
    parser.add_argument("--target-mode", choices=("sum", "each"), default="sum", help="a span as one target or one row per token")
    parser.add_argument("--granularity", choices=("token", "word", "sentence"), default="token")
    parser.add_argument("--include-template", action="store_true", help="count chat-template tokens in aggregates")
    parser.add_argument("--samples", type=int, default=10, help="Rademacher probes per token (m)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--gamma", type=float, default=0.5)
    parser.add_argument("--mask", default="zero", help="zero | mean | token:<id>")
    parser.add_argument("--flow", default="heta", help="heta | official")
    parser.add_argument("--normalize", default="none", help="none | simplex")
    parser.add_argument("--strategy", default="fast", help="fast | reference")
    parser.add_argument("--memory-budget-mb", type=int, default=None, help="default: auto")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="auto | float32 | float64 | bfloat16 | float16")
    parser.add_argument("--curvature", default="exact", help="exact | ggn")
    parser.add_argument("--curvature-layers", type=int, default=None, metavar="K")
    parser.add_argument("--low-rank", type=int, default=None, metavar="K")
    parser.add_argument("--window", type=int, default=None, metavar="W")
    parser.add_argument("--overlap", type=float, default=0.0)
    parser.add_argument("--format", choices=("json", "table"), default="table")
    parser.set_defaults(run=_run_attribute)


def _messages(argument: str | None):
    if argument is None:
        return None
    try:
        if argument.startswith("@"):
            with open(argument[1:], encoding="utf-8") as handle:
                argument = handle.read()
        return json.loads(argument)
    except OSError as error:
        raise UsageError(f"cannot read messages file: {error.strerror}") from None
    except json.JSONDecodeError as error:
        raise UsageError(f"--messages is not valid JSON: {error.msg} at position {error.pos}") from None


def _run_attribute(args) -> int:
    from .attributor import Attributor
    from .config import HetaConfig

    config = HetaConfig(
        method=args.method, ig_steps=args.ig_steps, num_hvp_samples=args.samples, seed=args.seed, beta=args.beta, gamma=args.gamma, mask=args.mask,
        flow=args.flow, normalize=args.normalize, strategy=args.strategy, memory_budget_mb=args.memory_budget_mb,
        curvature=args.curvature, curvature_layers=args.curvature_layers, low_rank=args.low_rank, window=args.window,
        overlap=args.overlap,
    )  # fmt: skip
    messages = _messages(args.messages)
    attributor = Attributor.from_pretrained(args.model, config=config, device=args.device, dtype=args.dtype)
    result = attributor.attribute(
        args.text, messages=messages, target_position=args.target_position, target_text=args.target_text,
        target_mode=args.target_mode, generate=args.generate, granularity=args.granularity,
        include_template=args.include_template,
    )  # fmt: skip
    if args.format == "json":
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(render_table(result, args.granularity))
    return 0


def _add_eval(commands) -> None:
    parser = commands.add_parser("eval", help="methods x faithfulness/plausibility metrics on a dataset with known answers")
    parser.add_argument("--model", default="heta-demo", help="Hugging Face id, local path or heta-demo (default)")
    parser.add_argument("--dataset", default="synthetic", help="synthetic (the demo task) or PATH to a NarrativeQA+SciQ JSON")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument("--n", type=int, default=100, help="number of examples (default 100)")
    parser.add_argument("--top-k", type=int, default=3, help="k of hit@k, comp@k, suff@k")
    parser.add_argument("--samples", type=int, default=10, help="HETA Rademacher probes per token (m)")
    parser.add_argument("--normalize", default="none", help="HETA: none | simplex")
    parser.add_argument("--mask", default="zero", help="removal vector: zero | mean | token:<id>")
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="data (synthetic), probes, Soft-NC/NS draws, bootstrap")
    parser.add_argument("--device", default=None)
    parser.add_argument("--dtype", default=None, help="auto | float32 | float64 | bfloat16 | float16")
    parser.add_argument("--format", choices=("json", "table"), default="table")
    parser.set_defaults(run=_run_eval)


def _run_eval(args) -> int:
    from .attributor import Attributor
    from .config import HetaConfig
    from .evaluation import EvalSettings, evaluate, qa_items, render, synthetic_items

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UsageError("--methods is empty")
    if args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    config = HetaConfig(num_hvp_samples=args.samples, normalize=args.normalize, mask=args.mask, ig_steps=args.ig_steps, seed=args.seed)
    for method in methods:
        config.replace(method=method)  # an unknown name fails here, before the model loads
    items = synthetic_items(args.n, args.seed) if args.dataset == "synthetic" else qa_items(args.dataset, args.n)
    attributor = Attributor.from_pretrained(args.model, config=config, device=args.device, dtype=args.dtype)
    def progress(done: int, total: int) -> None:  # ~10 lines on stderr; stdout stays the report
        if done == total or done % max(1, total // 10) == 0:
            print(f"heta eval: {done}/{total} examples", file=sys.stderr, flush=True)

    report = evaluate(
        attributor, items, methods, settings=EvalSettings(top_k=args.top_k, seed=args.seed),
        dataset="synthetic" if args.dataset == "synthetic" else os.path.basename(args.dataset), progress=progress,
    )  # fmt: skip
    print(json.dumps(report, indent=2) if args.format == "json" else render(report))
    return 0


def _add_train_demo(commands) -> None:
    parser = commands.add_parser("train-demo", help="reproduce the builtin heta-demo model from a seed (a few CPU minutes)")
    parser.add_argument("--out", required=True, help="directory to write the model, tokenizer and training.json")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="default: the shipped model's")
    parser.set_defaults(run=_run_train_demo)


def _run_train_demo(args) -> int:
    from .demo import train

    if os.path.exists(args.out) and os.listdir(args.out):
        raise UsageError(f"{args.out} exists and is not empty")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    options = {"steps": args.steps} if args.steps is not None else {}
    report = train.train(args.out, seed=args.seed, log=lambda line: print(line, file=sys.stderr), **options)
    print(json.dumps(report, indent=2))
    return 0


def _add_bench(commands) -> None:
    from .bench import add_arguments, run_from_args

    parser = commands.add_parser("bench", help="time the fast path against the reference path")
    add_arguments(parser)
    parser.set_defaults(run=run_from_args)


def _add_bench_approx(commands) -> None:
    from .bench import run_agreement_from_args

    parser = commands.add_parser(
        "bench-approx", help="agreement of each long-context approximation with the exact estimator (small models)"
    )
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(run=run_agreement_from_args)


def _add_bench_long(commands) -> None:
    from .bench import run_long_from_args

    parser = commands.add_parser("bench-long", help="one long-context attribution: time, memory and the estimate")
    for name, default in (("layers", 6), ("width", 512), ("heads", 8), ("vocab", 50257), ("context", 512), ("samples", 10)):
        parser.add_argument(f"--{name}", type=int, default=default)
    parser.add_argument("--curvature-layers", type=int, default=2, help="0: exact curvature w.r.t. X")
    parser.add_argument("--low-rank", type=int, default=32, help="0: exact per-token blocks")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory-budget-mb", type=int, default=None)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(run=run_long_from_args)


def _add_toy_model(commands) -> None:
    parser = commands.add_parser("toy-model", help="write a tiny random model + tokenizer to PATH (for trying things offline)")
    parser.add_argument("path")
    parser.add_argument("--family", default="gpt2", help="gpt2, gptj, gpt_neox, llama, mistral, qwen2, phi3, gemma")
    parser.set_defaults(run=_run_toy_model)


def _run_toy_model(args) -> int:
    import os

    from .toymodels import TINY_CONFIGS, tiny_model, tiny_tokenizer

    if args.family not in TINY_CONFIGS:
        raise UsageError(f"--family must be one of {', '.join(TINY_CONFIGS)}")
    if os.path.exists(args.path) and os.listdir(args.path):
        raise UsageError(f"{args.path} exists and is not empty")
    tiny_model(args.family).save_pretrained(args.path)
    tiny_tokenizer().save_pretrained(args.path)
    print(f"wrote a random {args.family} toy model (its scores mean nothing) to {args.path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="heta", description="Hessian-Enhanced Token Attribution for decoder-only LMs")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_attribute(commands)
    _add_eval(commands)
    _add_train_demo(commands)
    _add_bench(commands)
    _add_bench_approx(commands)
    _add_bench_long(commands)
    _add_toy_model(commands)
    for entry in metadata.entry_points(group="heta.commands"):
        try:
            register = entry.load()
        except ImportError:  # the plugin's extras are not installed: its commands are absent
            continue
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        _quiet_libraries()
        return args.run(args)
    except (UsageError, HetaError) as error:
        print(f"heta: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - last resort: one line, not a traceback
        if os.environ.get("HETA_DEBUG"):
            raise
        print(f"heta: internal error: {type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        return EXIT_INTERNAL


def _quiet_libraries() -> None:
    """Library warnings are noise on a CLI's stderr; errors still surface as exceptions."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore")


if __name__ == "__main__":
    sys.exit(main())
