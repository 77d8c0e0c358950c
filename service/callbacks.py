"""The engine's callbacks for one running job, written back to its record in the store: progress
(throttled), partial results, and on the way back the job's cancel flag, its deadline and a drain's
deadline — checked between chunks, where the engine calls them. Every write is fenced by the worker's
id (:class:`~heta_service.store.JobStore`), so a worker past its lease changes nothing; a transient
Redis failure loses a report, never the job."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import store
from .connections import is_transient
from .consumer import Released
from .schemas import job_result_json


class JobCancelled(Exception):
    """The job's cancel flag was seen."""


class DeadlineExceeded(Exception):
    """The job's deadline passed while it ran."""


def reporter(
    jobs: store.JobStore, worker: str, job_id: str, deadline: float, released: Callable[[], bool]
) -> Callable[[float], None]:
    """The engine's ``progress``: reports the fraction (throttled), and stops the run for a cancel, a
    passed deadline or a drain past its deadline (``released()``)."""
    last_write = [0.0]

    def progress(fraction: float) -> None:
        if time.time() > deadline:
            raise DeadlineExceeded
        if released():
            raise Released
        if fraction <= 0.0 or fraction >= 1.0:  # START has just written 0, FINALIZE is about to write 1
            return
        now = time.monotonic()
        report = now - last_write[0] > 0.2
        try:  # one round trip: the progress (throttled) and the cancel flag
            fields = {"progress": f"{fraction:.4f}"} if report else {}
            cancelled = jobs.report(job_id, worker, **fields)
        except Exception as error:  # Redis down or full: compute on, report later
            if not is_transient(error):
                raise
            return
        if report:
            last_write[0] = now
        if cancelled:
            raise JobCancelled

    return progress


def publisher(jobs: store.JobStore, worker: str, job_id: str, created: float, started: float) -> Callable:
    """The engine's ``on_partial``: each partial result into the job, and the cancel flag on the way back."""
    published: list[str] = []

    def publish(result) -> None:
        fields = store.partial_fields(result.stages_done, job_result_json(result, job_id, created, started), published)
        try:
            cancelled = jobs.report(job_id, worker, **fields)
        except Exception as error:
            if not is_transient(error):
                raise
            return
        published.append(",".join(result.stages_done))
        if cancelled:
            raise JobCancelled

    return publish
