"""A worker process: models loaded once and kept warm, jobs taken from Redis Streams.

At-least-once delivery with nothing lost:
- each model has a stream and the consumer group ``workers``; a worker reads with XREADGROUP, so a
  delivered job sits in the group's pending list until the worker acknowledges it;
- a heartbeat thread, independent of the compute, refreshes the worker's registry entry and renews
  the lease of the job in hand (XCLAIM to itself resets the entry's idle time), so a long job on a
  healthy worker is never taken away;
- a dead worker stops renewing: after ``lease_s`` any worker reclaims the entry (XAUTOCLAIM) and runs
  the job again; after ``max_deliveries`` deliveries the job goes to the dead-letter stream instead;
- finishing is one atomic transition (see :mod:`heta_service.jobs`), so a job completes once.

Cancellation and deadlines are checked between chunks (the engine's progress callback). CUDA
out-of-memory empties the cache and retries with half the memory budget (twice), then fails the job
with a clear error; the worker keeps serving. SIGTERM drains: no new jobs; the current one is
finished within ``drain_s`` or released for another worker at once.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
import uuid

import torch

from heta_core import Attributor, HetaError

from . import jobs, metrics, registry
from .connections import connect
from .schemas import AttributeRequest, job_result_json
from .settings import Settings

log = logging.getLogger("heta.worker")
OOM_RETRIES = 2


class JobCancelled(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


class Released(Exception):
    """Draining took too long: hand the job back to the queue."""


class Worker:
    def __init__(self, settings: Settings, models: list[str]):
        self.settings = settings
        self.models = models
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.client = connect(settings.redis_url)
        self.attributors: dict[str, Attributor] = {}
        self.current: tuple[str, str, str] | None = None  # (stream, entry id, job id)
        self.draining = threading.Event()
        self.drain_deadline = float("inf")
        self.stopped = threading.Event()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        for name in self.models:
            log.info("loading %s", name)
            self.attributors[name] = Attributor.from_pretrained(name, device=self.settings.device, dtype=self.settings.dtype)
        for name in self.models:
            try:
                self.client.xgroup_create(jobs.stream_key(name), jobs.GROUP, id="0", mkstream=True)
            except Exception as error:  # noqa: BLE001 - BUSYGROUP: it exists
                if "BUSYGROUP" not in str(error):
                    raise

    def info(self) -> dict:
        device = next(iter(self.attributors.values())).device if self.attributors else torch.device("cpu")
        info = {
            "id": self.id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "models": {name: {"dtype": str(a.model.dtype).removeprefix("torch."), "device": str(a.device)}
                       for name, a in self.attributors.items()},  # fmt: skip
            "busy": self.current is not None,
            "draining": self.draining.is_set(),
        }
        if device.type == "cuda":
            info["gpu_allocated"] = torch.cuda.memory_allocated(device)
            info["gpu_peak"] = torch.cuda.max_memory_allocated(device)
            info["gpu_total"] = torch.cuda.get_device_properties(device).total_memory  # the memory alert's limit
        return info

    def heartbeat(self) -> None:
        """Registry entry and lease renewal, every ``heartbeat_s``, whatever the compute is doing."""
        ttl = max(3 * self.settings.heartbeat_s, self.settings.heartbeat_s + 1)
        supervisor = os.environ.get("HETA_SUPERVISOR_PID")
        while not self.stopped.wait(self.settings.heartbeat_s):
            if supervisor and os.getppid() != int(supervisor) and not self.draining.is_set():
                log.warning("the supervisor (pid %s) is gone: draining", supervisor)
                self.drain()
            try:
                registry.register(self.client, self.id, self.info(), ttl)
                with self._lock:
                    current = self.current
                if current is not None:
                    stream, entry, _ = current
                    self.client.xclaim(stream, jobs.GROUP, self.id, 0, [entry], justid=True)
            except Exception:  # noqa: BLE001 - Redis hiccup: try again next beat
                log.exception("heartbeat failed")

    def run(self) -> None:
        self.load()
        registry.register(self.client, self.id, self.info(), max(3 * self.settings.heartbeat_s, 2))
        beat = threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker %s serving %s", self.id, ", ".join(self.models))
        try:
            while not self.draining.is_set():
                entry = self.next_entry()
                if entry is not None:
                    self.process(*entry)
        finally:
            self.stopped.set()
            registry.unregister(self.client, self.id)
            log.info("worker %s stopped", self.id)

    def drain(self, *_args) -> None:
        self.draining.set()
        self.drain_deadline = time.monotonic() + self.settings.drain_s

    # ------------------------------------------------------------------ queue

    def next_entry(self) -> tuple[str, str, str, int] | None:
        """(stream, entry id, job id, deliveries): an expired lease first, else a new job."""
        lease_ms = int(self.settings.lease_s * 1000)
        for name in self.models:
            stream = jobs.stream_key(name)
            # Redis 6.2 answers (cursor, entries); 7.x adds the deleted ids
            claimed = self.client.xautoclaim(stream, jobs.GROUP, self.id, lease_ms, "0-0", count=1)[1]
            if claimed:
                entry, fields = claimed[0]
                metrics.record_job(self.client, "reclaimed")
                pending = self.client.xpending_range(stream, jobs.GROUP, min=entry, max=entry, count=1)
                deliveries = pending[0]["times_delivered"] if pending else 1
                log.warning("reclaimed %s (delivery %d)", fields.get("job"), deliveries)
                return stream, entry, fields["job"], deliveries
        streams = {jobs.stream_key(name): ">" for name in self.models}
        answer = self.client.xreadgroup(jobs.GROUP, self.id, streams, count=1, block=500)
        for stream, entries in answer or []:
            for entry, fields in entries:
                return stream, entry, fields["job"], 1
        return None

    def _done(self, stream: str, entry: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.xack(stream, jobs.GROUP, entry)
        pipe.xdel(stream, entry)
        pipe.execute()

    def finalize(self, job_id: str, owner: str, status: str, **fields) -> bool:
        return bool(self.client.eval(*jobs.finalize_call(job_id, owner, status, self.settings.result_ttl_s, **fields)))

    # ------------------------------------------------------------------ jobs

    def process(self, stream: str, entry: str, job_id: str, deliveries: int) -> None:
        job = self.client.hgetall(jobs.job_key(job_id))
        if not job or job.get("status") in jobs.FINAL:  # cancelled while queued, or expired
            self._done(stream, entry)
            return
        owner, model = job["owner"], job["model"]
        if deliveries > self.settings.max_deliveries:
            self.client.xadd(jobs.dead_letter_key(model), {"job": job_id, "deliveries": deliveries})
            detail = f"the job was delivered {deliveries} times without completing (its workers died)"
            if self.finalize(job_id, owner, "dead_lettered", error={"code": "dead_lettered", "detail": detail}):
                metrics.record_job(self.client, "dead_lettered")
            self._done(stream, entry)
            return
        deadline = float(job["deadline"])
        if time.time() > deadline:
            self._fail(job_id, owner, "deadline_exceeded", "the job's deadline passed before it could run", job)
            self._done(stream, entry)
            return
        started = time.time()
        self.client.hset(jobs.job_key(job_id), mapping={"status": "running", "worker": self.id, "started": repr(started)})
        self.client.hincrby(jobs.job_key(job_id), "attempts", 1)
        with self._lock:
            self.current = (stream, entry, job_id)
        try:
            self._run(job_id, job, deadline, started)
        except Released:
            # make the entry claimable at once and put the job back in the queue's view
            self.client.hset(jobs.job_key(job_id), mapping={"status": "queued", "progress": "0"})
            self.client.xclaim(stream, jobs.GROUP, self.id, 0, [entry], idle=int(self.settings.lease_s * 1000), justid=True)
            log.warning("released %s while draining", job_id)
            return
        finally:
            with self._lock:
                self.current = None
        self._done(stream, entry)

    def _fail(self, job_id: str, owner: str, code: str, detail: str, job: dict) -> None:
        if self.finalize(job_id, owner, "failed", error={"code": code, "detail": detail}):
            metrics.record_job(self.client, "failed", time.time() - float(job["created"]))

    def _run(self, job_id: str, job: dict, deadline: float, started: float) -> None:
        owner = job["owner"]
        request = AttributeRequest.model_validate_json(job["request"])
        kwargs, config = request.engine_call()
        attributor = self.attributors[job["model"]]
        key = jobs.job_key(job_id)
        last_write = [0.0]

        def progress(fraction: float) -> None:
            if self.client.hget(key, "cancel"):
                raise JobCancelled
            if time.time() > deadline:
                raise DeadlineExceeded
            if self.draining.is_set() and time.monotonic() > self.drain_deadline:
                raise Released
            now = time.monotonic()
            if now - last_write[0] > 0.2 or fraction >= 1.0:
                self.client.hset(key, "progress", f"{fraction:.4f}")
                last_write[0] = now

        for attempt in range(OOM_RETRIES + 1):
            try:
                result = attributor.attribute(**kwargs, config=config, progress=progress)
                break
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                budget = config.memory_budget_mb or 4096
                if attempt == OOM_RETRIES:
                    self._fail(job_id, owner, "out_of_memory", "the job ran out of GPU memory even with smaller chunks", job)
                    return
                config = config.replace(memory_budget_mb=max(16, budget // 2))
                log.warning("CUDA OOM on %s: retrying with memory_budget_mb=%d", job_id, config.memory_budget_mb)
            except JobCancelled:
                if self.finalize(job_id, owner, "cancelled"):
                    metrics.record_job(self.client, "cancelled", time.time() - float(job["created"]))
                return
            except DeadlineExceeded:
                self._fail(job_id, owner, "deadline_exceeded", "the job did not finish before its deadline", job)
                return
            except HetaError as error:
                self._fail(job_id, owner, error.code, str(error), job)
                return
            except Released:
                raise
            except Exception as error:  # noqa: BLE001 - a bug must fail the job, not the worker
                log.exception("job %s failed", job_id)
                self._fail(job_id, owner, "internal_error", f"{type(error).__name__}: {error}", job)
                return
        created = float(job["created"])
        body = job_result_json(result, job_id, created, started)
        if self.finalize(job_id, owner, "done", result=body, progress="1"):
            stages = {name: seconds for name, seconds in result.timings.stages().items() if name != "total"}
            metrics.record_job(self.client, "done", time.time() - created, result.method, stages, result.meta.hvps or 0)


def main(settings: Settings, models: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.redis_url:
        raise SystemExit("heta worker: error: set REDIS_URL (or run `heta serve`, which starts Redis)")
    if not models:
        raise SystemExit("heta worker: error: no models: set HETA_MODELS or pass --model")
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    worker = Worker(settings, models)
    signal.signal(signal.SIGTERM, worker.drain)
    signal.signal(signal.SIGINT, worker.drain)
    worker.run()
    return 0
