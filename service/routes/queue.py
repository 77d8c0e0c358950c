"""GET /queue: per served model the queue depth, the oldest job's age and the workers busy/idle, and
the caller's recent jobs (the explorer's queue panel)."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter
from pydantic import BaseModel, Field

from .. import store
from ..deps import CallerDep, ServicesDep
from ..problems import problem_responses
from ..registry import live_workers_async, serving
from ..schemas import JobStatus

router = APIRouter(tags=["jobs"])

RECENT = 10  # jobs listed
SCAN_LIMIT = 5000  # job records examined per call: jobs carry no per-owner index, so the list is a bounded scan


class ModelQueue(BaseModel):
    model: str
    queue_depth: int = Field(ge=0, description="jobs waiting, not yet picked up by a worker")
    oldest_job_age_s: float = Field(ge=0, description="age of the oldest unfinished job (0 when none)")
    workers_busy: int = Field(ge=0, description="live workers serving this model that are running a job")
    workers_idle: int = Field(ge=0, description="live workers serving this model that are waiting for one")


class RecentJob(BaseModel):
    job_id: str
    status: JobStatus
    model: str
    progress: float = Field(ge=0, le=1)
    created: float = Field(description="Unix seconds")
    finished: float | None = Field(description="Unix seconds; null until the job ends")
    method: str | None = Field(description="the request's config.method")
    summary: str = Field(
        description="the start of the request's text (or its first message; a batch: its size), for people"
    )


class QueueView(BaseModel):
    models: list[ModelQueue]
    jobs: list[RecentJob] = Field(
        description=f"the caller's {RECENT} most recent jobs still kept (HETA_RESULT_TTL_S), newest first"
    )


async def _model_queue(client, model: str, workers: list[dict], now: float) -> ModelQueue:
    depth, age = store.queue_state(
        await store.read_queue(client.pipeline(transaction=False), model).execute(raise_on_error=False), now
    )
    live = serving(workers, model)
    busy = sum(1 for w in live if w.get("busy"))
    return ModelQueue(
        model=model, queue_depth=depth, oldest_job_age_s=age, workers_busy=busy, workers_idle=len(live) - busy
    )


def _summary(request_json: str | None) -> tuple[str | None, str]:
    try:
        request = json.loads(request_json or "{}")
    except ValueError:
        return None, ""
    if request.get("items"):  # a batch (its items carry their full configs)
        methods = {(item.get("config") or {}).get("method") for item in request["items"]}
        return (methods.pop() if len(methods) == 1 else "mixed"), f"batch of {len(request['items'])} prompts"
    if request.get("text") is not None:
        text = request["text"]
    elif request.get("messages"):
        text = request["messages"][0].get("content", "")
    else:
        text = f"{len(request.get('input_ids') or [])} token ids"
    return (request.get("config") or {}).get("method"), text if len(text) <= 80 else text[:79] + "…"


async def _recent_jobs(client, owner: str) -> list[RecentJob]:
    fields = ("id", "owner", "status", "model", "progress", "created", "finished", "request", "cancel")
    found, examined = [], 0
    async for key in client.scan_iter(match=store.job_key("*"), count=500):
        examined += 1
        if examined > SCAN_LIMIT:
            break
        found.append(key)
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.hmget(key, fields)
    mine = []
    for values in await pipe.execute() if found else []:
        job = dict(zip(fields, values, strict=True))
        if job["owner"] != owner or not job["id"] or not job["created"]:
            continue
        method, summary = _summary(job["request"])
        status = "cancelling" if job["status"] == "running" and job["cancel"] else job["status"]
        mine.append(
            RecentJob(
                job_id=job["id"],
                status=status,
                model=job["model"],
                progress=float(job["progress"] or 0),
                created=float(job["created"]),
                finished=float(job["finished"]) if job["finished"] else None,
                method=method,
                summary=summary,
            )
        )
    return sorted(mine, key=lambda j: -j.created)[:RECENT]


@router.get(
    "/queue",
    summary="Queue depth, oldest job age and workers per model; the caller's recent jobs",
    response_model=QueueView,
    responses=problem_responses(401, 403, 429, 503),
)
async def queue(owner: CallerDep, svc: ServicesDep) -> QueueView:
    client = svc.redis
    workers = await live_workers_async(client)
    now = time.time()
    models = [await _model_queue(client, name, workers, now) for name in svc.settings.models]
    return QueueView(models=models, jobs=await _recent_jobs(client, owner))
