"""POST /attribute (wait for the result, up to ``wait`` seconds), POST /attribute/batch (many
prompts as one job, waited for the same way) and POST /jobs (queue only)."""

from __future__ import annotations

import json
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.responses import JSONResponse, Response

from .. import store
from ..admission import submit
from ..deps import Services, ServicesDep, SubmitterDep
from ..problems import Problem, problem_responses
from ..ratelimit import Caller
from ..schemas import AttributeRequest, BatchRequest, BatchResult, JobAccepted, JobResult

router = APIRouter(tags=["attribution"])

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1, max_length=255, description="one job per (API key, key): a retried submit returns the same job"
    ),
]
# a finished job's error code → the status POST /attribute answers with
FAILURE_STATUS = {"deadline_exceeded": 504, "out_of_memory": 503, "dead_lettered": 500, "internal_error": 500}
ADMISSION_PROBLEMS = (400, 401, 403, 413, 422, 429, 503)
ACCEPTED = {
    "model": JobAccepted,
    "description": "queued (or still running after `wait`): poll the Location",
    "headers": {"Location": {"description": "/jobs/{job_id}", "schema": {"type": "string"}}},
}
# POST /attribute?partial=true: a running job's latest partial result instead of the bare job id
ACCEPTED_OR_PARTIAL = {
    **ACCEPTED,
    "model": JobAccepted | JobResult,
    "description": "queued, or still running after `wait`: poll the Location. With `partial=true` and a partial result "
    "already published, the body is that partial result (`partial: true`, with `job_id`)",
}


def accepted(job_id: str, status: str) -> JSONResponse:
    return JSONResponse({"job_id": job_id, "status": status}, status_code=202, headers={"Location": f"/jobs/{job_id}"})


def finished_response(job: dict) -> Response:
    if job["status"] == "done":
        return Response(job["result"], media_type="application/json")  # stored as the JobResult document
    error = json.loads(job.get("error") or "{}")
    code = error.get("code", job["status"])
    if job["status"] == "cancelled":
        raise Problem(409, "cancelled", "the job was cancelled", job_id=job["id"])
    raise Problem(FAILURE_STATUS.get(code, 422), code, error.get("detail", "the job failed"), job_id=job["id"])


async def submit_and_wait(
    svc: Services,
    body: AttributeRequest | BatchRequest,
    caller: Caller,
    idempotency_key: str | None,
    partial: bool = False,
):
    job_id, created = await submit(svc, body, caller, idempotency_key)
    job = await svc.jobs.wait(job_id, min(body.wait, svc.settings.max_wait_s), fresh=created)
    if job and job["status"] in store.FINAL:
        return finished_response(job)
    latest = store.partials(job)[-1:] if partial and job else []
    if latest:  # still running: what it knows so far
        return Response(
            latest[0][1], status_code=202, media_type="application/json", headers={"Location": f"/jobs/{job_id}"}
        )
    return accepted(job_id, job.get("status", "queued") if job else "queued")


@router.post(
    "/attribute",
    summary="Attribute; 200 with the result if done within `wait`, "
    "else 202 (with `partial=true`: the latest partial result)",
    response_model=JobResult,
    responses={202: ACCEPTED_OR_PARTIAL, **problem_responses(*ADMISSION_PROBLEMS, 409, 500, 504)},
)
async def attribute(
    body: AttributeRequest,
    caller: SubmitterDep,
    svc: ServicesDep,
    idempotency_key: IdempotencyKey = None,
    partial: Annotated[
        bool,
        Query(
            description="when `wait` runs out on a running HETA job, answer 202 with its latest partial "
            "result (`partial: true`) instead of the bare job id"
        ),
    ] = False,
):
    return await submit_and_wait(svc, body, caller, idempotency_key, partial)


@router.post(
    "/attribute/batch",
    summary="Attribute many prompts as one job; 200 with every item's result or error if done within `wait`, else 202",
    response_model=BatchResult,
    responses={202: ACCEPTED, **problem_responses(*ADMISSION_PROBLEMS, 409, 500, 504)},
)
async def attribute_batch(
    body: BatchRequest,
    caller: SubmitterDep,
    svc: ServicesDep,
    idempotency_key: IdempotencyKey = None,
):
    """Items are checked before anything is queued (one bad item: 422 `invalid_batch` listing every
    bad item); then they run one after another in one job, whose progress covers the whole batch.
    An item that fails while running gets an `error` entry; the others still run."""
    return await submit_and_wait(svc, body, caller, idempotency_key)


@router.post(
    "/jobs",
    status_code=202,
    summary="Queue an attribution; always 202 with job_id",
    response_model=JobAccepted,
    responses={202: ACCEPTED, **problem_responses(*ADMISSION_PROBLEMS)},
)
async def create_job(
    body: AttributeRequest,
    caller: SubmitterDep,
    svc: ServicesDep,
    idempotency_key: IdempotencyKey = None,
):
    job_id, _ = await submit(svc, body, caller, idempotency_key)
    return accepted(job_id, "queued")
