"""``heta bench``: the fast path against the reference path, side by side in one run.

Prints wall time of each path and their ratio, the largest relative difference between their
numbers, peak memory of each path above its pre-run level (RSS on CPU, allocator peak on CUDA;
each path runs in its own fresh process so one path's freed memory cannot hide the other's),
the fast path's FLOPs (``torch.utils.flop_counter``) and achieved GFLOP/s next to a large-matmul
GFLOP/s measured in the same process. Defaults are the issue's shape: a GPT-2-shaped random
model (6 layers, d=512, 8 heads, vocab 50257), a 48-token context, m = 10, float32, CPU.
``--family llama`` builds a Llama-shaped model instead (GQA ``--kv-heads``, SwiGLU ``--ffn``).

On CUDA it also proves that the KL and Hessian stages overlap on their streams: one run under
``torch.profiler``, each kernel assigned to the stage whose host range (``heta.kl`` /
``heta.hessian``, see the pipeline) launched it, and the time both stages' kernels run at once.
"""

from __future__ import annotations

import argparse
import json

import torch

from . import bench_long
from .bench_path import in_fresh_process
from .measure import matmul_gflops, max_rel


def run(
    *,
    layers: int = 6,
    width: int = 512,
    heads: int = 8,
    vocab: int = 50257,
    context: int = 48,
    samples: int = 10,
    dtype: str = "float32",
    device: str = "cpu",
    reference: bool = True,
    repeats: int = 3,
    memory_budget_mb: int | None = None,
    seed: int = 0,
    family: str = "gpt2",
    kv_heads: int | None = None,
    ffn: int | None = None,
    reference_context: int | None = None,
    overlap: bool | None = None,
    presets: bool = False,
    model: str | None = None,
    ceiling_size: int | None = None,
    graphs: bool = False,
) -> dict:
    """Each path runs in its own fresh process (same seed, same model); the matmul ceiling runs here.

    ``reference_context`` < ``context`` runs the (slow) reference path on a shorter context: the
    speed-up is then measured there, with the fast path rerun at that context, and also reported
    extrapolated to ``context`` by the reference's quadratic growth in token positions (a lower
    bound: its attention grows faster)."""
    from ..models.loading import resolve_dtype

    spec = dict(
        layers=layers,
        width=width,
        heads=heads,
        vocab=vocab,
        context=context,
        samples=samples,
        dtype=dtype,
        device=device,
        memory_budget_mb=memory_budget_mb,
        seed=seed,
        family=family,
        kv_heads=kv_heads,
        ffn=ffn,
        model=model,
    )
    overlap = device.startswith("cuda") if overlap is None else overlap
    shape = {"family": family, "layers": layers, "width": width, "heads": heads, "vocab": vocab, "context": context}
    if family == "llama":
        shape.update(kv_heads=kv_heads or heads, ffn=ffn or 4 * width)
    if model:
        shape = {"model": model, "context": context}
    report: dict = {
        "shape": shape,
        "samples": samples,
        "dtype": dtype,
        "device": device,
        "threads": torch.get_num_threads(),
        "matmul_gflops": matmul_gflops(
            torch.device(device), resolve_dtype(dtype), ceiling_size, 2 if ceiling_size else None
        ),
    }
    fast = in_fresh_process(spec, "fast", repeats, True, overlap, presets)
    report["fast_seconds"] = fast["seconds"]
    anytime = fast["anytime"]
    report["partials_s"] = anytime["partials_s"]
    report["estimated_seconds"] = anytime["estimated_s"]
    report["estimate_error"] = anytime["estimated_s"] / fast["seconds"] - 1
    if presets:
        report["presets"] = anytime["presets"]
    report["fast_peak_mb"] = fast["peak_mb"]
    report["fast_stage_seconds"] = fast["stages"]
    report["hvps"] = fast["hvps"]
    report["fast_gflop"] = fast["gflop"]
    report["fast_gflops_per_s"] = fast["gflop"] / fast["seconds"]
    report["matmul_fraction"] = report["fast_gflops_per_s"] / report["matmul_gflops"]
    if overlap:
        report["overlap"] = fast["overlap"]
    if graphs:  # the same fast path with cuda_graphs, side by side
        static = in_fresh_process(spec, "graphs", repeats, False)
        report["graphs"] = {
            "seconds": static["seconds"],
            "speedup": fast["seconds"] / static["seconds"],
            "peak_mb": static["peak_mb"],
            "cache": static["graphs"],
            "max_rel_diff": {name: max_rel(static["numbers"][name], fast["numbers"][name]) for name in fast["numbers"]},
        }
    if reference:
        short = reference_context if reference_context and reference_context < context else None
        ref_spec = {**spec, "context": short} if short else spec
        slow = in_fresh_process(ref_spec, "reference", 1, False)
        fast_there = in_fresh_process(ref_spec, "fast", repeats, False) if short else fast
        report["reference_seconds"] = slow["seconds"]
        report["reference_peak_mb"] = slow["peak_mb"]
        report["reference_stage_seconds"] = slow["stages"]
        report["speedup"] = slow["seconds"] / fast_there["seconds"]
        report["max_rel_diff"] = {
            name: max_rel(fast_there["numbers"][name], slow["numbers"][name]) for name in fast_there["numbers"]
        }
        if short:
            report["reference_context"] = short
            report["fast_seconds_at_reference_context"] = fast_there["seconds"]
            report["speedup_extrapolated"] = slow["seconds"] * (context / short) ** 2 / fast["seconds"]
    return report


