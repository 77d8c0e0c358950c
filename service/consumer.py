"""The queue half of a worker process: Redis Streams consumption with at-least-once delivery.

- each model has a stream and the consumer group ``workers``; a worker reads with XREADGROUP, so a
  delivered job sits in the group's pending list until the worker acknowledges it;
- a heartbeat thread, independent of the compute, refreshes the worker's registry entry and renews
  the leases of the jobs in hand that are still its own (RENEW), so a long job on a healthy worker is
  never taken away, and a worker cut off past its lease does not take a reclaimed job back;
- a dead worker stops renewing: after ``lease_s`` any worker reclaims the entry (XAUTOCLAIM) and runs
  the job again; after ``max_deliveries`` deliveries the job goes to the dead-letter stream instead;
- starting a job is fenced by the worker's id, and a job whose deadline passed in the queue is skipped;
- a Redis that is down, full or failing over never fails a job: each step waits with back-off
  (:meth:`Consumer.retrying`) and the main loop resumes when Redis is back; SIGTERM drains.

What runs a started job is the subclass's (:class:`heta_service.worker.Worker`): ``load``, ``info``
and ``_run_jobs``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from abc import ABC, abstractmethod

from . import monitoring, registry, store
from .connections import connect_store, is_transient
from .settings import Settings

log = logging.getLogger("heta.worker")
RECLAIM_EVERY_S = 0.5


class Released(Exception):
    """Draining took too long: hand the job back to the queue."""


def _delivered(answer) -> list[tuple[str, str, str, int, None]]:
    """XREADGROUP's answer as fresh deliveries (stream, entry id, job id, 1, not started)."""
    return [(stream, entry, fields["job"], 1, None) for stream, entries in answer or [] for entry, fields in entries]


