"""``heta eval`` (methods × faithfulness metrics on a dataset with known answers) and ``heta
train-demo`` (reproduce the builtin heta-demo model from its seed)."""

from __future__ import annotations

import json
import os
import sys

from ..methods.registry import METHODS
from .usage import UsageError

def register(commands) -> None:
    _add_eval(commands)
    _add_train_demo(commands)


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
    from ..attributor import Attributor
    from ..config import HetaConfig
    from ..evaluation import EvalSettings, evaluate, qa_items, render, synthetic_items

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
    from ..evaluation.demo import train

    if os.path.exists(args.out) and os.listdir(args.out):
        raise UsageError(f"{args.out} exists and is not empty")
    if args.steps is not None and args.steps < 1:
        raise UsageError(f"--steps must be >= 1, got {args.steps}")
    options = {"steps": args.steps} if args.steps is not None else {}
    report = train.train(args.out, seed=args.seed, log=lambda line: print(line, file=sys.stderr), **options)
    print(json.dumps(report, indent=2))
    return 0
