"""The service step: `heta serve` with one worker on the device, a warm-up and N requests, latency
and queue overhead percentiles."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .plan import SAMPLES


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _service_model(mode: str, directory: Path) -> Path:
    """A model directory for the worker: the tiny GPT-2 on CPU, GPT-2-small-shaped on a GPU (random
    weights; the tiny word-level tokenizer, whose ids are valid in either vocabulary)."""
    from heta_core.models.toymodels import gpt2_shaped, random_model, tiny_model, tiny_tokenizer

    path = directory / "model"
    model = (
        tiny_model("gpt2")
        if mode == "cpu"
        else random_model(gpt2_shaped(12, 768, 12, 50257), attn_implementation="eager")
    )
    model.save_pretrained(path)
    tiny_tokenizer().save_pretrained(path)
    return path


def step_service(mode: str, device: str, out: Path, requests: int, timeout: float) -> dict:
    """Stops sending requests when its ``timeout`` runs out (the numbers of those sent are kept)."""
    import httpx

    ends = time.monotonic() + timeout

    directory = Path(tempfile.mkdtemp(prefix="gpu-check-serve-"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETA_") and k != "REDIS_URL"}
    env.update(
        HETA_MODELS=str(_service_model(mode, directory)),
        HETA_DEVICE=device,
        HETA_WORKERS="1",
        HETA_PORT=str(port),
        HETA_REDIS_DIR=str(directory / "redis"),
        HETA_RATE_LIMIT_PER_MINUTE="100000",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
    )
    log = open(out / "service.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "heta_core.cli", "serve"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=directory,
    )
    url = f"http://127.0.0.1:{port}"
    body = {"text": "the cat sat on the mat . the dog ate the bone", "config": {"samples": SAMPLES[mode]}, "wait": 120}
    try:
        with httpx.Client(base_url=url, timeout=min(180, max(10, timeout))) as http:
            deadline = min(ends, time.monotonic() + 300)
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/readyz").status_code == 200:
                        break
                if proc.poll() is not None or time.monotonic() > deadline:
                    return {"ok": False, "error": f"heta serve did not become ready (see {log.name})"}
                time.sleep(0.25)
            workers = http.get("/readyz").json() if mode == "gpu" else None
            warm = http.post("/attribute", json=body)  # first call: kernels, allocator
            latencies, overheads, statuses, devices = [], [], [], set()
            for _ in range(requests):
                if time.monotonic() > ends - 5:  # the time box: keep a few seconds to stop the server
                    break
                started = time.perf_counter()
                response = http.post("/attribute", json=body)
                seconds = time.perf_counter() - started
                statuses.append(response.status_code)
                if response.status_code == 200:
                    meta = response.json()["meta"]
                    latencies.append(1000 * seconds)
                    overheads.append(1000 * (seconds - meta["timings"]["compute_s"]))
                    devices.add(meta.get("device"))
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=60)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 9)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)
    ok_count = statuses.count(200)
    cut = len(statuses) < requests
    return {
        "ok": warm.status_code == 200 and ok_count == requests,
        **(
            {"error": f"timed out: {len(statuses)} of {requests} requests sent in its {timeout:.0f} s box"}
            if cut
            else {}
        ),
        "requests": requests,
        "succeeded": ok_count,
        "devices": sorted(d for d in devices if d),
        "latency_ms": _percentiles(latencies),
        "queue_overhead_ms": _percentiles(overheads),
        "readyz": workers,
    }


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": round(statistics.median(ordered), 2), "p95": round(pick(0.95), 2), "max": round(ordered[-1], 2)}
