"""The steps that run a process each: the device's environment and matmul peak, the test suites,
`heta bench` at a shape, and the 2,048-token exact run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from . import ROOT
from .plan import (
    CPU_SHAPES,
    ENGINE_TESTS,
    GPU_DESELECT,
    GPU_SHAPES,
    REFERENCE_CONTEXT,
    SAMPLES,
    SERVICE_TESTS,
    SMOKE_TESTS,
)


def environment(device: str) -> dict:
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "device": device,
        "cpu_threads": torch.get_num_threads(),
    }
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1), gpu_count=torch.cuda.device_count()
        )
    return info


def dense_peak_tflops(device: str, size: int | None = None) -> float:
    """The dense bf16 matmul rate measured here: what "fraction of peak" divides by (``size``: the
    square's side, None: heta bench's default for the device)."""
    import torch

    from heta_core.cli.measure import matmul_gflops

    return matmul_gflops(torch.device(device), torch.bfloat16, size, 2 if size else None) / 1000


def run(command: list[str], timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )


def step_tests(mode: str, device: str, out: Path, timeout: float) -> dict:
    report = out / "tests.xml"
    selection = SMOKE_TESTS if mode == "cpu" else ENGINE_TESTS + SERVICE_TESTS + GPU_DESELECT
    done = run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}", *selection],
        timeout=timeout,
        env={"HETA_TEST_DEVICE": device, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"},
    )
    (out / "tests.log").write_text(done.stdout + done.stderr)
    counts = _junit_counts(report)
    return {
        "ok": done.returncode == 0 and counts.get("tests", 0) > 0,
        "device": device,
        "files": selection,
        **counts,
        "tail": (done.stdout + done.stderr).strip().splitlines()[-3:],
    }


def _junit_counts(path: Path) -> dict:
    import xml.etree.ElementTree as ET

    if not path.exists():
        return {}
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root)
    return {key: sum(int(s.get(key, 0)) for s in suites) for key in ("tests", "failures", "errors", "skipped")}


def step_bench(
    name: str, mode: str, device: str, peak_tflops: float, timeout: float, ceiling_size: int | None = None
) -> dict:
    shape = (GPU_SHAPES if mode == "gpu" else CPU_SHAPES)[name]
    command = [
        sys.executable,
        "-m",
        "heta_core.cli",
        "bench",
        "--device",
        device,
        "--format",
        "json",
        "--samples",
        str(SAMPLES[mode]),
        "--repeats",
        "1",
        "--reference-context",
        str(REFERENCE_CONTEXT[mode]),
        "--overlap",
        "--graphs",
    ]
    if ceiling_size:
        command += ["--ceiling-size", str(ceiling_size)]
    for key, value in shape.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    # tiny shapes: process start-up would dominate; on a GPU each path gets its own process (clean peaks)
    done = run(
        command, timeout=timeout, env={"HETA_BENCH_INPROCESS": "1" if mode == "cpu" else "0", "HF_HUB_OFFLINE": "1"}
    )
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr.strip().splitlines()[-5:]}
    report = json.loads(done.stdout)
    tflops = report["fast_gflops_per_s"] / 1000
    result = {
        "shape": report["shape"],
        "dtype": report["dtype"],
        "samples": report["samples"],
        "fast_seconds": report["fast_seconds"],
        "stage_seconds": report["fast_stage_seconds"],
        "reference_context": report.get("reference_context", shape["context"]),
        "reference_seconds": report["reference_seconds"],
        "speedup": report["speedup"],
        "speedup_extrapolated": report.get("speedup_extrapolated"),
        "max_rel_diff": report["max_rel_diff"],
        "tflops": tflops,
        "matmul_tflops_same_dtype": report["matmul_gflops"] / 1000,
        "fraction_of_bf16_peak": tflops / peak_tflops,
        "peak_memory_mb": report["fast_peak_mb"],
        "hvps": report["hvps"],
        "graphs": report["graphs"],
    }
    # the speed-up is a pass criterion on the device; the CPU mode's toy shapes (a dozen tokens, width 32)
    # time process noise more than the two paths, so there it is reported, not judged
    faster = report["speedup"] > 1 or mode == "cpu"
    tolerance = 5e-2 if "16" in shape["dtype"] else 1e-3
    ok = faster and max(report["max_rel_diff"].values()) < tolerance
    # cuda_graphs: the same numbers; on the device every shape captured (a failed capture runs eagerly,
    # correct but not the point); its speed-up is reported, not judged
    graphs = report["graphs"]
    ok = ok and max(graphs["max_rel_diff"].values()) < tolerance
    if mode == "gpu":
        ok = ok and graphs["cache"]["captured"] > 0 and graphs["cache"]["failed"] == 0
    if "overlap" in report:
        overlap = report["overlap"]
        result["overlap"] = overlap
        # both stages issued their work under their named host ranges
        ok = ok and all(count > 0 for count in overlap["host_ranges"].values())
        if mode == "gpu":
            result["overlap_proven"] = overlap["overlap_ms"] > 0 and all(
                count > 0 for count in overlap["kernels"].values()
            )
    result["ok"] = ok
    return result


def step_long(device: str, timeout: float) -> dict:
    """2,048 tokens, exact S and I (no approximation), GPT-2-small shape."""
    command = [
        sys.executable,
        "-m",
        "heta_core.cli",
        "bench-long",
        "--device",
        device,
        "--format",
        "json",
        "--layers",
        "12",
        "--width",
        "768",
        "--heads",
        "12",
        "--vocab",
        "50257",
        "--context",
        "2048",
        "--curvature-layers",
        "0",
        "--low-rank",
        "0",
        "--dtype",
        "bfloat16",
    ]
    done = run(command, timeout=timeout, env={"HF_HUB_OFFLINE": "1"})
    if done.returncode != 0:
        return {"ok": False, "error": done.stderr.strip().splitlines()[-5:]}
    report = json.loads(done.stdout)
    measured, estimate = report["measured"], report["estimate"]
    return {
        "ok": measured["hvps"] == estimate["hvps"] and measured["forward_tokens"] == estimate["forward_tokens"],
        "seconds": report["seconds"],
        "stage_seconds": report["stage_seconds"],
        "hvps": measured["hvps"],
        "forward_tokens": measured["forward_tokens"],
        "peak_memory_mb": report["peak_above_start_mb"],
        "estimate_peak_mb": estimate["peak_bytes"] / 2**20,
        "dtype": "bfloat16",
    }
