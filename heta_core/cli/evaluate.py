"""``heta eval`` (methods × faithfulness metrics on a dataset with known answers; ``--suite``: per
condition, with intervals and HETA's ablations) and ``heta train-demo`` (reproduce a builtin demo
model from its seed)."""

from __future__ import annotations

import json
import os
import sys
import time

from ..methods.registry import METHODS
from .placement import add_placement_flags, placement
from .usage import UsageError

DEMO_MODELS = ("heta-demo", "heta-demo-hard")


def register(commands) -> None:
    _add_eval(commands)
    _add_train_demo(commands)


def _add_eval(commands) -> None:
    parser = commands.add_parser(
        "eval", help="methods x faithfulness/plausibility metrics on a dataset with known answers"
    )
    parser.add_argument(
        "--model",
        default=None,
        help="Hugging Face id, local path, heta-demo or heta-demo-hard (default: heta-demo; --suite: both demo models)",
    )
    parser.add_argument(
        "--dataset", default="synthetic", help="synthetic (the demo task) or PATH to a NarrativeQA+SciQ JSON"
    )
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: all)")
    parser.add_argument(
        "--n", type=int, default=None, help="number of examples (default 100; --suite: per condition, 100, --quick 12)"
    )
    parser.add_argument("--top-k", type=int, default=3, help="k of hit@k, comp@k, suff@k")
    parser.add_argument(
        "--samples", type=int, default=None, help="HETA Rademacher probes per token (m; default: HetaConfig's)"
    )
    parser.add_argument("--normalize", default=None, help="HETA: simplex | none (default: HetaConfig's, simplex)")
    parser.add_argument("--mask", default="zero", help="removal vector: zero | mean | token:<id>")
    parser.add_argument("--ig-steps", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="data (synthetic), probes, Soft-NC/NS draws, bootstrap")
    add_placement_flags(parser)
    parser.add_argument("--format", choices=("json", "table"), default="table")
    parser.add_argument(
        "--agreement",
        action="store_true",
        help="per prompt Spearman ρ and top-k overlap of the model as placed by --quantize/--dtype/--device-map "
        "against the same weights in float32 on one device (default: both demo models)",
    )
    suite = parser.add_argument_group("condition suite (docs/evaluation.md)")
    suite.add_argument(
        "--suite", action="store_true", help="per condition: accuracy, hit@1 with intervals, ranks, AOPC, ablations"
    )
    suite.add_argument(
        "--quick",
        action="store_true",
        help="--suite with 12 prompts per condition and Hessian samples 2 and 10 only (CI: under 3 minutes)",
    )
    suite.add_argument(
        "--conditions", default=None, help="comma-separated subset of the demo conditions (default: all of the model's)"
    )
    suite.add_argument(
        "--presets",
        action="store_true",
        help="also run HETA with each preset (fast, balanced): hit@1 against exact's interval, ρ and cost",
    )
    suite.add_argument(
        "--ablate-samples",
        default=None,
        metavar="M,M",
        help="Hessian sample counts of the seed ablation (default 2,10,50; --quick 2,10); none: skip it",
    )
    suite.add_argument(
        "--out", default="heta-suite", help="--suite: directory for suite.json and hit_at_1.png (default ./heta-suite)"
    )
    suite.add_argument("--no-plot", action="store_true", help="--suite: skip the PNG (no matplotlib needed)")
    parser.set_defaults(run=_run_eval)


def _config(args):
    from ..config import HetaConfig

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise UsageError("--methods is empty")
    if args.n is not None and args.n < 1:
        raise UsageError(f"--n must be >= 1, got {args.n}")
    if args.top_k < 1:
        raise UsageError(f"--top-k must be >= 1, got {args.top_k}")
    chosen = {"num_hvp_samples": args.samples, "normalize": args.normalize}
    config = HetaConfig(
        mask=args.mask, ig_steps=args.ig_steps, seed=args.seed, **{k: v for k, v in chosen.items() if v is not None}
    )
    for method in methods:
        config.replace(method=method)  # an unknown name fails here, before the model loads
    return methods, config


