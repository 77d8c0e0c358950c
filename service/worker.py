"""A worker process: models loaded once and kept warm, and the jobs the queue consumer
(:mod:`heta_service.consumer`: leases, reclaim, drain, back-off) hands it run on them.

Concurrent jobs run together: one read takes up to ``batch_jobs`` waiting jobs per model, and a
model's single-prompt jobs run through ``Attributor.attribute_many``, their masked forwards and
Hessian-vector chunks packed into shared batches. Each keeps its own lease (the heartbeat renews
every entry in hand), progress, partial results, cancellation and deadline, and one job's failure or
cancellation never fails the others. Cancellation and deadlines are checked between chunks (the
engine's progress callback), and progress and partial results are fenced by the worker's id (a
worker stopped past its lease that wakes up changes nothing). Finishing is one atomic transition
(see :mod:`heta_service.store`), so a job completes once. CUDA out-of-memory empties the cache and
retries with half the memory budget (twice), then fails the job with a clear error; the worker keeps
serving (``HETA_FAULT_OOM_TIMES``, :mod:`heta_core.runtime.faults`, injects such failures for tests).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from typing import Any, NamedTuple

import torch

from heta_core import Attributor, HetaError

from . import cache, callbacks, logs, store, tracing
from .callbacks import DeadlineExceeded, JobCancelled
from .connections import is_transient
from .consumer import Consumer, Released
from .schemas import AttributeRequest, BatchRequest, batch_result_json, job_result_json
from .settings import Settings

log = logging.getLogger("heta.worker")
OOM_RETRIES = 2


class ItemFailed(Exception):
    """An attribution that cannot finish here (out of memory after the retries)."""

    def __init__(self, code: str, detail: str):
        super().__init__(detail)
        self.code, self.detail = code, detail


class Done(NamedTuple):
    """A job's computed outcome: the stored document, and what metrics and its trace record of it."""

    body: str
    hvps: int
    method: str | None
    stages: dict[str, float]  # stage seconds (metrics)
    timings: Any = None  # the result's Timings (the trace's stage spans); None for a batch
    tokens: int | None = None


def job_context(job: dict):
    """The job's ids on every log line logged inside (its trace id from the context it carries)."""
    parts = job.get("traceparent", "").split("-")
    return logs.bound(
        job_id=job["id"],
        model=job["model"],
        request_id=job.get("request_id"),
        trace_id=parts[1] if len(parts) == 4 else None,
    )


