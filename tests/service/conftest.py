"""Real processes: `heta serve` (or `heta api` + `heta worker`) on a free port, a real Redis, real HTTP."""

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from heta_core.models.toymodels import CORPUS

from ..helpers import ROOT, alive, heta_command, is_worker, worker_pids

SLOW_TEXT = " ".join((CORPUS.split() * 5)[:120])  # with samples=20: a job of several seconds
SLOW = {"text": SLOW_TEXT, "config": {"samples": 20}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, url: str, procs: list[subprocess.Popen], env: dict):
        self.url, self.procs, self.env = url, procs, env
        self.http = httpx.Client(base_url=url, timeout=60)

    def wait_ready(self, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.http.get("/readyz").status_code == 200:
                    return
            for proc in self.procs:
                assert proc.poll() is None, f"{proc.args} exited with {proc.returncode}"
            time.sleep(0.25)
        raise TimeoutError("the service did not become ready")

    def wait_status(self, job_id: str, statuses: set[str], timeout: float = 60, headers=None) -> dict:
        """Polls the job, every 0.1 s at first and every 0.5 s later: a slow job must not spend a
        rate-limited key's requests (a 429 is waited out, as its Retry-After says)."""
        deadline, pause, job = time.monotonic() + timeout, 0.1, {"status": "never read"}
        while time.monotonic() < deadline:
            answer = self.http.get(f"/jobs/{job_id}", headers=headers)
            if answer.status_code == 429:
                time.sleep(min(float(answer.headers.get("retry-after", 1)), max(0.0, deadline - time.monotonic())))
                continue
            job = answer.json()
            if job["status"] in statuses:
                return job
            time.sleep(pause)
            pause = min(0.5, pause * 1.25)
        raise TimeoutError(f"job {job_id} stayed {job['status']}")

    def metric(self, name: str, headers=None) -> float:
        for line in self.http.get("/metrics", headers=headers).text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{") and line.split(" ")[0] == name:
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def worker_pids(self) -> list[int]:
        """The workers this server's processes started (or are)."""
        return sorted(
            {pid for proc in self.procs for pid in [proc.pid, *worker_pids(proc.pid)] if is_worker(pid) and alive(pid)}
        )

    def stop(self) -> None:
        self.http.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                proc.kill()


def base_env(model_dir: str | None, tmp: Path, **settings) -> dict:
    """The service's environment; ``model_dir=None`` leaves HETA_MODELS unset (the builtin default)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HETA_") and k != "REDIS_URL"}
    if "HETA_TEST_DEVICE" in os.environ:  # the suite's device (scripts/gpu-check: cuda) for the workers too
        env["HETA_DEVICE"] = os.environ["HETA_TEST_DEVICE"]
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        PYTHONPATH=str(ROOT),
        HETA_REDIS_DIR=str(tmp / "redis"),
        HETA_LEASE_S="2",
        HETA_HEARTBEAT_S="0.5",
        HETA_DRAIN_S="5",
    )
    if model_dir is not None:
        env["HETA_MODELS"] = model_dir
    env.update({f"HETA_{k.upper()}": str(v) for k, v in settings.items()})
    return env


@contextlib.contextmanager
def serve(model_dir: str | None, tmp: Path, cwd: Path | None = None, **settings):
    port = free_port()
    env = base_env(model_dir, tmp, PORT=port, **settings)
    log = open(tmp / "serve.log", "w")
    proc = subprocess.Popen(
        heta_command("serve"), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd
    )
    server = Server(f"http://127.0.0.1:{port}", [proc], env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
        with contextlib.suppress(ProcessLookupError):  # anything left in the tree's process group
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def browser():
    """A real Chromium (Debian's binary, driven by Playwright) for the module's page tests."""
    from .browser import chromium

    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def reference(model_dir):
    """The fault-free result of every body the fault tests send (faults.BODIES), computed in this process."""
    from heta_core import Attributor, HetaConfig

    from .faults import BODIES

    attributor = Attributor.from_pretrained(model_dir)

    def run(body: dict) -> list[float]:
        config = HetaConfig(
            **{"num_hvp_samples" if k == "samples" else k: v for k, v in body.get("config", {}).items()}
        )
        return attributor.attribute(body["text"], config=config).scores.tolist()

    return {i: run(body) for i, body in enumerate(BODIES)}