def _stderr_progress(label: str):
    def progress(done: int, total: int) -> None:  # ~10 lines on stderr; stdout stays the report
        if done == total or done % max(1, total // 10) == 0:
            print(f"heta eval: {label}{done}/{total}", file=sys.stderr, flush=True)

    return progress


def _run_eval(args) -> int:
    if args.agreement:
        return _run_agreement(args)
    if args.suite or args.quick:
        return _run_suite(args)
    from ..attributor import Attributor
    from ..evaluation import EvalSettings, evaluate, qa_items, render, synthetic_items

    methods, config = _config(args)
    n = args.n or 100
    items = synthetic_items(n, args.seed) if args.dataset == "synthetic" else qa_items(args.dataset, n)
    attributor = Attributor.from_pretrained(args.model or "heta-demo", config=config, **placement(args))
    report = evaluate(
        attributor,
        items,
        methods,
        settings=EvalSettings(top_k=args.top_k, seed=args.seed),
        dataset="synthetic" if args.dataset == "synthetic" else os.path.basename(args.dataset),
        progress=_stderr_progress("examples "),
    )
    print(json.dumps(report, indent=2) if args.format == "json" else render(report))
    return 0


def _run_suite(args) -> int:
    from dataclasses import replace

    from ..attributor import Attributor
    from ..evaluation import suite, suite_report
    from ..evaluation.demo.conditions import MODEL_CONDITIONS
    from ..evaluation.harness import qa_items

    methods, config = _config(args)
    settings = suite.QUICK if args.quick else suite.SuiteSettings()
    settings = replace(
        settings,
        seed=args.seed,
        **({"n": args.n} if args.n else {}),
        **({"variants": suite.PRESET_VARIANTS} if args.presets else {}),
    )
    if args.ablate_samples is not None:
        text = args.ablate_samples.strip()
        try:
            samples = () if text == "none" else tuple(int(v) for v in text.split(",") if v.strip())
        except ValueError:
            samples = (0,)
        if any(m < 1 for m in samples) or (text != "none" and not samples):
            raise UsageError(
                f"--ablate-samples must be positive integers (e.g. 2,10) or none, got {args.ablate_samples!r}"
            )
        settings = replace(settings, samples=samples)
    synthetic = args.dataset == "synthetic"
    models = [args.model] if args.model else list(DEMO_MODELS)
    if synthetic and any(m not in MODEL_CONDITIONS for m in models):
        raise UsageError(
            "the suite's conditions are built for heta-demo and heta-demo-hard; another model needs --dataset PATH"
        )
    wanted = [c.strip() for c in args.conditions.split(",") if c.strip()] if args.conditions else None
    for model in models if synthetic and wanted else ():
        unknown = [c for c in wanted if c not in MODEL_CONDITIONS[model][1]]
        if unknown:
            raise UsageError(
                f"--conditions: {', '.join(unknown)} not among {model}'s: {', '.join(MODEL_CONDITIONS[model][1])}"
            )
    if not args.no_plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError(
                "the suite's plot needs matplotlib (pip install 'heta[eval]'), or pass --no-plot"
            ) from None
    os.makedirs(args.out, exist_ok=True)
    started = time.perf_counter()
    reports = []
    for model in models:
        attributor = Attributor.from_pretrained(model, config=config, **placement(args))
        if synthetic:
            conditions = suite.demo_conditions(model, settings.n, args.seed, wanted)
        else:
            conditions = {os.path.basename(args.dataset): qa_items(args.dataset, settings.n)}

        def progress(condition: str, done: int, total: int, model=model) -> None:
            if done == total:
                print(f"heta eval --suite: {model} {condition} {total} prompts attributed", file=sys.stderr, flush=True)

        reports.append(
            suite.run_suite(attributor, conditions, methods, config=config, settings=settings, progress=progress)
        )
    document = {"models": reports, "seconds": round(time.perf_counter() - started, 1)}
    with open(os.path.join(args.out, "suite.json"), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
    if not args.no_plot:
        suite_report.plot(reports, os.path.join(args.out, "hit_at_1.png"))
    print(
        json.dumps(document, indent=2)
        if args.format == "json"
        else "\n\n".join(suite_report.render(r) for r in reports)
    )
    print(
        f"heta eval --suite: {document['seconds']} s; wrote {args.out}/suite.json"
        + ("" if args.no_plot else f" and {args.out}/hit_at_1.png"),
        file=sys.stderr,
    )
    return 0


def _run_agreement(args) -> int:
    from ..attributor import Attributor
    from ..evaluation import agreement, suite
    from ..evaluation.harness import qa_items

    if args.suite or args.quick:
        raise UsageError("--agreement and --suite are separate runs")
    if not (args.quantize or args.device_map or args.dtype not in (None, "float32")):
        raise UsageError("--agreement compares a placement with float32: give --quantize, --dtype or --device-map")
    methods, config = _config(args)
    n = args.n or 30
    synthetic = args.dataset == "synthetic"
    models = [args.model] if args.model else list(DEMO_MODELS)
    if synthetic and any(m not in DEMO_MODELS for m in models):
        raise UsageError(
            "--agreement's synthetic prompts are the demo models' tasks; another model needs --dataset PATH"
        )
    reports = []
    for model in models:
        # the candidate first: its flags fail here, before the reference is loaded
        candidate = Attributor.from_pretrained(model, config=config, **placement(args, dtype=args.dtype or "float32"))
        reference = Attributor.from_pretrained(model, config=config, device=args.device, dtype="float32")
        if synthetic:  # every condition of the model, in turn, n prompts in all
            conditions = list(suite.demo_conditions(model, n, args.seed).values())
            items = [c[i] for i in range(n) for c in conditions][:n]
        else:
            items = qa_items(args.dataset, n)
        reports.append(
            agreement.agreement(
                reference,
                candidate,
                items,
                methods,
                config,
                top_k=args.top_k,
                progress=_stderr_progress(f"{model} prompts "),
            )
        )
    print(json.dumps({"models": reports}, indent=2) if args.format == "json" else agreement.render(reports))
    return 0


def _add_train_demo(commands) -> None:
    parser = commands.add_parser("train-demo", help="reproduce a builtin demo model from a seed (minutes on a CPU)")
    parser.add_argument("--model", choices=DEMO_MODELS, default="heta-demo")
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
    report = train.train(
        args.out, model=args.model, seed=args.seed, steps=args.steps, log=lambda line: print(line, file=sys.stderr)
    )
    print(json.dumps(report, indent=2))
    return 0
