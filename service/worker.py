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

Starting a job and reporting its progress are fenced by the worker's id (a worker stopped past its
lease that wakes up changes nothing), and a job whose deadline passed in the queue is skipped.

Concurrent jobs run together: one read takes up to ``batch_jobs`` waiting jobs per model, and a
model's single-prompt jobs run through ``Attributor.attribute_many``, their masked forwards and
Hessian-vector chunks packed into shared batches. Each keeps its own lease (the heartbeat renews
every entry in hand), progress, partial results, cancellation and deadline, and one job's failure or
cancellation never fails the others.
Cancellation and deadlines are checked between chunks (the engine's progress callback). A Redis
that is down, full or failing over never fails a job: each step waits with back-off (the heartbeat
keeps the lease) and the main loop resumes when Redis is back. CUDA out-of-memory empties the
cache and retries with half the memory budget (twice), then fails the job with a clear error; the
worker keeps serving (``HETA_FAULT_OOM_TIMES``, :mod:`heta_core.runtime.faults`, injects such
failures for tests). SIGTERM drains: no new jobs; the current one is finished within ``drain_s``
or released for another worker at once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import threading
import time
import uuid

import torch

from heta_core import Attributor, HetaError

from . import cache, jobs, metrics, registry
from .connections import connect_store, is_transient
from .schemas import AttributeRequest, BatchRequest, batch_result_json, job_result_json
from .settings import Settings

log = logging.getLogger("heta.worker")
OOM_RETRIES = 2
RECLAIM_EVERY_S = 0.5


class JobCancelled(Exception):
    pass


class DeadlineExceeded(Exception):
    pass


class ItemFailed(Exception):
    """An attribution that cannot finish here (out of memory after the retries)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


class Released(Exception):
    """Draining took too long: hand the job back to the queue."""


def _delivered(answer) -> list[tuple[str, str, str, int, None]]:
    """XREADGROUP's answer as fresh deliveries (stream, entry id, job id, 1, not started)."""
    return [(stream, entry, fields["job"], 1, None) for stream, entries in answer or [] for entry, fields in entries]


class Worker:
    def __init__(self, settings: Settings, models: list[str]):
        self.settings = settings
        self.models = models
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        jobs.use_cluster(settings.redis_cluster)
        self.client = connect_store(settings)
        self.attributors: dict[str, Attributor] = {}
        self.current: list[tuple[str, str, str]] = []  # the entries in hand: (stream, entry id, job id)
        self.draining = threading.Event()
        self.drain_deadline = float("inf")
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._reclaim_at = 0.0  # monotonic time of the next look for expired leases

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        for name in self.models:
            log.info("loading %s", name)
            attributor = Attributor.from_pretrained(name, device=self.settings.device, dtype=self.settings.dtype)
            # the time model's rates on this device (budget_s plans; published for the API's admission), and
            # the first kernels warmed before the first job; a failed measurement only costs the estimates
            # their precision (the model's size then gives an assumed speed)
            try:
                log.info("%s: %s", name, attributor.calibrate())
            except Exception:  # noqa: BLE001
                log.exception("%s: speed not measured; budgets use a speed assumed from the model's size", name)
            self.attributors[name] = attributor
        self.retrying(jobs.ensure_groups, self.client, self.models)

    def info(self) -> dict:
        device = next(iter(self.attributors.values())).device if self.attributors else torch.device("cpu")
        info = {
            "id": self.id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "models": {name: {"dtype": str(a.model.dtype).removeprefix("torch."), "device": str(a.device),
                              "speed": a.speed.to_dict() if a.speed else None}
                       for name, a in self.attributors.items()},  # fmt: skip
            "busy": bool(self.current),
            "draining": self.draining.is_set(),
        }
        if device.type == "cuda":
            info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # the card(s) `heta serve` gave it
            info["gpu_allocated"] = torch.cuda.memory_allocated(device)
            info["gpu_peak"] = torch.cuda.max_memory_allocated(device)
            info["gpu_total"] = torch.cuda.get_device_properties(device).total_memory  # the memory alert's limit
        return info

    def heartbeat(self) -> None:
        """Registry entry and lease renewal, every ``heartbeat_s``, whatever the compute is doing."""
        ttl = max(3 * self.settings.heartbeat_s, self.settings.heartbeat_s + 1)
        while not self.stopped.wait(self.settings.heartbeat_s):
            self.watch_supervisor()
            try:
                registry.register(self.client, self.id, self.info(), ttl)
                with self._lock:
                    current = list(self.current)
                for stream in dict.fromkeys(stream for stream, _, _ in current):
                    held = [(entry, job_id) for s, entry, job_id in current if s == stream]
                    self.client.eval(*jobs.renew_call(stream, held, self.id))
            except Exception:  # noqa: BLE001 - Redis hiccup: try again next beat
                log.exception("heartbeat failed")

    def watch_supervisor(self) -> None:
        """A worker started by ``heta serve`` drains once serve is gone (killed, even by SIGKILL)."""
        supervisor = os.environ.get("HETA_SUPERVISOR_PID")
        if supervisor and os.getppid() != int(supervisor) and not self.draining.is_set():
            log.warning("the supervisor (pid %s) is gone: draining", supervisor)
            self.drain()

    def run(self) -> None:
        try:
            self.load()
        except Released:  # drained while still waiting for Redis at start: nothing to hand back
            log.info("worker %s stopped before serving", self.id)
            return
        registry.register(self.client, self.id, self.info(), max(3 * self.settings.heartbeat_s, 2))
        beat = threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True)
        beat.start()
        log.info("worker %s serving %s", self.id, ", ".join(self.models))
        pause = 0.0
        try:
            while not self.draining.is_set():
                try:
                    delivered = self.next_entries()
                    if delivered and self.draining.is_set():  # back to the queue at once
                        for stream, entry_id, job_id, *_ in delivered:
                            self._hand_back(stream, entry_id, job_id)
                    elif delivered:
                        self.process(delivered)
                    pause = 0.0
                except Exception as error:
                    if not is_transient(error):
                        raise
                    # Redis down or full: wait and resume, never a tight loop and never an exit
                    pause = min(max(0.2, 2 * pause), 10.0)
                    log.warning("Redis unavailable (%s): retrying in %.1f s", error, pause)
                    self.draining.wait(pause)
        finally:
            self.stopped.set()
            with contextlib.suppress(Exception):
                registry.unregister(self.client, self.id)
            log.info("worker %s stopped", self.id)

    def retrying(self, step, *args, **kwargs):
        """A Redis step run until it succeeds: a transient failure (Redis down or full) waits with
        back-off while the heartbeat keeps the job's lease, so it never fails a job. Draining past
        its deadline: :class:`Released` (the job stays in the stream for another worker)."""
        pause = 0.1
        while True:
            try:
                return step(*args, **kwargs)
            except Exception as error:
                if not is_transient(error):
                    raise
                self.watch_supervisor()  # also before the heartbeat thread runs (loading)
                if self.draining.is_set() and time.monotonic() > self.drain_deadline:
                    raise Released from error
                log.warning("Redis unavailable during a job (%s): retrying in %.1f s", error, pause)
                time.sleep(pause)
                pause = min(2 * pause, 5.0)

    def drain(self, *_args) -> None:
        self.draining.set()
        self.drain_deadline = time.monotonic() + self.settings.drain_s

    # ------------------------------------------------------------------ queue

    def next_entries(self) -> list[tuple[str, str, str, int, list | None]]:
        """[(stream, entry id, job id, deliveries, START's answer if the job is started already)]: an
        expired lease first, else new jobs (up to ``batch_jobs`` per stream: XREADGROUP's COUNT counts
        per stream, so a worker serving several models can be handed jobs of each at once; every one
        delivered is run, none left to wait for its lease)."""
        lease_ms = int(self.settings.lease_s * 1000)
        # expired leases are looked for at most every RECLAIM_EVERY_S, not after every job: a round
        # trip less per job, and a dead worker's job still waits no more than lease_s + 0.5 s
        now = time.monotonic()
        reclaim = now >= self._reclaim_at
        if reclaim:
            self._reclaim_at = now + RECLAIM_EVERY_S
        for name in self.models if reclaim else ():
            stream = jobs.stream_key(name)
            # Redis 6.2 answers (cursor, entries); 7.x adds the deleted ids
            claimed = self.client.xautoclaim(stream, jobs.GROUP, self.id, lease_ms, "0-0", count=1)[1]
            if claimed:
                self._reclaim_at = 0.0  # there may be more
                entry, fields = claimed[0]
                self._record("reclaimed")
                pending = self.client.xpending_range(stream, jobs.GROUP, min=entry, max=entry, count=1)
                deliveries = pending[0]["times_delivered"] if pending else 1
                log.warning("reclaimed %s (delivery %d)", fields.get("job"), deliveries)
                return [(stream, entry, fields["job"], deliveries, None)]
        if not self.settings.redis_cluster:
            return self._read_and_take()
        # on a Redis Cluster the streams live in different slots: one XREADGROUP each, then START apart
        for name in self.models:
            streams = {jobs.stream_key(name): ">"}
            answer = self.client.xreadgroup(
                jobs.GROUP, self.id, streams, count=self.settings.batch_jobs, block=max(50, 500 // len(self.models))
            )  # fmt: skip
            delivered = _delivered(answer)
            if delivered:
                return delivered
        return []

    def _read_and_take(self) -> list[tuple[str, str, str, int, list | None]]:
        """One round trip (one Redis node): the blocking XREADGROUP over every stream, and TAKE
        pipelined behind it, which marks the jobs it delivered running (START's work) the moment they
        arrive; a START round trip less between a job's arrival and its compute."""
        streams = [jobs.stream_key(name) for name in self.models]
        count = self.settings.batch_jobs
        pipe = self.client.pipeline(transaction=False)
        pipe.xreadgroup(jobs.GROUP, self.id, dict.fromkeys(streams, ">"), count=count, block=500)
        pipe.eval(*jobs.take_call(streams, self.id, count * len(streams)))
        answer, taken = pipe.execute()
        started = {(streams[int(index) - 1], entry): (job_id, start) for index, entry, job_id, *start in taken}
        # an entry TAKE found deleted (cancelled while queued) keeps its read's delivery: START says so and it is acked
        return [(stream, entry, job_id, 1, started[(stream, entry)][1] if (stream, entry) in started else None)
                for stream, entry, job_id, _, _ in _delivered(answer)]  # fmt: skip

    def _hand_back(self, stream: str, entry: str, job_id: str) -> None:
        """An entry delivered to this worker, claimable by any other at once (its idle time set to the
        lease), and its job back in the queue's view if this worker had started it."""
        with contextlib.suppress(Exception):
            self.client.eval(*jobs.if_mine_call(job_id, self.id, status="queued", progress="0"))
            self.client.xclaim(stream, jobs.GROUP, self.id, 0, [entry], idle=int(self.settings.lease_s * 1000), justid=True)

    def _done(self, stream: str, entry: str) -> None:
        def ack() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(stream, jobs.GROUP, entry)
            pipe.xdel(stream, entry)
            pipe.execute()

        self.retrying(ack)

    def finalize(self, job: dict, status: str, **fields) -> bool:
        call = jobs.finalize_call(job["id"], job["owner"], job["model"], status, self.settings.result_ttl_s, **fields)
        return bool(self.retrying(self.client.eval, *call))

    def _record(self, *args, **kwargs) -> None:
        """Metrics are best effort: a full or absent Redis loses a count, never a job."""
        try:
            metrics.record_job(self.client, *args, **kwargs)
        except Exception as error:  # noqa: BLE001
            if not is_transient(error):
                raise
            log.warning("metrics not recorded: %s", error)

    # ------------------------------------------------------------------ jobs

    def process(self, delivered: list[tuple[str, str, str, int, list | None]]) -> None:
        """Runs the delivered entries' jobs (together where they can be) and acknowledges each; a job
        released by a drain past its deadline goes back to the queue instead."""
        with self._lock:  # the heartbeat renews these entries' leases from now on
            self.current = [(stream, entry, job_id) for stream, entry, job_id, *_ in delivered]
        try:
            runnable = []
            for stream, entry, job_id, deliveries, taken in delivered:
                try:
                    job = self._start(stream, entry, job_id, deliveries, taken)
                    if job is None:
                        self._done(stream, entry)
                        continue
                except Released:
                    self._hand_back(stream, entry, job_id)
                    log.warning("released %s while draining", job_id)
                    continue
                runnable.append((stream, entry, job))
            self._run_jobs(runnable)
        finally:
            with self._lock:
                self.current = []

    def _start(self, stream: str, entry: str, job_id: str, deliveries: int, taken: list | None) -> dict | None:
        """The job's fields if it is to run now, else None (dead-lettered, skipped past its deadline, gone)."""
        if deliveries > self.settings.max_deliveries:
            job = self.retrying(self.client.hgetall, jobs.job_key(job_id))
            if job and job.get("status") not in jobs.FINAL:
                model = job["model"]
                self.retrying(self.client.xadd, jobs.dead_letter_key(model), {"job": job_id, "deliveries": deliveries})
                detail = f"the job was delivered {deliveries} times without completing (its workers died)"
                if self.finalize(job, "dead_lettered", error={"code": "dead_lettered", "detail": detail}):
                    self._record("dead_lettered")
            return None
        if taken is None:  # START (TAKE did it already for a job just read): one round trip for the job's
            # fields, and the job marked running unless it is final (cancelled while queued, finished
            # by another run, expired) or its deadline passed in the queue
            taken = self.retrying(self.client.eval, *jobs.start_call(job_id, self.id, time.time()))
        outcome, job = jobs.started(taken)
        if outcome == "expired":  # skipped: no compute is spent on a job nobody waits for
            self._fail(job, "deadline_exceeded", "the job's deadline passed before it could run")
        return job if outcome == "started" else None

    def _fail(self, job: dict, code: str, detail: str) -> None:
        if self.finalize(job, "failed", error={"code": code, "detail": detail}):
            self._record("failed", time.time() - float(job["created"]))

    def _run_jobs(self, runnable: list[tuple[str, str, dict]]) -> None:
        """Each started job to its final state: a model's single-prompt jobs together (more than one),
        the others (a batch job, a job alone) one by one."""
        alone, together = [], {}
        for stream, entry, job in runnable:
            single = "items" not in json.loads(job["request"])
            if single and self.settings.batch_jobs > 1:
                together.setdefault(job["model"], []).append((stream, entry, job))
            else:
                alone.append((stream, entry, job))
        for group in together.values():
            if len(group) == 1:
                alone += group
            else:
                self._run_together(group)
        for stream, entry, job in alone:
            self._conclude(stream, entry, job, self._compute(job))

    def _times(self, job: dict) -> tuple[float, float]:
        return float(job["created"]), float(job["started"])

    def _compute(self, job: dict):
        """One job alone: (stored document, HVPs, method, stage seconds), or the exception that ended it."""
        request = json.loads(job["request"])
        attributor = self.attributors[job["model"]]
        job_id, (created, started) = job["id"], self._times(job)
        progress = self._reporter(job_id, float(job["deadline"]))
        try:
            if "items" in request:  # POST /attribute/batch
                batch = BatchRequest.model_validate(request)
                body, hvps = self._run_batch(attributor, batch, progress, job_id, job["model"], (created, started))
                return body, hvps, None, {}
            call = AttributeRequest.model_validate(request).engine_call()
            return self._done_with(job, self._attempt(attributor, *call, progress, job_id, self._publisher(job_id, created, started)))
        except Exception as error:  # noqa: BLE001 - concluded by the job's own outcome
            return error

    def _run_together(self, group: list[tuple[str, str, dict]]) -> None:
        """Single-prompt jobs of one model in one ``attribute_many``, each concluded the moment its own
        work is done. A job that ran out of GPU memory in the shared batches runs again alone (with the
        budget halving)."""
        attributor = self.attributors[group[0][2]["model"]]
        calls, members = [], []
        for stream, entry, job in group:
            try:
                kwargs, config = AttributeRequest.model_validate(json.loads(job["request"])).engine_call()
            except Exception as error:  # noqa: BLE001 - this job's outcome
                self._conclude(stream, entry, job, error)
                continue
            created, started = self._times(job)
            calls.append({**kwargs, "config": config, "progress": self._reporter(job["id"], float(job["deadline"])),
                          "on_partial": self._publisher(job["id"], created, started)})  # fmt: skip
            members.append((stream, entry, job))
        oom = []

        def concluded(index: int, outcome) -> None:
            stream, entry, job = members[index]
            if isinstance(outcome, torch.cuda.OutOfMemoryError):
                oom.append(members[index])
                return
            self._conclude(stream, entry, job, outcome if isinstance(outcome, BaseException) else self._done_with(job, outcome))

        attributor.attribute_many(calls, packing=self.settings.batch_packing, on_outcome=concluded)
        for stream, entry, job in oom:
            torch.cuda.empty_cache()
            self._conclude(stream, entry, job, self._compute(job))

    def _done_with(self, job: dict, result) -> tuple:
        body = job_result_json(result, job["id"], *self._times(job))
        stages = {name: seconds for name, seconds in result.timings.stages().items() if name != "total"}
        return body, result.meta.hvps or 0, result.method, stages

    def _conclude(self, stream: str, entry: str, job: dict, outcome) -> None:
        """The job's final transition from its outcome, then its entry acknowledged; a drain past its
        deadline hands it back to the queue instead."""
        job_id, created = job["id"], float(job["created"])
        try:
            if isinstance(outcome, Released):
                raise outcome
            if isinstance(outcome, JobCancelled):
                if self.finalize(job, "cancelled"):
                    self._record("cancelled", time.time() - created)
            elif isinstance(outcome, DeadlineExceeded):
                self._fail(job, "deadline_exceeded", "the job did not finish before its deadline")
            elif isinstance(outcome, ItemFailed):
                self._fail(job, outcome.code, outcome.detail)
            elif isinstance(outcome, HetaError):
                self._fail(job, outcome.code, str(outcome))
            elif isinstance(outcome, BaseException):  # a bug must fail the job, not the worker
                log.error("job %s failed", job_id, exc_info=outcome)
                self._fail(job, "internal_error", f"{type(outcome).__name__}: {outcome}")
            else:
                body, hvps, method, stages = outcome
                if self.finalize(job, "done", result=body, progress="1"):
                    self._record("done", time.time() - created, method, stages, hvps)
                    if job.get("cache"):
                        self._cache(job["cache"], body)
            self._done(stream, entry)
        except Released:
            self._hand_back(stream, entry, job_id)
            log.warning("released %s while draining", job_id)
        with self._lock:  # no lease to renew any more
            self.current = [held for held in self.current if held[1] != entry]

    def _reporter(self, job_id: str, deadline: float):
        """The engine's progress callback: reports the fraction (throttled), and stops the run for a
        cancel, a passed deadline or a drain past its deadline (between chunks)."""
        last_write = [0.0]

        def progress(fraction: float) -> None:
            if time.time() > deadline:
                raise DeadlineExceeded
            if self.draining.is_set() and time.monotonic() > self.drain_deadline:
                raise Released
            if fraction <= 0.0 or fraction >= 1.0:  # START has just written 0, FINALIZE is about to write 1
                return
            now = time.monotonic()
            report = now - last_write[0] > 0.2
            try:  # one round trip: the progress (throttled) and the cancel flag
                fields = {"progress": f"{fraction:.4f}"} if report else {}
                cancelled = self.client.eval(*jobs.if_mine_call(job_id, self.id, **fields))
            except Exception as error:  # noqa: BLE001 - Redis down or full: compute on, report later
                if not is_transient(error):
                    raise
                return
            if report:
                last_write[0] = now
            if cancelled:
                raise JobCancelled

        return progress

    def _publisher(self, job_id: str, created: float, started: float):
        """The engine's ``on_partial``: each partial result into the job (fenced like progress; best
        effort: a Redis hiccup loses a partial, never the job), and the cancel flag on the way back."""

        published: list[str] = []

        def publish(result) -> None:
            fields = jobs.partial_fields(result.stages_done, job_result_json(result, job_id, created, started), published)
            try:
                cancelled = self.client.eval(*jobs.if_mine_call(job_id, self.id, **fields))
            except Exception as error:  # noqa: BLE001
                if not is_transient(error):
                    raise
                return
            published.append(",".join(result.stages_done))
            if cancelled:
                raise JobCancelled

        return publish

    def _attempt(self, attributor: Attributor, kwargs: dict, config, progress, job_id: str, on_partial=None):
        """One attribution; CUDA out-of-memory empties the cache and retries with half the memory
        budget (``OOM_RETRIES`` times), then :class:`ItemFailed`."""
        for attempt in range(OOM_RETRIES + 1):
            try:
                return attributor.attribute(**kwargs, config=config, progress=progress, on_partial=on_partial)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                # halve what the failed attempt really used: the configured budget, else the auto one
                budget = attributor.chunk_budget_mb(config)
                if attempt == OOM_RETRIES:
                    raise ItemFailed("out_of_memory", "the job ran out of GPU memory even with smaller chunks") from None
                config = config.replace(memory_budget_mb=max(16, budget // 2))
                log.warning("CUDA OOM on %s: retrying with memory_budget_mb=%d", job_id, config.memory_budget_mb)

    def _run_batch(self, attributor: Attributor, batch: BatchRequest, progress, job_id: str, model: str, times: tuple[float, float]):
        """Every item in turn, each with its own result or error; a cancel, a deadline or a drain
        stops the whole job. Returns (the stored document, total HVPs)."""
        entries, compute, hvps = [], 0.0, 0
        for index, item in enumerate(batch.items):
            def scaled(fraction: float, index: int = index) -> None:
                progress((index + fraction) / len(batch.items))

            entry: dict = {"index": index, "id": item.id}
            try:
                result = self._attempt(attributor, *item.engine_call(), scaled, job_id)
                entry["result"] = result.to_dict()
                compute += result.timings.compute_s
                hvps += result.meta.hvps or 0
            except (ItemFailed, HetaError) as error:
                code, detail = (error.code, error.detail) if isinstance(error, ItemFailed) else (error.code, str(error))
                entry["error"] = {"code": code, "detail": detail}
            except (JobCancelled, DeadlineExceeded, Released):
                raise
            except Exception as error:  # noqa: BLE001 - a bug fails this item, not the batch
                log.exception("job %s item %d failed", job_id, index)
                entry["error"] = {"code": "internal_error", "detail": f"{type(error).__name__}: {error}"}
            entries.append(entry)
        return batch_result_json(job_id, model, entries, compute, *times), hvps

    def _cache(self, entry: str, body: str) -> None:
        """The result cache is best effort too: a full Redis loses an entry, never a job."""
        try:
            self.client.eval(*cache.put_call(entry, body, self.settings.cache_ttl_s, self.settings.cache_max_bytes))
        except Exception as error:  # noqa: BLE001
            if not is_transient(error):
                raise
            log.warning("result not cached: %s", error)


def main(settings: Settings, models: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.has_store:
        raise SystemExit("heta worker: error: set REDIS_URL or HETA_REDIS_SENTINELS (or run `heta serve`, which starts Redis)")
    if not models:
        raise SystemExit("heta worker: error: no models: set HETA_MODELS or pass --model")
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    worker = Worker(settings, models)
    signal.signal(signal.SIGTERM, worker.drain)
    signal.signal(signal.SIGINT, worker.drain)
    worker.run()
    return 0
