"""A job as GET /jobs/{id} shows it, and the partial results a running job holds."""

from __future__ import annotations

import json
from typing import Any

# the fields of the job's status (what GET /jobs/{id} shows besides the result, error and partial result)
VIEW_FIELDS = (
    "id",
    "status",
    "model",
    "progress",
    "attempts",
    "created",
    "started",
    "finished",
    "deadline",
    "worker",
    "cancel",
    "request_id",
)


def public_view(job: dict[str, str]) -> dict[str, Any]:
    """The job as GET /jobs/{id} shows it."""
    view: dict[str, Any] = {
        "job_id": job["id"],
        "status": job["status"],
        "model": job["model"],
        "progress": float(job.get("progress", 0)),
        "attempts": int(job.get("attempts", 0)),
        "created": float(job["created"]),
        "started": float(job["started"]) if job.get("started") else None,
        "finished": float(job["finished"]) if job.get("finished") else None,
        "deadline": float(job["deadline"]),
        "worker": job.get("worker"),  # host-pid-suffix of the worker that ran it last
        "request_id": job.get("request_id"),
    }
    if job["status"] == "running" and job.get("cancel"):
        view["status"] = "cancelling"
    if job.get("result"):
        view["result"] = json.loads(job["result"])
    if job.get("error"):
        view["error"] = json.loads(job["error"])
    latest = partials(job)[-1:]
    if latest:
        view["partial"] = json.loads(latest[0][1])
    return view


def partial_fields(stages: list[str], body: str, published: list[str]) -> dict[str, str]:
    """The job fields that store one more partial result (``published``: the stage lists stored before)."""
    name = ",".join(stages)
    return {f"partial:{name}": body, "partials": ";".join([*published, name])}


def partials(job: dict[str, str]) -> list[tuple[str, str]]:
    """(stages, JobResult JSON) of every partial result the job holds, oldest first."""
    names = [name for name in job.get("partials", "").split(";") if name]
    return [(name, job[f"partial:{name}"]) for name in names if f"partial:{name}" in job]
