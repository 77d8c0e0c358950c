"""``heta bench``: the fast path against the reference path, side by side in one run.

Prints wall time of each path and their ratio, the largest relative difference between their
numbers, peak memory of each path above its pre-run level (RSS on CPU, allocator peak on CUDA;
each path runs in its own fresh process so one path's freed memory cannot hide the other's),
the fast path's FLOPs (``torch.utils.flop_counter``) and achieved GFLOP/s next to a large-matmul
GFLOP/s measured in the same process. Defaults are the issue's shape: a GPT-2-shaped random
model (6 layers, d=512, 8 heads, vocab 50257), a 48-token context, m = 10, float32, CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import torch

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Yields a dict that holds ``peak_bytes`` above the starting level once the block exits."""
    box: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield box
        torch.cuda.synchronize(device)
        box["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
        return
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield box
    finally:
        stop.set()
        sampler.join()
        box["peak_bytes"] = max(peak[0], _rss()) - base


def matmul_gflops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of a large square matmul: the machine's practical ceiling for this dtype."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    _sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((a - b).abs().max() / scale)


def _measure(spec: dict, strategy: str, repeats: int, count_flops: bool) -> dict:
    """Runs in a fresh process, so its peak memory is its own: build the model, run one path."""
    from .attributor import Attributor
    from .config import HetaConfig
    from .loading import resolve_dtype
    from .toymodels import gpt2_shaped, random_model

    device = torch.device(spec["device"])
    config = gpt2_shaped(spec["layers"], spec["width"], spec["heads"], spec["vocab"], positions=max(1024, spec["context"] + 1))
    model = random_model(config, dtype=resolve_dtype(spec["dtype"]), seed=spec["seed"]).to(device)
    ids = torch.randint(0, spec["vocab"], (spec["context"] + 1,), generator=torch.Generator().manual_seed(spec["seed"]))
    heta = HetaConfig(num_hvp_samples=spec["samples"], seed=spec["seed"], memory_budget_mb=spec["memory_budget_mb"],
                      strategy=strategy)  # fmt: skip
    attributor = Attributor(model, config=heta, name="gpt2-shaped-random")
    ids = ids.tolist()
    if strategy == "fast":
        attributor.attribute(input_ids=ids)  # warm-up: allocator, kernels, lazy imports
    best, peak, result = float("inf"), 0, None
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        with peak_memory(device) as memory:
            result = attributor.attribute(input_ids=ids)
        _sync(device)
        best = min(best, time.perf_counter() - started)
        peak = max(peak, memory["peak_bytes"])
    out = {
        "seconds": best,
        "peak_mb": peak / 2**20,
        "stages": {k: round(v, 4) for k, v in result.timings.items()},
        "hvps": result.meta["hvps"],
        "numbers": {name: getattr(result, name) for name in ("scores", "flow", "hessian", "kl")},
    }
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            attributor.attribute(input_ids=ids)
        out["gflop"] = counter.get_total_flops() / 1e9
    return out


def _in_fresh_process(*args) -> dict:
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(_measure, *args).result()


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
) -> dict:
    """Each path runs in its own fresh process (same seed, same model); the matmul ceiling runs here."""
    from .loading import resolve_dtype

    spec = dict(layers=layers, width=width, heads=heads, vocab=vocab, context=context, samples=samples, dtype=dtype,
                device=device, memory_budget_mb=memory_budget_mb, seed=seed)  # fmt: skip
    report: dict = {
        "shape": {"layers": layers, "width": width, "heads": heads, "vocab": vocab, "context": context},
        "samples": samples,
        "dtype": dtype,
        "device": device,
        "threads": torch.get_num_threads(),
        "matmul_gflops": matmul_gflops(torch.device(device), resolve_dtype(dtype)),
    }
    fast = _in_fresh_process(spec, "fast", repeats, True)
    report["fast_seconds"] = fast["seconds"]
    report["fast_peak_mb"] = fast["peak_mb"]
    report["fast_stage_seconds"] = fast["stages"]
    report["hvps"] = fast["hvps"]
    report["fast_gflop"] = fast["gflop"]
    report["fast_gflops_per_s"] = fast["gflop"] / fast["seconds"]
    if reference:
        slow = _in_fresh_process(spec, "reference", 1, False)
        report["reference_seconds"] = slow["seconds"]
        report["reference_peak_mb"] = slow["peak_mb"]
        report["reference_stage_seconds"] = slow["stages"]
        report["speedup"] = slow["seconds"] / fast["seconds"]
        report["max_rel_diff"] = {name: _max_rel(fast["numbers"][name], slow["numbers"][name]) for name in fast["numbers"]}
    return report


def format_report(report: dict) -> str:
    shape = report["shape"]
    lines = [
        f"model      GPT-2-shaped random: {shape['layers']} layers, d={shape['width']}, {shape['heads']} heads, "
        f"vocab {shape['vocab']}; context {shape['context']} tokens; m={report['samples']}; "
        f"{report['dtype']} on {report['device']} ({report['threads']} threads)",
        f"fast       {report['fast_seconds']:9.3f} s   peak +{report['fast_peak_mb']:.0f} MB   "
        f"stages {report['fast_stage_seconds']}",
    ]
    if "reference_seconds" in report:
        lines.append(
            f"reference  {report['reference_seconds']:9.3f} s   peak +{report['reference_peak_mb']:.0f} MB   "
            f"stages {report['reference_stage_seconds']}"
        )
        lines.append(f"speed-up   {report['speedup']:9.2f} x   (reference / fast)")
        diffs = "  ".join(f"{k} {v:.1e}" for k, v in report["max_rel_diff"].items())
        lines.append(f"agreement  max relative difference: {diffs}")
    lines.append(
        f"compute    fast path {report['fast_gflop']:.1f} GFLOP in {report['hvps']} HVPs -> "
        f"{report['fast_gflops_per_s']:.1f} GFLOP/s; large matmul {report['matmul_gflops']:.1f} GFLOP/s "
        f"({100 * report['fast_gflops_per_s'] / report['matmul_gflops']:.0f}% of it)"
    )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=50257)
    parser.add_argument("--context", type=int, default=48, help="context tokens (the target is one more)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--dtype", default="float32", help="float32 | float64 | bfloat16 | float16")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3, help="fast-path timing runs (best is reported)")
    parser.add_argument("--memory-budget-mb", type=int, default=None, help="default: auto")
    parser.add_argument("--no-reference", dest="reference", action="store_false", help="skip the slow path")
    parser.add_argument("--format", choices=("text", "json"), default="text")


def run_from_args(args) -> int:
    from .errors import InputError
    from .loading import resolve_device, resolve_dtype

    for name in ("layers", "width", "heads", "vocab", "context", "samples", "repeats"):
        if getattr(args, name) < 1:
            raise InputError(f"--{name} must be >= 1")
    if args.width % args.heads:
        raise InputError("--width must be a multiple of --heads")
    resolve_device(args.device)
    resolve_dtype(args.dtype)
    report = run(
        layers=args.layers, width=args.width, heads=args.heads, vocab=args.vocab, context=args.context,
        samples=args.samples, dtype=args.dtype, device=args.device, reference=args.reference,
        repeats=args.repeats, memory_budget_mb=args.memory_budget_mb,
    )  # fmt: skip
    print(json.dumps(report, indent=2) if args.format == "json" else format_report(report))
    return 0