class Worker(Consumer):
    def __init__(self, settings: Settings, models: list[str]):
        super().__init__(settings, models)
        self.attributors: dict[str, Attributor] = {}

    # ------------------------------------------------------------------ lifecycle

    def load(self) -> None:
        for name in self.models:
            log.info("loading %s", name)
            settings = self.settings
            attributor = Attributor.from_pretrained(
                name,
                device=settings.device,
                dtype=settings.dtype,
                device_map=settings.device_map,
                quantize=settings.quantize,
                offload_folder=str(settings.offload_folder / name.replace("/", "--"))
                if settings.offload_folder
                else None,
            )
            # the time model's rates on this device (budget_s plans; published for the API's admission), and
            # the first kernels warmed before the first job; a failed measurement only costs the estimates
            # their precision (the model's size then gives an assumed speed)
            try:
                log.info("%s: %s", name, attributor.calibrate())
            except Exception:
                log.exception("%s: speed not measured; budgets use a speed assumed from the model's size", name)
            self.attributors[name] = attributor
        self.retrying(store.ensure_groups, self.client, self.models)

    def info(self) -> dict:
        device = next(iter(self.attributors.values())).device if self.attributors else torch.device("cpu")
        info = {
            "id": self.id,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "models": {
                name: {
                    "dtype": a.dtype,
                    "device": str(a.device),
                    "placement": a.placement.to_dict(),
                    "speed": a.speed.to_dict() if a.speed else None,
                    "cuda_graphs": a.graph_stats if self.settings.cuda_graphs else None,
                }
                for name, a in self.attributors.items()
            },
            "busy": bool(self.current),
            "draining": self.draining.is_set(),
        }
        if device.type == "cuda":
            info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")  # the card(s) `heta serve` gave it
            info["gpu_allocated"] = torch.cuda.memory_allocated(device)
            info["gpu_peak"] = torch.cuda.max_memory_allocated(device)
            info["gpu_total"] = torch.cuda.get_device_properties(device).total_memory  # the memory alert's limit
        return info

    # ------------------------------------------------------------------ jobs

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

    def _callbacks(self, job: dict) -> tuple:
        """The engine's (progress, on_partial) for the job (:mod:`heta_service.callbacks`)."""
        return (
            callbacks.reporter(self.jobs, self.id, job["id"], float(job["deadline"]), self.past_drain_deadline),
            callbacks.publisher(self.jobs, self.id, job["id"], *self._times(job)),
        )

    def _compute(self, job: dict):
        """One job alone: its :class:`Done`, or the exception that ended it."""
        request = json.loads(job["request"])
        attributor = self.attributors[job["model"]]
        job_id, (created, started) = job["id"], self._times(job)
        progress, publish = self._callbacks(job)
        try:
            with job_context(job):
                if "items" in request:  # POST /attribute/batch
                    batch = BatchRequest.model_validate(request)
                    return Done(
                        *self._run_batch(attributor, batch, progress, job_id, job["model"], (created, started)),
                        None,
                        {},
                    )
                call = AttributeRequest.model_validate(request).engine_call()
                return self._done_with(job, self._attempt(attributor, *call, progress, job_id, publish))
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
            progress, publish = self._callbacks(job)
            calls.append(
                {
                    **kwargs,
                    "config": self._executing(config),
                    "progress": progress,
                    "on_partial": publish,
                }
            )
            members.append((stream, entry, job))
        oom = []

        def concluded(index: int, outcome) -> None:
            stream, entry, job = members[index]
            if isinstance(outcome, torch.cuda.OutOfMemoryError):
                oom.append(members[index])
                return
            self._conclude(
                stream, entry, job, outcome if isinstance(outcome, BaseException) else self._done_with(job, outcome)
            )

        attributor.attribute_many(calls, packing=self.settings.batch_packing, on_outcome=concluded)
        for stream, entry, job in oom:
            torch.cuda.empty_cache()
            self._conclude(stream, entry, job, self._compute(job))

    def _done_with(self, job: dict, result) -> Done:
        body = job_result_json(result, job["id"], *self._times(job))
        stages = {name: seconds for name, seconds in result.timings.stages().items() if name != "total"}
        return Done(
            body, result.meta.hvps or 0, result.method, stages, result.timings, len(result.tokens) + len(result.targets)
        )

    def _conclude(self, stream: str, entry: str, job: dict, outcome) -> None:
        """The job's final transition from its outcome, then its entry acknowledged; a drain past its
        deadline hands it back to the queue instead."""
        job_id, created = job["id"], float(job["created"])
        with job_context(job), tracing.job_span(job) as span:
            if isinstance(outcome, Done) and outcome.timings is not None:
                span.stages(outcome.timings, method=outcome.method, hvps=outcome.hvps, tokens=outcome.tokens)
            try:
                with span.step("finalize"):
                    ended = self._finalize_outcome(job, outcome)
                span.annotate(outcome=ended)
                log.info("job %s %s", job_id, ended, extra={"duration": round(time.time() - created, 6)})
                self._done(stream, entry)
            except Released:
                span.annotate(outcome="released")
                self._hand_back(stream, entry, job_id)
                log.warning("released %s while draining", job_id)
        with self._lock:  # no lease to renew any more
            self.current = [held for held in self.current if held[1] != entry]

    def _finalize_outcome(self, job: dict, outcome) -> str:
        """The job's final transition from its outcome; returns the outcome's name (its error code
        when it failed)."""
        created = float(job["created"])
        if isinstance(outcome, Released):
            raise outcome
        if isinstance(outcome, JobCancelled):
            if self.finalize(job, "cancelled"):
                self._record("cancelled", time.time() - created)
            return "cancelled"
        failure = None
        if isinstance(outcome, DeadlineExceeded):
            failure = ("deadline_exceeded", "the job did not finish before its deadline")
        elif isinstance(outcome, ItemFailed):
            failure = (outcome.code, outcome.detail)
        elif isinstance(outcome, HetaError):
            failure = (outcome.code, str(outcome))
        elif isinstance(outcome, BaseException):  # a bug must fail the job, not the worker
            log.error("job %s failed", job["id"], exc_info=outcome)
            failure = ("internal_error", f"{type(outcome).__name__}: {outcome}")
        if failure is not None:
            self._fail(job, *failure)
            return failure[0]
        if job.get("cache"):  # before the job reads done: a client repeating the request once it has the result hits
            self._cache(job["cache"], outcome.body)
        if self.finalize(job, "done", result=outcome.body, progress="1"):
            self._record("done", time.time() - created, outcome.method, outcome.stages, outcome.hvps)
        return "done"

    def _executing(self, config):
        """A request's config with the worker's execution knobs (they change how it runs, not its numbers)."""
        return config.replace(cuda_graphs=True) if self.settings.cuda_graphs else config

    def _attempt(self, attributor: Attributor, kwargs: dict, config, progress, job_id: str, on_partial=None):
        """One attribution; CUDA out-of-memory empties the cache and retries with half the memory
        budget (``OOM_RETRIES`` times), then :class:`ItemFailed`."""
        config = self._executing(config)
        for attempt in range(OOM_RETRIES + 1):
            try:
                return attributor.attribute(**kwargs, config=config, progress=progress, on_partial=on_partial)
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                # halve what the failed attempt really used: the configured budget, else the auto one
                budget = attributor.chunk_budget_mb(config)
                if attempt == OOM_RETRIES:
                    raise ItemFailed(
                        "out_of_memory", "the job ran out of GPU memory even with smaller chunks"
                    ) from None
                config = config.replace(memory_budget_mb=max(16, budget // 2))
                log.warning(
                    "CUDA OOM on %s: retrying with memory_budget_mb=%d",
                    job_id,
                    config.memory_budget_mb,
                    extra={"job_id": job_id},
                )

    def _run_batch(
        self, attributor: Attributor, batch: BatchRequest, progress, job_id: str, model: str, times: tuple[float, float]
    ):
        """Every item in turn, each with its own result or error; a cancel, a deadline or a drain
        stops the whole job. Returns (the stored document, total HVPs). Not ``Attributor.iter_batch``:
        here each item gets the worker's out-of-memory retry, and a bug fails only its own item."""
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
            except Exception as error:  # a bug fails this item, not the batch
                log.exception("job %s item %d failed", job_id, index)
                entry["error"] = {"code": "internal_error", "detail": f"{type(error).__name__}: {error}"}
            entries.append(entry)
        return batch_result_json(job_id, model, entries, compute, *times), hvps

    def _cache(self, entry: str, body: str) -> None:
        """The result cache is best effort too: a full Redis loses an entry, never a job."""
        try:
            self.client.eval(*cache.put_call(entry, body, self.settings.cache_ttl_s, self.settings.cache_max_bytes))
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("result not cached: %s", error)


def main(settings: Settings, models: list[str]) -> int:
    logs.configure(settings.log_format)
    tracing.setup(settings.otel_exporter_otlp_endpoint, settings.otel_service_name, "worker")
    if not settings.has_store:
        raise SystemExit(
            "heta worker: error: set REDIS_URL or HETA_REDIS_SENTINELS (or run `heta serve`, which starts Redis)"
        )
    if not models:
        raise SystemExit("heta worker: error: no models: set HETA_MODELS or pass --model")
    if settings.torch_threads is not None:
        torch.set_num_threads(settings.torch_threads)
    worker = Worker(settings, models)
    signal.signal(signal.SIGTERM, worker.drain)
    signal.signal(signal.SIGINT, worker.drain)
    worker.run()
    return 0
