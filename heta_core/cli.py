"""The ``heta`` command line.

``heta attribute`` and ``heta bench`` live here. Other distributions' commands (the HTTP service's
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


def render_table(result) -> str:
    """Each context token with a bar per score (each column scaled to its own maximum)."""
    columns = ("scores", "flow", "hessian", "kl")
    values = {name: getattr(result, name).tolist() for name in columns}
    largest = {name: max(values[name], default=0.0) for name in columns}
    target = result.target
    lines = [
        f"model {result.meta.get('model')}  target {target.text!r} at position {target.position}  "
        f"log p = {target.logprob:.4f}",
        f"{'pos':>4}  {'token':<14}" + "".join(f"  {name:<{BAR_WIDTH + 11}}" for name in ("score", "flow", "hessian", "kl")),
    ]
    for i, token in enumerate(result.tokens):
        label = (token.text if token.text is not None else str(token.id)).replace("\n", "\\n")[:14]
        cells = "".join(f"  {bar(values[n][i], largest[n])} {values[n][i]:>10.4g}" for n in columns)
        lines.append(f"{i:>4}  {label:<14}{cells}")
    return "\n".join(lines)


def _add_attribute(commands) -> None:
    parser = commands.add_parser("attribute", help="attribute a model's next-token prediction to its context")
    parser.add_argument("--model", required=True, help="Hugging Face id or local path (safetensors)")
    parser.add_argument("--text", required=True, help="the input; the last token is the target by default")
    parser.add_argument("--target-position", type=int, default=None, help="index of the explained token")
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
    parser.add_argument("--format", choices=("json", "table"), default="table")
    parser.set_defaults(run=_run_attribute)


def _run_attribute(args) -> int:
    from .attributor import Attributor
    from .config import HetaConfig

    config = HetaConfig(
        num_hvp_samples=args.samples, seed=args.seed, beta=args.beta, gamma=args.gamma, mask=args.mask,
        flow=args.flow, normalize=args.normalize, strategy=args.strategy, memory_budget_mb=args.memory_budget_mb,
    )  # fmt: skip
    attributor = Attributor.from_pretrained(args.model, config=config, device=args.device, dtype=args.dtype)
    result = attributor.attribute(args.text, target_position=args.target_position)
    print(json.dumps(result.to_dict(), indent=2) if args.format == "json" else render_table(result))
    return 0


def _add_bench(commands) -> None:
    from .bench import add_arguments, run_from_args

    parser = commands.add_parser("bench", help="time the fast path against the reference path")
    add_arguments(parser)
    parser.set_defaults(run=run_from_args)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="heta", description="Hessian-Enhanced Token Attribution for decoder-only LMs")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_attribute(commands)
    _add_bench(commands)
    for entry in metadata.entry_points(group="heta.commands"):
        entry.load()(commands)
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
