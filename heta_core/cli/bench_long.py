"""``heta bench-long`` (one long-context attribution: time, memory and the estimate) and ``heta
bench-approx`` (each long-context approximation's agreement with the exact estimator, on small
float64 models)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .measure import peak_memory, sync

APPROXIMATIONS = {
    "curvature_layers=1": {"curvature_layers": 1},
    "curvature_layers=2": {"curvature_layers": 2},
    "low_rank=8": {"low_rank": 8},
    "low_rank=32": {"low_rank": 32},
    "curvature=ggn": {"curvature": "ggn"},
    "window=12,overlap=0.5": {"window": 12, "overlap": 0.5},
    "curvature_layers=2,low_rank=32": {"curvature_layers": 2, "low_rank": 32},
}


def approximation_agreement(
    families=("gpt2", "llama"), layers: int = 4, words: int = 25, samples: int = 20
) -> list[dict]:
    """Each approximation against the exact estimator on small float64 random models (deterministic).

    Returns rows with Spearman ρ and top-5 overlap of S and of the final scores, and HVP counts.
    """
    from ..attributor import Attributor
    from ..config import HetaConfig
    from ..evaluation.stats import spearman, topk_overlap
    from ..models.toymodels import CORPUS, tiny_model, tiny_tokenizer

    tokenizer = tiny_tokenizer()
    text = " ".join(CORPUS.split()[:words])
    rows = []
    for family in families:
        depth = {"n_layer": layers} if family in ("gpt2", "gptj") else {"num_hidden_layers": layers}
        attributor = Attributor(tiny_model(family, **depth), tokenizer)
        base = HetaConfig(num_hvp_samples=samples)
        exact = attributor.attribute(text, config=base)
        for name, changes in APPROXIMATIONS.items():
            result = attributor.attribute(text, config=base.replace(**changes))
            rows.append(
                {
                    "family": family,
                    "approximation": name,
                    "s_spearman": spearman(result.hessian, exact.hessian),
                    "s_top5": topk_overlap(result.hessian, exact.hessian),
                    "score_spearman": spearman(result.scores, exact.scores),
                    "score_top5": topk_overlap(result.scores, exact.scores),
                    "hvps": result.meta.hvps,
                    "exact_hvps": exact.meta.hvps,
                }
            )
    return rows


def format_agreement(rows: list[dict]) -> str:
    lines = [f"{'model':<8}{'approximation':<32}{'S ρ':>7}{'S top5':>8}{'score ρ':>9}{'top5':>6}{'HVPs':>12}"]
    for r in rows:
        lines.append(
            f"{r['family']:<8}{r['approximation']:<32}{r['s_spearman']:>+7.3f}{r['s_top5']:>8.1f}"
            f"{r['score_spearman']:>+9.3f}{r['score_top5']:>6.1f}{r['hvps']:>6}/{r['exact_hvps']:<5}"
        )
    return "\n".join(lines)


def run_agreement_from_args(args) -> int:
    rows = approximation_agreement()
    print(json.dumps(rows, indent=2) if args.format == "json" else format_agreement(rows))
    return 0


@contextmanager
def counting_forward_tokens(attributor) -> Iterator[dict]:
    """Counts the token positions entering the first block: every forward pass goes through it."""
    counter = {"tokens": 0}

    def hook(_module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        counter["tokens"] += hidden.shape[0] * hidden.shape[1]

    handle = attributor.adapter.blocks(attributor.model)[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield counter
    finally:
        handle.remove()


def long_context(
    *,
    layers=6,
    width=512,
    heads=8,
    vocab=50257,
    context=512,
    samples=10,
    dtype="float32",
    device="cpu",
    curvature_layers=2,
    low_rank=32,
    memory_budget_mb=None,
    seed=0,
) -> dict:
    """One long-context attribution: measured time per stage, peak RSS / GPU memory, forward tokens
    and HVPs, each next to ``Attributor.estimate``'s prediction."""
    import resource

    from ..attributor import Attributor
    from ..config import HetaConfig
    from ..models.loading import resolve_dtype
    from ..models.toymodels import gpt2_shaped, random_model

    torch_device = torch.device(device)
    model = random_model(
        gpt2_shaped(layers, width, heads, vocab, positions=max(1024, context + 1)),
        dtype=resolve_dtype(dtype),
        seed=seed,
    ).to(torch_device)
    ids = torch.randint(0, vocab, (context + 1,), generator=torch.Generator().manual_seed(seed)).tolist()
    config = HetaConfig(
        num_hvp_samples=samples,
        seed=seed,
        curvature_layers=curvature_layers,
        low_rank=low_rank,
        memory_budget_mb=memory_budget_mb,
    )
    attributor = Attributor(model, config=config, name="gpt2-shaped-random")
    estimate = attributor.estimate(input_ids=ids)
    with counting_forward_tokens(attributor) as counter, peak_memory(torch_device) as memory:
        started = time.perf_counter()
        result = attributor.attribute(input_ids=ids)
        sync(torch_device)
        seconds = time.perf_counter() - started
    return {
        "shape": {"layers": layers, "width": width, "heads": heads, "vocab": vocab, "context": context},
        "config": {
            "samples": samples,
            "curvature_layers": curvature_layers,
            "low_rank": low_rank,
            "dtype": dtype,
            "device": device,
        },
        "seconds": seconds,
        "stage_seconds": {k: round(v, 3) for k, v in result.timings.stages().items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_above_start_mb": memory["peak_bytes"] / 2**20,
        "estimate": estimate.to_dict(),
        "measured": {"hvps": result.meta.hvps, "forward_tokens": counter["tokens"]},
    }


def format_long(report: dict) -> str:
    shape, config, estimate, measured = report["shape"], report["config"], report["estimate"], report["measured"]
    return "\n".join(
        [
            f"model      GPT-2-shaped random: {shape['layers']} layers, d={shape['width']}, vocab {shape['vocab']}; "
            f"context {shape['context']} tokens; m={config['samples']}; curvature_layers={config['curvature_layers']}, "
            f"low_rank={config['low_rank']}; {config['dtype']} on {config['device']}",
            f"time       {report['seconds']:.1f} s   stages {report['stage_seconds']}",
            f"memory     peak RSS {report['peak_rss_mb']:.0f} MB (process), +{report['peak_above_start_mb']:.0f} MB "
            f"during the call; estimate {estimate['peak_bytes'] / 2**20:.0f} MB (weights + trace + largest chunk)",
            f"work       forward token positions {measured['forward_tokens']} (estimate {estimate['forward_tokens']}); "
            f"HVPs {measured['hvps']} (estimate {estimate['hvps']})",
        ]
    )


def run_long_from_args(args) -> int:
    from ..models.loading import resolve_device, resolve_dtype

    resolve_device(args.device)
    resolve_dtype(args.dtype)
    report = long_context(
        layers=args.layers,
        width=args.width,
        heads=args.heads,
        vocab=args.vocab,
        context=args.context,
        samples=args.samples,
        dtype=args.dtype,
        device=args.device,
        curvature_layers=args.curvature_layers or None,
        low_rank=args.low_rank or None,
        memory_budget_mb=args.memory_budget_mb,
    )
    print(json.dumps(report, indent=2) if args.format == "json" else format_long(report))
    return 0


def register(commands) -> None:
    _add_approx(commands)
    _add_long(commands)


def _add_approx(commands) -> None:
    parser = commands.add_parser(
        "bench-approx", help="agreement of each long-context approximation with the exact estimator (small models)"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a table, or one JSON document (default: %(default)s)",
    )
    parser.set_defaults(run=run_agreement_from_args)


def _add_long(commands) -> None:
    parser = commands.add_parser("bench-long", help="one long-context attribution: time, memory and the estimate")
    sizes = (
        ("layers", 6, "transformer blocks"),
        ("width", 512, "hidden size d"),
        ("heads", 8, "attention heads"),
        ("vocab", 50257, "vocabulary size"),
        ("context", 512, "context tokens"),
        ("samples", 10, "Rademacher probes per token, m"),
    )
    for name, default, meaning in sizes:
        parser.add_argument(f"--{name}", type=int, default=default, help=f"{meaning} (default: %(default)s)")
    parser.add_argument(
        "--curvature-layers",
        type=int,
        default=2,
        help="S w.r.t. the residual stream entering the last K blocks; 0: w.r.t. X (default: %(default)s)",
    )
    parser.add_argument(
        "--low-rank",
        type=int,
        default=32,
        help="S from a rank-K approximation of the whole Hessian; 0: exact blocks (default: %(default)s)",
    )
    parser.add_argument(
        "--dtype", default="float32", help="float32 | float64 | bfloat16 | float16 (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    parser.add_argument(
        "--memory-budget-mb", type=int, default=None, help="activation budget of one batched chunk (default: auto)"
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a table, or one JSON document (default: %(default)s)",
    )
    parser.set_defaults(run=run_long_from_args)
