"""Whether HETA's KL and Hessian stages overlap on their CUDA streams, read from a ``torch.profiler``
trace (``heta bench`` on CUDA): each kernel is assigned to the stage whose host range (``heta.kl`` /
``heta.hessian``, see the pipeline) launched it, and the time both stages' kernels ran at once is
measured."""

from __future__ import annotations

import json

import torch

from .measure import sync

STAGE_RANGES = ("heta.kl", "heta.hessian")


def stage_overlap(call, device: torch.device) -> dict:
    """Runs ``call`` under ``torch.profiler`` and measures how long kernels of the KL stage and of
    the Hessian stage ran at the same time on the GPU.

    A kernel belongs to the stage whose host range (``record_function`` in the pipeline) contains
    the runtime call that launched it (CUPTI correlation ids). On CPU there are no kernels: the
    host ranges are still checked, so the annotations cannot silently disappear.
    """
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        call()
        sync(device)
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        prof.export_chrome_trace(handle.name)
        events = json.load(open(handle.name)).get("traceEvents", [])
    return overlap_from_trace(events)


def overlap_from_trace(events: list[dict]) -> dict:
    """Per stage: kernel count and busy time; and the time both stages' kernels overlap (ms)."""
    ranges = {name: [] for name in STAGE_RANGES}
    launches: dict[int, float] = {}
    kernels = []
    for event in events:
        if event.get("ph") != "X":
            continue
        category, args = event.get("cat", ""), event.get("args", {})
        if category in ("user_annotation", "cpu_op") and event.get("name") in ranges:
            ranges[event["name"]].append((event["ts"], event["ts"] + event.get("dur", 0)))
        elif category in ("cuda_runtime", "cuda_driver") and "correlation" in args:
            launches[args["correlation"]] = event["ts"]
        elif category == "kernel" and "correlation" in args:
            kernels.append((args["correlation"], event["ts"], event["ts"] + event.get("dur", 0)))
    busy = {name: [] for name in STAGE_RANGES}
    for correlation, start, end in kernels:
        launched = launches.get(correlation)
        for name, spans in ranges.items():
            if launched is not None and any(a <= launched <= b for a, b in spans):
                busy[name].append((start, end))
                break
    merged = {name: _merge(spans) for name, spans in busy.items()}
    both = _intersection(*(merged[name] for name in STAGE_RANGES))
    return {
        "host_ranges": {name: len(spans) for name, spans in ranges.items()},
        "kernels": {name: len(spans) for name, spans in busy.items()},
        "busy_ms": {name: sum(b - a for a, b in spans) / 1000 for name, spans in merged.items()},
        "overlap_ms": sum(b - a for a, b in both) / 1000,
    }


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[list[float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def _intersection(first: list[tuple[float, float]], second: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out, i, j = [], 0, 0
    while i < len(first) and j < len(second):
        a, b = max(first[i][0], second[j][0]), min(first[i][1], second[j][1])
        if a < b:
            out.append((a, b))
        if first[i][1] < second[j][1]:
            i += 1
        else:
            j += 1
    return out
