"""One path of ``heta bench`` measured alone: the model built (random, at the requested shape, or a
named one), the attribution run and timed, its peak memory, FLOPs, stream overlap and partial-result
timings — in a fresh process (:func:`in_fresh_process`) so that its peak memory is its own."""

from __future__ import annotations

import os
import time

import torch

from ..runtime.graphs import WARMUP, graphs_for
from .measure import peak_memory, sync
from .overlap import stage_overlap


def model_config(spec: dict):
    from ..models.toymodels import gpt2_shaped, llama_shaped

    positions = max(1024, spec["context"] + 1)
    if spec.get("family", "gpt2") == "llama":
        return llama_shaped(
            spec["layers"],
            spec["width"],
            spec["heads"],
            spec["kv_heads"] or spec["heads"],
            spec["ffn"] or 4 * spec["width"],
            spec["vocab"],
            positions=positions,
        )
    return gpt2_shaped(spec["layers"], spec["width"], spec["heads"], spec["vocab"], positions=positions)


_MODELS: dict = {}


def anytime(attributor, ids: list[int], device: torch.device, presets: bool) -> dict:
    """When each partial result arrives in one run, the time model's estimate against the measured
    time (the speed measured first, in this process), and with ``presets`` each preset's measured and
    estimated seconds."""
    from ..config import PRESETS, HetaConfig

    arrived = {}
    sync(device)
    started = time.perf_counter()

    def partial(document) -> None:
        sync(device)
        arrived["+".join(document.stages_done)] = time.perf_counter() - started

    result = attributor.attribute(input_ids=ids, on_partial=partial)
    sync(device)
    arrived["final"] = time.perf_counter() - started
    attributor.calibrate()
    estimate = attributor.estimate(input_ids=ids).seconds
    out = {"partials_s": arrived, "estimated_s": estimate, "stages": list(result.stages_done)}
    if presets:
        out["presets"] = {}
        base = attributor.config
        for name in PRESETS:  # each at its own knobs (exact: m = 10), whatever --samples says
            config = HetaConfig(preset=name, seed=base.seed, memory_budget_mb=base.memory_budget_mb)
            attributor.attribute(input_ids=ids, config=config)  # warm: a preset's first shapes
            sync(device)
            clock = time.perf_counter()
            attributor.attribute(input_ids=ids, config=config)
            sync(device)
            out["presets"][name] = {
                "seconds": time.perf_counter() - clock,
                "estimated_s": attributor.estimate(input_ids=ids, config=config).seconds,
            }
    return out


def measure_path(
    spec: dict, strategy: str, repeats: int, count_flops: bool, overlap: bool = False, presets: bool = False
) -> dict:
    """Runs in a fresh process, so its peak memory is its own: build the model, run one path
    (``strategy``: "fast", "reference", or "graphs": the fast path with ``cuda_graphs``)."""
    from ..attributor import Attributor
    from ..config import HetaConfig
    from ..models.loading import resolve_dtype
    from ..models.toymodels import random_model

    device = torch.device(spec["device"])
    key = tuple(sorted((k, v) for k, v in spec.items() if k != "context"))
    if key not in _MODELS:  # in-process runs (HETA_BENCH_INPROCESS) build each model once
        _MODELS.clear()
        if spec.get("model"):  # a real (or builtin) model instead of a random one
            _MODELS[key] = Attributor.from_pretrained(spec["model"], device=spec["device"], dtype=spec["dtype"]).model
        else:
            with device:  # initialised where it runs: a 1B model's random init on a GPU takes seconds, not minutes
                _MODELS[key] = random_model(model_config(spec), dtype=resolve_dtype(spec["dtype"]), seed=spec["seed"])
    model = _MODELS[key]
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (spec["context"] + 1,), generator=torch.Generator().manual_seed(spec["seed"]))
    graphs = strategy == "graphs"
    heta = HetaConfig(
        num_hvp_samples=spec["samples"],
        seed=spec["seed"],
        memory_budget_mb=spec["memory_budget_mb"],
        strategy="fast" if graphs else strategy,
        cuda_graphs=graphs,
    )
    attributor = Attributor(model, config=heta, name=spec.get("model") or f"{spec.get('family', 'gpt2')}-shaped-random")
    ids = ids.tolist()
    # warm-up: allocator, kernels, lazy imports; with graphs, until a chunk's shape is captured
    warm_ups = {"reference": 0, "fast": 1, "graphs": 1 + WARMUP}[strategy]
    for _ in range(warm_ups):
        attributor.attribute(input_ids=ids)
    best, peak, result = float("inf"), 0, None
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        with peak_memory(device) as memory:
            result = attributor.attribute(input_ids=ids)
        sync(device)
        best = min(best, time.perf_counter() - started)
        peak = max(peak, memory["peak_bytes"])
    out = {
        "seconds": best,
        "peak_mb": peak / 2**20,
        "stages": {k: round(v, 4) for k, v in result.timings.stages().items()},
        "hvps": result.meta.hvps,
        "numbers": {name: getattr(result, name) for name in ("scores", "flow", "hessian", "kl")},
    }
    if graphs:
        out["graphs"] = dict(graphs_for(attributor.model).stats)
    if count_flops:
        from torch.utils.flop_counter import FlopCounterMode

        from ..models.adapters import eager_attention

        # counted under eager attention: the same matmuls, and torch's SDPA flop formula rejects
        # grouped-query shapes (found on the GPU with the 1B Llama shape)
        with eager_attention(attributor.model), FlopCounterMode(display=False) as counter:
            attributor.attribute(input_ids=ids)
        out["gflop"] = counter.get_total_flops() / 1e9
    if overlap:
        out["overlap"] = stage_overlap(lambda: attributor.attribute(input_ids=ids), device)
    if count_flops:  # the main fast run: partial results, the time model, the presets
        out["anytime"] = anytime(attributor, ids, device, presets)
    return out


def in_fresh_process(*args) -> dict:
    """(``HETA_BENCH_INPROCESS=1`` runs it here: a GPU machine's driver start-up is paid once.)"""
    if os.environ.get("HETA_BENCH_INPROCESS") == "1":
        return measure_path(*args)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(measure_path, *args).result()