def format_report(report: dict) -> str:
    shape = report["shape"]
    family = "Llama" if shape.get("family") == "llama" else "GPT-2"
    heads = f"{shape['heads']}/{shape['kv_heads']} heads" if "kv_heads" in shape else f"{shape.get('heads')} heads"
    what = (
        f"{shape['model']}"
        if "model" in shape
        else f"{family}-shaped random: {shape['layers']} layers, d={shape['width']}, {heads}, vocab {shape['vocab']}"
    )
    lines = [
        f"model      {what}; context {shape['context']} tokens; m={report['samples']}; "
        f"{report['dtype']} on {report['device']} ({report['threads']} threads)",
        f"fast       {report['fast_seconds']:9.3f} s   peak +{report['fast_peak_mb']:.0f} MB   "
        f"stages {report['fast_stage_seconds']}",
    ]
    if "reference_seconds" in report:
        lines.append(
            f"reference  {report['reference_seconds']:9.3f} s   peak +{report['reference_peak_mb']:.0f} MB   "
            f"stages {report['reference_stage_seconds']}"
        )
        if "reference_context" in report:
            lines.append(
                f"speed-up   {report['speedup']:9.2f} x   (reference / fast, both at {report['reference_context']} "
                f"tokens; extrapolated to {shape['context']}: {report['speedup_extrapolated']:.1f} x)"
            )
        else:
            lines.append(f"speed-up   {report['speedup']:9.2f} x   (reference / fast)")
        diffs = "  ".join(f"{k} {v:.1e}" for k, v in report["max_rel_diff"].items())
        lines.append(f"agreement  max relative difference: {diffs}")
    partials = report["partials_s"]
    lines.append(
        "partials   "
        + ", ".join(
            f"{stages} at {seconds:.3f} s ({100 * seconds / partials['final']:.0f} %)"
            for stages, seconds in partials.items()
        )
    )
    lines.append(
        f"estimate   {report['estimated_seconds']:9.3f} s predicted (the time model at this model's measured speed) vs "
        f"{report['fast_seconds']:.3f} s measured: {100 * report['estimate_error']:+.0f} %"
    )
    if "presets" in report:
        exact = report["presets"]["exact"]
        lines.append(
            "presets    "
            + "; ".join(
                f"{name} {p['seconds']:.3f} s ({p['seconds'] / exact['seconds']:.2f} of exact; estimated "
                f"{p['estimated_s']:.3f} s, {p['estimated_s'] / exact['estimated_s']:.2f})"
                for name, p in report["presets"].items()
            )
        )
    lines.append(
        f"compute    fast path {report['fast_gflop']:.1f} GFLOP in {report['hvps']} HVPs -> "
        f"{report['fast_gflops_per_s']:.1f} GFLOP/s; large matmul {report['matmul_gflops']:.1f} GFLOP/s "
        f"({100 * report['fast_gflops_per_s'] / report['matmul_gflops']:.0f}% of it)"
    )
    if "graphs" in report:
        graphs, cache = report["graphs"], report["graphs"]["cache"]
        lines.append(
            f"graphs     {graphs['seconds']:9.3f} s   peak +{graphs['peak_mb']:.0f} MB   "
            f"{graphs['speedup']:.2f} x the fast path; chunks captured {cache['captured']}, "
            f"replayed {cache['replayed']}, eager {cache['eager']}, "
            f"failed {cache['failed']}; max relative difference {max(graphs['max_rel_diff'].values()):.1e}"
        )
    if "overlap" in report:
        overlap = report["overlap"]
        busy = "  ".join(f"{k.split('.')[-1]} {v:.1f} ms" for k, v in overlap["busy_ms"].items())
        lines.append(
            f"streams    kernels busy: {busy}; KL and Hessian kernels concurrent for {overlap['overlap_ms']:.1f} ms"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``heta bench``'s options; the defaults are the issue's yardstick (a GPT-2-small-like layout, 48
    context tokens, m = 10). ``%(default)s`` puts each default in ``--help``."""
    parser.add_argument(
        "--model",
        default=None,
        help="a model to load (heta-demo, heta-demo-hard, a local path) instead of a random one, whose shape flags are "
        "then ignored (default: a random model)",
    )
    parser.add_argument(
        "--family", choices=("gpt2", "llama"), default="gpt2", help="layout of the random model (default: %(default)s)"
    )
    parser.add_argument("--layers", type=int, default=6, help="transformer blocks (default: %(default)s)")
    parser.add_argument("--width", type=int, default=512, help="hidden size d (default: %(default)s)")
    parser.add_argument("--heads", type=int, default=8, help="attention heads (default: %(default)s)")
    parser.add_argument("--vocab", type=int, default=50257, help="vocabulary size (default: %(default)s, GPT-2's)")
    parser.add_argument("--kv-heads", type=int, default=None, help="llama: key/value heads (default: --heads)")
    parser.add_argument("--ffn", type=int, default=None, help="llama: MLP width (default: 4 x --width)")
    parser.add_argument(
        "--context", type=int, default=48, help="context tokens; the target is one more (default: %(default)s)"
    )
    parser.add_argument(
        "--reference-context",
        type=int,
        default=None,
        help="run the reference path at this shorter context and extrapolate its time (default: --context)",
    )
    parser.add_argument("--samples", type=int, default=10, help="Rademacher probes per token, m (default: %(default)s)")
    parser.add_argument(
        "--dtype", default="float32", help="float32 | float64 | bfloat16 | float16 (default: %(default)s)"
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="fast-path timing runs; the best is reported (default: %(default)s)"
    )
    parser.add_argument(
        "--memory-budget-mb",
        type=int,
        default=None,
        help="activation budget of one batched chunk (default: auto, 512 MB on CPU, half the free GPU memory)",
    )
    parser.add_argument(
        "--no-reference",
        dest="reference",
        action="store_false",
        help="skip the slow literal path (no speed-up then; default: run it)",
    )
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="profile one fast run for the KL/Hessian stream overlap (default: off on CPU, where it checks the stage "
        "ranges; always on CUDA)",
    )
    parser.add_argument(
        "--ceiling-size",
        type=int,
        default=None,
        metavar="N",
        help="side of the square matmul the ceiling is measured on (default: 2048 on CPU, 8192 on a GPU; a "
        "small one for a rehearsal: a CPU without AVX-512 runs the bf16 one at ~0.3 GFLOP/s)",
    )
    parser.add_argument(
        "--presets",
        action="store_true",
        help="also time each preset (exact, balanced, fast) at its own "
        "knobs (exact: m = 10) and its estimate (default: off)",
    )
    parser.add_argument(
        "--graphs",
        action="store_true",
        help="also time the fast path with cuda_graphs (bucketed chunks, replayed CUDA graphs; on a CPU the "
        "padded chunks run eagerly) in its own process, side by side (default: off)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="a table, or one JSON document (default: %(default)s)",
    )


def run_from_args(args) -> int:
    from ..errors import InputError
    from ..models.loading import resolve_device, resolve_dtype

    for name in ("layers", "width", "heads", "vocab", "context", "samples", "repeats"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be >= 1")
    if args.ceiling_size is not None and args.ceiling_size < 1:
        raise InputError("--ceiling-size must be >= 1")
    if args.width % args.heads:
        raise InputError("--width must be a multiple of --heads")
    if args.kv_heads is not None and (args.kv_heads < 1 or args.heads % args.kv_heads):
        raise InputError("--kv-heads must divide --heads")
    resolve_device(args.device)
    resolve_dtype(args.dtype)
    report = run(
        layers=args.layers,
        width=args.width,
        heads=args.heads,
        vocab=args.vocab,
        context=args.context,
        samples=args.samples,
        dtype=args.dtype,
        device=args.device,
        reference=args.reference,
        repeats=args.repeats,
        memory_budget_mb=args.memory_budget_mb,
        family=args.family,
        kv_heads=args.kv_heads,
        ffn=args.ffn,
        reference_context=args.reference_context,
        overlap=True if args.overlap else None,
        presets=args.presets,
        model=args.model,
        ceiling_size=args.ceiling_size,
        graphs=args.graphs,
    )
    print(json.dumps(report, indent=2) if args.format == "json" else format_report(report))
    return 0


def register(commands) -> None:
    _add_bench(commands)
    bench_long.register(commands)


def _add_bench(commands) -> None:
    parser = commands.add_parser("bench", help="time the fast path against the reference path")
    add_arguments(parser)
    parser.set_defaults(run=run_from_args)
