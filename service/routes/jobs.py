"""GET /jobs/{id} (status, progress, result or error) and DELETE /jobs/{id} (cancel)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from .. import store
from ..deps import CallerDep, ServicesDep
from ..problems import Problem, problem_responses
from ..schemas import JobView

router = APIRouter(prefix="/jobs", tags=["jobs"])
PROBLEMS = (401, 403, 404, 429, 503)


async def load_job(jobs: store.JobStore, keys, job_id: str, owner: str) -> dict:
    job = await jobs.read(job_id)
    if not job or (keys.enabled and job.get("owner") != owner):
        raise Problem(404, "job_not_found", f"no job {job_id!r} (unknown, expired, or not yours)")
    return job


@router.get(
    "/{job_id}",
    summary="Status, progress 0-1, result when done, error when failed",
    response_model=JobView,
    responses=problem_responses(*PROBLEMS),
)
async def get_job(job_id: str, owner: CallerDep, svc: ServicesDep):
    return JSONResponse(store.public_view(await load_job(svc.jobs, svc.keys, job_id, owner)))


@router.delete(
    "/{job_id}",
    status_code=202,
    summary="Cancel (a queued job never runs; a running one stops at its next chunk), or purge a finished job",
    response_model=JobView,
    responses={
        204: {"description": "purged: the finished job's request and result are deleted"},
        **problem_responses(*PROBLEMS, 409, 422),
    },
)
async def cancel_job(
    job_id: str,
    owner: CallerDep,
    svc: ServicesDep,
    purge: Annotated[
        bool, Query(description="delete a finished job's stored request and result now, not at its TTL")
    ] = False,
):
    jobs = svc.jobs
    job = await load_job(jobs, svc.keys, job_id, owner)
    if purge:
        if job["status"] not in store.FINAL:
            raise Problem(
                409, "job_running", f"the job is {job['status']}: cancel it first, then purge it", job_id=job_id
            )
        await jobs.purge(job_id)
        return Response(status_code=204)
    if job["status"] in store.FINAL:
        raise Problem(409, "job_finished", f"the job is already {job['status']} (purge=true deletes it)", job_id=job_id)
    await jobs.request_cancel(job_id)
    if job["status"] == store.JobStatus.QUEUED:
        await jobs.finish(job, store.JobStatus.CANCELLED, svc.settings.result_ttl_s)
        if job.get("entry"):
            await jobs.dequeue(job["model"], job["entry"])
    return JSONResponse(store.public_view(await jobs.read(job_id)), status_code=202)