class Consumer(ABC):
    """Leases, reclaim, drain and back-off around the jobs a subclass runs."""

    def __init__(self, settings: Settings, models: list[str]):
        self.settings = settings
        self.models = models
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        store.use_cluster(settings.redis_cluster)
        self.client = connect_store(settings)
        self.jobs = store.JobStore(self.client)
        self.current: list[tuple[str, str, str]] = []  # the entries in hand: (stream, entry id, job id)
        self.draining = threading.Event()
        self.drain_deadline = float("inf")
        self.stopped = threading.Event()
        self._lock = threading.Lock()
        self._reclaim_at = 0.0  # monotonic time of the next look for expired leases

    @abstractmethod
    def load(self) -> None:
        """Whatever the jobs need, before the first read (the models)."""

    @abstractmethod
    def info(self) -> dict:
        """The worker's registry entry."""

    @abstractmethod
    def _run_jobs(self, runnable: list[tuple[str, str, dict]]) -> None:
        """Every started job (stream, entry id, its fields) to its final state."""

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
                    self.jobs.renew(stream, held, self.id)
            except Exception:  # Redis hiccup: try again next beat
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
                if self.past_drain_deadline():
                    raise Released from error
                log.warning("Redis unavailable during a job (%s): retrying in %.1f s", error, pause)
                time.sleep(pause)
                pause = min(2 * pause, 5.0)

    def past_drain_deadline(self) -> bool:
        """Draining, and the drain's time is up: a running job is handed back (:class:`Released`)."""
        return self.draining.is_set() and time.monotonic() > self.drain_deadline

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
            stream = store.stream_key(name)
            # Redis 6.2 answers (cursor, entries); 7.x adds the deleted ids
            claimed = self.client.xautoclaim(stream, store.GROUP, self.id, lease_ms, "0-0", count=1)[1]
            if claimed:
                self._reclaim_at = 0.0  # there may be more
                entry, fields = claimed[0]
                self._record("reclaimed")
                pending = self.client.xpending_range(stream, store.GROUP, min=entry, max=entry, count=1)
                deliveries = pending[0]["times_delivered"] if pending else 1
                log.warning(
                    "reclaimed %s (delivery %d)", fields.get("job"), deliveries, extra={"job_id": fields.get("job")}
                )
                return [(stream, entry, fields["job"], deliveries, None)]
        if not self.settings.redis_cluster:
            return self._read_and_take()
        # on a Redis Cluster the streams live in different slots: one XREADGROUP each, then START apart
        for name in self.models:
            streams = {store.stream_key(name): ">"}
            answer = self.client.xreadgroup(
                store.GROUP, self.id, streams, count=self.settings.batch_jobs, block=max(50, 500 // len(self.models))
            )
            delivered = _delivered(answer)
            if delivered:
                return delivered
        return []

    def _read_and_take(self) -> list[tuple[str, str, str, int, list | None]]:
        """One round trip (one Redis node): the blocking XREADGROUP over every stream, and TAKE
        pipelined behind it, which marks the jobs it delivered running (START's work) the moment they
        arrive; a START round trip less between a job's arrival and its compute."""
        streams = [store.stream_key(name) for name in self.models]
        count = self.settings.batch_jobs
        pipe = self.client.pipeline(transaction=False)
        pipe.xreadgroup(store.GROUP, self.id, dict.fromkeys(streams, ">"), count=count, block=500)
        pipe.eval(*store.take_call(streams, self.id, count * len(streams)))
        answer, taken = pipe.execute()
        started = {(streams[int(index) - 1], entry): (job_id, start) for index, entry, job_id, *start in taken}
        # an entry TAKE found deleted (cancelled while queued) keeps its read's delivery: START says so and it is acked
        return [
            (stream, entry, job_id, 1, started[(stream, entry)][1] if (stream, entry) in started else None)
            for stream, entry, job_id, _, _ in _delivered(answer)
        ]

    def _hand_back(self, stream: str, entry: str, job_id: str) -> None:
        """An entry delivered to this worker, claimable by any other at once (its idle time set to the
        lease), and its job back in the queue's view if this worker had started it."""
        with contextlib.suppress(Exception):
            self.jobs.report(job_id, self.id, status=store.JobStatus.QUEUED, progress="0")
            self.client.xclaim(
                stream, store.GROUP, self.id, 0, [entry], idle=int(self.settings.lease_s * 1000), justid=True
            )

    def _done(self, stream: str, entry: str) -> None:
        def ack() -> None:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(stream, store.GROUP, entry)
            pipe.xdel(stream, entry)
            pipe.execute()

        self.retrying(ack)

    def finalize(self, job: dict, status: str, **fields) -> bool:
        return bool(self.retrying(self.jobs.finish, job, status, self.settings.result_ttl_s, **fields))

    def _record(self, *args, **kwargs) -> None:
        """Metrics are best effort: a full or absent Redis loses a count, never a job."""
        try:
            monitoring.record_job(self.client, *args, **kwargs)
        except Exception as error:
            if not is_transient(error):
                raise
            log.warning("metrics not recorded: %s", error)

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
                    log.warning("released %s while draining", job_id, extra={"job_id": job_id})
                    continue
                runnable.append((stream, entry, job))
            self._run_jobs(runnable)
        finally:
            with self._lock:
                self.current = []

    def _start(self, stream: str, entry: str, job_id: str, deliveries: int, taken: list | None) -> dict | None:
        """The job's fields if it is to run now, else None (dead-lettered, skipped past its deadline, gone)."""
        if deliveries > self.settings.max_deliveries:
            job = self.retrying(self.jobs.read, job_id)
            if job and job.get("status") not in store.FINAL:
                model = job["model"]
                self.retrying(self.client.xadd, store.dead_letter_key(model), {"job": job_id, "deliveries": deliveries})
                detail = f"the job was delivered {deliveries} times without completing (its workers died)"
                if self.finalize(job, "dead_lettered", error={"code": "dead_lettered", "detail": detail}):
                    self._record("dead_lettered")
            return None
        if taken is None:  # START (TAKE did it already for a job just read): one round trip for the job's
            # fields, and the job marked running unless it is final (cancelled while queued, finished
            # by another run, expired) or its deadline passed in the queue
            taken = self.retrying(self.jobs.start, job_id, self.id, time.time())
        outcome, job = store.started(taken)
        if outcome == "expired":  # skipped: no compute is spent on a job nobody waits for
            self._fail(job, "deadline_exceeded", "the job's deadline passed before it could run")
        return job if outcome == "started" else None

    def _fail(self, job: dict, code: str, detail: str) -> None:
        if self.finalize(job, "failed", error={"code": code, "detail": detail}):
            self._record("failed", time.time() - float(job["created"]))
