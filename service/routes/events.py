"""GET /jobs/{id}/events (server-sent events: status, progress, then the result or the problem) and
GET /jobs/{id}/report (the finished result as a self-contained HTML report)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from heta_core import render_report

from .. import store
from ..deps import CallerDep, ServicesDep
from ..problems import Problem, problem_response, problem_responses
from .attribute import finished_response
from .jobs import PROBLEMS, load_job

router = APIRouter(prefix="/jobs", tags=["jobs"])

POLL_S = 0.2  # how often the stream reads the job: progress events are at most this frequent
# the statuses a finished job's problem can have (routes.attribute.FAILURE_STATUS, 409 cancelled, 422 a failed run)
FINAL_PROBLEMS = (409, 422, 500, 503, 504)

EVENTS_DESCRIPTION = """\
`text/event-stream`, one event per change, ending at the job's final state:

- `status`: the job as `GET /jobs/{id}` shows it (a `JobView` without `result`, `error` and `partial`), first at once,
  then whenever the status changes;
- `progress`: `{"progress": 0-1}` whenever the fraction of planned chunks done changes between status events;
- `partial`: a HETA job's partial result (the `JobResult` document with `partial: true` and `stages_done`) whenever a
  stage finishes — the flow, then flow and KL impact — each once, in order, while the job is not done;
- last, `result` (the `JobResult` document, byte for byte as stored) when the job is done, or `problem` (a
  `ProblemDetails`: `cancelled`, `deadline_exceeded`, `out_of_memory`, ...) when it failed or was cancelled;
  `problem` with `draining` (503) when the server shuts down first: reconnect elsewhere.

Comment lines (`: keep-alive`) every `keepalive` seconds keep proxies from closing a quiet stream. Same
authentication as `GET /jobs/{id}`; another key's job is a 404. A browser's `EventSource` cannot send headers:
read the stream with `fetch` when API keys are configured."""


# one event of the stream, as OpenAPI 3.1 tools (and 3.2's itemSchema) read a text/event-stream schema
EVENT_SCHEMA = {
    "type": "object",
    "required": ["event", "data"],
    "properties": {
        "event": {"type": "string", "enum": ["status", "progress", "partial", "result", "problem"]},
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "description": "one line of JSON: `status` a JobView without result, error and partial, `progress` "
            '{"progress": 0-1}, '
            "`partial` and `result` a JobResult document (`partial` true / false), `problem` a ProblemDetails",
        },
    },
}


def sse(event: str, data: str) -> str:
    """One event; ``data`` is a single line of JSON (JSON never needs a raw newline)."""
    return f"event: {event}\ndata: {data}\n\n"


def _final_event(job: dict) -> str:
    try:
        response = finished_response(job)
    except Problem as problem:
        return sse("problem", problem_response(problem).body.decode())
    return sse("result", response.body.decode())


async def _stream(
    request: Request, jobs: store.JobStore, job_id: str, job: dict, keepalive: float
) -> AsyncIterator[str]:
    status = progress = None
    shown: set[str] = set()  # the partial results already sent, by their stages
    quiet_since = time.monotonic()
    while True:
        if not job:  # expired (result TTL) or deleted while we watched
            yield sse(
                "problem", problem_response(Problem(404, "job_not_found", f"job {job_id!r} is gone")).body.decode()
            )
            return
        view = store.public_view({k: v for k, v in job.items() if k in store.VIEW_FIELDS})
        sent = False
        if view["status"] != status:
            status, progress = view["status"], view["progress"]
            yield sse("status", json.dumps(view))
            sent = True
        elif view["progress"] != progress:
            progress = view["progress"]
            yield sse("progress", json.dumps({"progress": progress}))
            sent = True
        for stages, body in store.partials(job) if job["status"] != "done" else ():
            if stages not in shown:
                shown.add(stages)
                yield sse("partial", body)  # stored as one line of JSON, as the result is
                quiet_since = time.monotonic()
        if job["status"] in store.FINAL:
            yield _final_event(job)
            return
        if request.app.state.draining:  # an open stream would hold the graceful shutdown until the job ends
            yield sse(
                "problem",
                problem_response(Problem(503, "draining", "the server is shutting down; reconnect")).body.decode(),
            )
            return
        now = time.monotonic()
        if sent:
            quiet_since = now
        elif now - quiet_since >= keepalive:
            quiet_since = now
            yield ": keep-alive\n\n"
        await asyncio.sleep(POLL_S)
        job = await jobs.read(job_id)


@router.get(
    "/{job_id}/events",
    summary="Server-sent events: status and progress changes, then the result or the problem",
    description=EVENTS_DESCRIPTION,
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "the event stream (the schema is one event's)",
            "content": {"text/event-stream": {"schema": EVENT_SCHEMA}},
        },
        **problem_responses(*PROBLEMS, 422),
    },
)
async def job_events(
    job_id: str,
    request: Request,
    owner: CallerDep,
    svc: ServicesDep,
    keepalive: Annotated[
        float, Query(ge=0.5, le=300, description="seconds of silence before a keep-alive comment")
    ] = 15.0,
):
    job = await load_job(svc.jobs, svc.keys, job_id, owner)
    return StreamingResponse(
        _stream(request, svc.jobs, job_id, job, keepalive),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},  # no proxy buffering of the stream
    )


@router.get(
    "/{job_id}/report",
    summary="The finished result as a self-contained HTML report (no external assets)",
    response_class=HTMLResponse,
    responses={
        200: {
            "description": "the report (`heta attribute --format html` writes the same)",
            "content": {"text/html": {"schema": {"type": "string"}}},
        },
        **problem_responses(*PROBLEMS, *FINAL_PROBLEMS),
    },
)
async def job_report(
    job_id: str,
    owner: CallerDep,
    svc: ServicesDep,
    item: Annotated[
        int | None, Query(ge=0, description="a batch job (POST /attribute/batch): the item to report")
    ] = None,
):
    job = await load_job(svc.jobs, svc.keys, job_id, owner)
    if job["status"] not in store.FINAL:
        raise Problem(409, "job_not_done", f"the job is {job['status']}; a report needs its result", job_id=job_id)
    document = json.loads(finished_response(job).body)  # raises the job's problem unless it is done
    if "items" in document:  # a batch: one report per item
        if item is None or item >= len(document["items"]):
            raise Problem(
                422,
                "invalid_item",
                f"the job is a batch of {len(document['items'])}: name an item, ?item=0..{len(document['items']) - 1}",
                job_id=job_id,
            )
        entry = document["items"][item]
        if entry.get("error"):
            raise Problem(422, entry["error"]["code"], f"item {item} failed: {entry['error']['detail']}", job_id=job_id)
        document = entry["result"]
    elif item is not None:
        raise Problem(422, "invalid_item", "the job is not a batch: leave out ?item", job_id=job_id)
    html = await asyncio.to_thread(render_report, document)
    return HTMLResponse(html, headers={"Content-Disposition": f'attachment; filename="heta-{job_id}.html"'})
