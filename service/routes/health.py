"""Liveness, readiness and Prometheus metrics (no API key, except /metrics when HETA_METRICS_PUBLIC=false)."""

from __future__ import annotations

import asyncio
from typing import Annotated

import redis
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..connections import is_transient
from ..deps import ServicesDep, authenticated
from ..problems import problem_responses
from ..registry import live_workers_async, serving
from ..schemas import Health, Readiness
from ..store import READY_PROBE

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="Liveness", response_model=Health)
async def healthz():
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="Ready when Redis takes writes and every served model has a live worker",
    response_model=Readiness,
    responses={
        503: {"model": Readiness, "description": "not ready: Redis down or full, a model without workers, or draining"}
    },
)
async def readyz(request: Request, svc: ServicesDep):
    settings, client = svc.settings, svc.redis
    try:
        # a write, not a ping: a Redis at maxmemory answers pings but refuses every job
        await client.set(READY_PROBE, "1", px=10_000)
        workers = await live_workers_async(client)
    except redis.RedisError as error:
        if not is_transient(error):
            raise
        return JSONResponse({"ready": False, "redis": False}, status_code=503)
    missing = [m for m in settings.models if not serving(workers, m, draining=True)]
    ready = not missing and not request.app.state.draining
    body = {"ready": ready, "redis": True, "workers": len(workers), "models_without_workers": missing}
    return JSONResponse(body, status_code=200 if ready else 503)


async def _metrics_guard(
    request: Request,
    svc: ServicesDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
):
    """/metrics is public unless HETA_METRICS_PUBLIC=false; then it needs a key like every route."""
    if not svc.settings.metrics_public:
        who = await authenticated(request, authorization, x_api_key)
        await who.count(svc.redis)


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format)",
    dependencies=[Depends(_metrics_guard)],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **problem_responses(401, 403, 429, 503),
    },
)
async def metrics(request: Request):
    payload = await asyncio.to_thread(generate_latest, request.app.state.metrics_registry)
    return Response(payload, media_type=CONTENT_TYPE_LATEST)
