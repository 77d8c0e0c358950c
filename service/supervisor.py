"""``heta serve``: Redis (embedded unless REDIS_URL is set), the worker pool and the API in one command.

Workers are separate processes started with a fresh interpreter (never forked, so never after CUDA
initialisation), identifiable as ``heta worker`` in the process list; one per visible GPU by default
(``HETA_WORKERS_PER_GPU`` for small models), each confined to its card by ``CUDA_VISIBLE_DEVICES``
(to a group of ``HETA_GPUS_PER_WORKER`` cards for a model split by ``HETA_DEVICE_MAP``);
N on CPU. A worker that dies is restarted; the jobs it held are reclaimed by the queue once their lease
expires. SIGTERM/SIGINT: the API stops taking requests, workers drain, Redis is saved and stopped.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import logs
from .connections import EmbeddedRedis
from .settings import Settings

log = logging.getLogger("heta.serve")
SUPERVISOR_ENV = "HETA_SUPERVISOR_PID"  # set for workers started by `heta serve`: they drain if it dies


def worker_command() -> list[str]:
    script = sys.argv[0] if os.path.basename(sys.argv[0]) == "heta" else shutil.which("heta")
    if script:
        return [sys.executable, script, "worker"]
    return [sys.executable, "-m", "heta_core.cli", "worker"]


class Pool:
    """Keeps ``count`` worker processes alive. A worker that dies soon after starting (Redis down, a
    model that cannot load) is restarted after a growing pause, not in a tight loop."""

    FAST_EXIT_S = 30.0  # a worker that ran less than this counts as failing to start
    MAX_PAUSE_S = 30.0

    def __init__(self, count: int, env: dict[str, str], devices: list[dict[str, str]]):
        self.env, self.devices = env, devices  # per slot: the environment that places it (device_env)
        self.procs: list[subprocess.Popen | None] = [None] * count
        self.started = [0.0] * count
        self.pauses = [0.0] * count
        self.restarts = 0
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="supervisor", daemon=True)

    def _spawn(self, slot: int) -> subprocess.Popen:
        env = {**self.env, **self.devices[slot]}
        self.started[slot] = time.monotonic()
        return subprocess.Popen(worker_command(), env=env)

    def start(self) -> None:
        for slot in range(len(self.procs)):
            self.procs[slot] = self._spawn(slot)
        self._thread.start()

    def _watch(self) -> None:
        due = [0.0] * len(self.procs)  # when a dead slot may be restarted
        while not self.stopping.wait(0.5):
            now = time.monotonic()
            for slot, proc in enumerate(self.procs):
                if proc is None or proc.poll() is None or self.stopping.is_set():
                    continue
                if not due[slot]:
                    lived = now - self.started[slot]
                    self.pauses[slot] = (
                        0.0 if lived > self.FAST_EXIT_S else min(max(1.0, 2 * self.pauses[slot]), self.MAX_PAUSE_S)
                    )
                    due[slot] = now + self.pauses[slot]
                    log.warning(
                        "worker %d (pid %d) exited with %s after %.0f s: restarting in %.0f s",
                        slot,
                        proc.pid,
                        proc.returncode,
                        lived,
                        self.pauses[slot],
                    )
                if now >= due[slot]:
                    due[slot] = 0.0
                    self.restarts += 1
                    self.procs[slot] = self._spawn(slot)

    def stop(self, grace_s: float) -> None:
        self.stopping.set()
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for proc in live:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()


class PlacementError(ValueError):
    """The visible GPUs cannot be grouped as HETA_GPUS_PER_WORKER asks."""


def device_env(settings: Settings, gpus: int, visible: str | None) -> list[dict[str, str]]:
    """Per worker, the environment that places it: one worker per visible GPU (times
    ``workers_per_gpu``), each seeing only its GPU through ``CUDA_VISIBLE_DEVICES`` — so a worker's
    ``cuda`` is its own card, its allocator and auto memory budget see that card alone, and a crash
    or leak stays there. With ``gpus_per_worker`` > 1 (a model split by ``HETA_DEVICE_MAP``) each
    worker sees a group of that many consecutive GPUs instead, which must divide the visible ones.
    ``gpus`` is the count torch sees (0: CPU, or a device named explicitly); ``visible`` the
    supervisor's own ``CUDA_VISIBLE_DEVICES``, whose entries (indices or UUIDs) are handed out, not
    renumbered. A worker with a device map gets no ``HETA_DEVICE``: the map places its modules."""
    if not gpus:  # CPU, or HETA_DEVICE names one device (cpu, cuda:1): every worker takes it as given
        count = settings.workers or 1
        return [{"HETA_DEVICE": settings.device} if settings.device else {} for _ in range(count)]
    names = [v.strip() for v in visible.split(",") if v.strip()][:gpus] if visible else []
    names = names if len(names) == gpus else [str(i) for i in range(gpus)]
    size = settings.gpus_per_worker
    if gpus % size:
        raise PlacementError(f"HETA_GPUS_PER_WORKER={size} does not divide the {gpus} visible GPUs into whole groups")
    groups = [",".join(names[i : i + size]) for i in range(0, gpus, size)]
    count = settings.workers or len(groups) * settings.workers_per_gpu
    placed = {} if settings.device_map else {"HETA_DEVICE": "cuda"}
    # slot i on group i mod groups: with HETA_WORKERS set the groups are filled round-robin, evenly
    return [{"CUDA_VISIBLE_DEVICES": groups[i % len(groups)], **placed} for i in range(count)]


def serve(settings: Settings) -> int:
    import torch

    from .app import create_app, run_server

    logs.configure(settings.log_format)
    if not settings.models:
        raise SystemExit("heta serve: error: no models: set HETA_MODELS or pass --model")
    gpus = torch.cuda.device_count() if settings.device in (None, "cuda") else 0
    try:
        devices = device_env(settings, gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
    except PlacementError as error:
        raise SystemExit(f"heta serve: error: {error}") from None
    embedded = None
    if not settings.has_store:
        embedded = EmbeddedRedis(settings.redis_dir)
        settings = settings.model_copy(update={"redis_url": embedded.url})
        log.info("embedded Redis at %s (data in %s)", embedded.url, settings.redis_dir)
    count = len(devices)
    env = {**os.environ, "HETA_MODELS": ",".join(settings.models), SUPERVISOR_ENV: str(os.getpid())}
    if settings.redis_url:  # the embedded one, or the configured one (sentinels reach workers through the environment)
        env["HETA_REDIS_URL"] = settings.redis_url
    if settings.torch_threads is None and not gpus:
        # CPU workers share the cores: N workers × all-core thread pools run ~5× slower than N × cores/N
        env["HETA_TORCH_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
    # OpenMP threads that spin between parallel regions starve everything else on the cores (the API,
    # the other workers): measured on 2 shared cores, heta-demo took 2,592 ms per request spinning and
    # 28 ms passive. An operator's own setting wins.
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    pool = Pool(count, env, devices)
    pool.start()
    # uvicorn restores these handlers after its graceful shutdown and then re-raises the signal it
    # caught; with the default handler that would kill us before the workers are stopped below
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    log.info(
        "the explorer is at http://%s:%s/ (API docs: /docs)", settings.host, settings.port
    )  # a log line: json stays json
    try:
        run_server(create_app(settings), settings.host, settings.port)
    finally:
        pool.stop(settings.drain_s + 5)
        if embedded is not None:
            embedded.close()
    return 0
