"""The HTTP API (FastAPI). OpenAPI at /docs.

POST /attribute and POST /jobs validate a request against the model (tokenization, limits, the
engine's cost estimate) *before* queueing it, so bad input is refused at once with a 422 and never
becomes a failed job. Errors are RFC 9457 problem+json with a stable ``code``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import redis
import redis.asyncio
from fastapi import Depends, FastAPI, Header, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from heta_core import METHODS, Attributor, HetaError

from . import jobs
from .connections import connect, connect_async
from .metrics import RedisCollector, api_metrics
from .problems import Problem, problem_response
from .registry import live_workers_async
from .schemas import AttributeRequest
from .settings import Settings

FAILURE_STATUS = {"deadline_exceeded": 504, "out_of_memory": 503, "dead_lettered": 500, "internal_error": 500}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class Keys:
    """API keys, held only as SHA-256 digests and compared in constant time."""

    def __init__(self, configured: list[str]):
        self.digests = [k.removeprefix("sha256:") if k.startswith("sha256:") else hash_key(k) for k in configured]

    @property
    def enabled(self) -> bool:
        return bool(self.digests)

    def owner(self, presented: str | None) -> str:
        """The caller's identity (the key's digest); raises 401/403."""
        if not presented:
            raise Problem(401, "missing_api_key", "this route needs an API key (Authorization: Bearer <key> or X-API-Key)",
                          headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        digest = hash_key(presented)
        matched = False
        for known in self.digests:
            matched |= hmac.compare_digest(digest, known)  # no early exit: constant time over the list
        if not matched:
            raise Problem(403, "invalid_api_key", "the API key is not valid")
        return digest


def create_app(settings: Settings) -> FastAPI:
    keys = Keys(settings.api_keys)
    metrics_registry = CollectorRegistry()
    request_count, request_latency = api_metrics(metrics_registry)
    state: dict[str, Any] = {"draining": False}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        state["redis"] = connect_async(settings.redis_url)
        state["sync_redis"] = connect(settings.redis_url)
        metrics_registry.register(RedisCollector(state["sync_redis"], settings.models))
        # weightless models: tokenization, validation and cost estimates without loading weights
        planners = {}
        for name in settings.models:
            planners[name] = await asyncio.to_thread(Attributor.planner, name, None, settings.dtype)
        state["planners"] = planners
        yield
        state["draining"] = True
        await state["redis"].aclose()
        state["sync_redis"].close()

    app = FastAPI(
        title="HETA attribution service",
        version="0.1.0",
        description="Hessian-Enhanced Token Attribution for decoder-only LLMs. Errors are RFC 9457 problem+json.",
        lifespan=lifespan,
    )
    app.state.start_draining = lambda: state.__setitem__("draining", True)

    # ------------------------------------------------------------------ plumbing

    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem):
        return problem_response(problem, str(request.url.path))

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError):
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        return problem_response(Problem(422, "validation_error", detail, errors=errors), str(request.url.path))

    @app.exception_handler(redis.ConnectionError)
    @app.exception_handler(redis.TimeoutError)
    async def on_redis_down(request: Request, error: Exception):
        return problem_response(
            Problem(503, "redis_unavailable", "the job store is unavailable; retry later", headers={"Retry-After": "5"}),
            str(request.url.path),
        )

    @app.middleware("http")
    async def observe(request: Request, call_next):
        started = time.perf_counter()
        if state["draining"] and request.url.path not in ("/healthz", "/readyz", "/metrics"):
            response = problem_response(Problem(503, "draining", "the server is shutting down", headers={"Retry-After": "5"}))
        else:
            response = await _limit_body(request, call_next, settings.max_body_bytes)
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        request_count.labels(path, request.method, str(response.status_code)).inc()
        request_latency.labels(path, request.method).observe(time.perf_counter() - started)
        return response

    async def caller(
        request: Request,
        authorization: str | None = Header(None),
        x_api_key: str | None = Header(None),
    ) -> str:
        """Authenticates and rate-limits; returns the caller's identity."""
        if keys.enabled:
            token = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)
            owner = keys.owner(token)
        else:
            owner = "anonymous:" + hash_key(request.client.host if request.client else "unknown")[:16]
        window = int(time.time() // 60)
        rate_key = f"heta:rate:{owner}:{window}"
        pipe = state["redis"].pipeline(transaction=False)
        pipe.incr(rate_key)
        pipe.expire(rate_key, 120)
        count, _ = await pipe.execute()
        if count > settings.rate_limit_per_minute:
            retry = str(int(60 - time.time() % 60) + 1)
            raise Problem(429, "rate_limited", f"more than {settings.rate_limit_per_minute} requests this minute",
                          headers={"Retry-After": retry})  # fmt: skip
        return owner

    metrics_guard = [] if settings.metrics_public else [Depends(caller)]

    # ------------------------------------------------------------------ admission

    def validate(body: AttributeRequest) -> tuple[str, dict]:
        model = body.model or (settings.models[0] if settings.models else None)
        if model not in state["planners"]:
            raise Problem(422, "unknown_model", f"model {model!r} is not served; served: {', '.join(settings.models)}")
        if body.config.method is None:  # the stored job names its method, whatever the default later becomes
            body.config.method = settings.default_method
        try:
            kwargs, config = body.call()
        except HetaError as error:
            raise Problem(422, error.code, str(error), field=getattr(error, "field", None)) from None
        if config.num_hvp_samples > settings.max_samples:
            raise Problem(422, "invalid_config", f"samples must be <= {settings.max_samples}", field="samples")
        if body.generate is not None and body.generate > settings.max_generate:
            raise Problem(422, "invalid_target", f"generate must be <= {settings.max_generate}")
        planner = state["planners"][model]
        try:
            estimate = planner.estimate(**kwargs, config=config)
        except HetaError as error:
            raise Problem(422, error.code, str(error), field=getattr(error, "field", None)) from None
        limit = min(settings.max_prompt_tokens, getattr(planner.model.config, "max_position_embeddings", None) or 10**9)
        tokens = estimate.prompt_tokens + estimate.target_tokens
        if tokens > limit:
            raise Problem(422, "too_many_tokens", f"the request has {tokens} tokens; {model} accepts at most {limit}")
        if estimate.hvps > settings.max_hvps or estimate.forward_tokens > settings.max_forward_tokens:
            raise Problem(
                422, "cost_over_ceiling",
                f"the request needs {estimate.hvps} HVPs and {estimate.forward_tokens} token positions; the ceiling is "
                f"{settings.max_hvps} HVPs and {settings.max_forward_tokens} positions (try low_rank or window)",
                estimate=estimate.to_dict(),
            )  # fmt: skip
        return model, estimate.to_dict()

    async def submit(body: AttributeRequest, owner: str, idempotency_key: str | None) -> tuple[str, bool]:
        """Queue the job (or find the idempotent twin); returns (job id, created)."""
        model, _ = await asyncio.to_thread(validate, body)
        request_json = body.model_dump_json(exclude={"wait"})
        digest = hashlib.sha256(request_json.encode()).hexdigest()
        idem = ""
        if idempotency_key is not None:
            if not 1 <= len(idempotency_key) <= 255:
                raise Problem(422, "invalid_idempotency_key", "Idempotency-Key must be 1 to 255 characters")
            idem = f"heta:idem:{owner}:{hash_key(idempotency_key)}"
        job_id = uuid.uuid4().hex
        deadline = time.time() + min(body.deadline_s or settings.job_deadline_s, settings.job_deadline_s)
        fields = jobs.job_fields(job_id, model, request_json, owner, deadline)
        keys_ = [jobs.stream_key(model), jobs.job_key(job_id), jobs.inflight_key(owner), idem]
        args = [settings.max_queue_depth, settings.max_inflight_per_key, job_id, f"{job_id}:{digest}", settings.result_ttl_s,
                *jobs.flatten(fields)]  # fmt: skip
        outcome, value = await state["redis"].eval(jobs.ENQUEUE, len(keys_), *keys_, *args)
        if outcome == "idempotent":
            existing, existing_digest = value.split(":")
            if existing_digest != digest:
                raise Problem(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")
            return existing, False
        if outcome == "queue_full":
            raise Problem(429, "queue_full", f"the queue for {model} is full ({value} jobs)", headers={"Retry-After": "10"})
        if outcome == "inflight_limit":
            raise Problem(429, "too_many_inflight", f"you have {value} unfinished jobs; wait for some to finish",
                          headers={"Retry-After": "5"})  # fmt: skip
        return job_id, True

    async def load_job(job_id: str, owner: str) -> dict:
        job = await state["redis"].hgetall(jobs.job_key(job_id))
        if not job or (keys.enabled and job.get("owner") != owner):
            raise Problem(404, "job_not_found", f"no job {job_id!r} (unknown, expired, or not yours)")
        return job

    async def wait_for(job_id: str, seconds: float) -> dict:
        deadline = time.monotonic() + seconds
        client = state["redis"]
        while True:
            job = await client.hgetall(jobs.job_key(job_id))
            left = deadline - time.monotonic()
            if not job or job["status"] in jobs.FINAL or left <= 0:
                return job
            await client.blpop([jobs.done_key(job_id)], timeout=min(0.5, max(0.01, left)))

    def finished_response(job: dict) -> JSONResponse:
        if job["status"] == "done":
            return JSONResponse(json.loads(job["result"]))
        error = json.loads(job.get("error") or "{}")
        code = error.get("code", job["status"])
        if job["status"] == "cancelled":
            raise Problem(409, "cancelled", "the job was cancelled", job_id=job["id"])
        raise Problem(FAILURE_STATUS.get(code, 422), code, error.get("detail", "the job failed"), job_id=job["id"])

    # ------------------------------------------------------------------ routes

    @app.post("/attribute", summary="Attribute; 200 with the result if done within `wait`, else 202")
    async def attribute(body: AttributeRequest, owner: str = Depends(caller), idempotency_key: str | None = Header(None)):
        job_id, _ = await submit(body, owner, idempotency_key)
        job = await wait_for(job_id, min(body.wait, settings.max_wait_s))
        if job and job["status"] in jobs.FINAL:
            return finished_response(job)
        return JSONResponse(
            {"job_id": job_id, "status": job.get("status", "queued") if job else "queued"},
            status_code=202, headers={"Location": f"/jobs/{job_id}"},
        )  # fmt: skip

    @app.post("/jobs", status_code=202, summary="Queue an attribution; always 202 with job_id")
    async def create_job(body: AttributeRequest, owner: str = Depends(caller), idempotency_key: str | None = Header(None)):
        job_id, _ = await submit(body, owner, idempotency_key)
        return JSONResponse({"job_id": job_id, "status": "queued"}, status_code=202, headers={"Location": f"/jobs/{job_id}"})

    @app.get("/jobs/{job_id}", summary="Status, progress 0-1, result when done, error when failed")
    async def get_job(job_id: str, owner: str = Depends(caller)):
        return jobs.public_view(await load_job(job_id, owner))

    @app.delete("/jobs/{job_id}", status_code=202, summary="Cancel: a queued job never runs; a running one stops at its next chunk")
    async def cancel_job(job_id: str, owner: str = Depends(caller)):
        job = await load_job(job_id, owner)
        client = state["redis"]
        if job["status"] in jobs.FINAL:
            raise Problem(409, "job_finished", f"the job is already {job['status']}", job_id=job_id)
        await client.hset(jobs.job_key(job_id), "cancel", "1")
        if job["status"] == "queued":
            keys_ = [jobs.job_key(job_id), jobs.inflight_key(job["owner"]), jobs.done_key(job_id)]
            await client.eval(jobs.FINALIZE, len(keys_), *keys_, *jobs.finalize_args("cancelled", settings.result_ttl_s))
            if job.get("entry"):
                await client.xdel(jobs.stream_key(job["model"]), job["entry"])
        return jobs.public_view(await client.hgetall(jobs.job_key(job_id)))

    @app.get("/models", summary="Served models with dtype, device and limits; the attribution methods")
    async def models(owner: str = Depends(caller)):
        workers = await live_workers_async(state["redis"])
        served = []
        for name in settings.models:
            planner = state["planners"][name]
            limit = min(settings.max_prompt_tokens, getattr(planner.model.config, "max_position_embeddings", None) or 10**9)
            loaded = [w["models"][name] for w in workers if name in w.get("models", {})]
            served.append({
                "name": name,
                "model_type": planner.model.config.model_type,
                "dtype": loaded[0]["dtype"] if loaded else str(planner.model.dtype).removeprefix("torch."),
                "devices": sorted({m["device"] for m in loaded}),
                "workers": len(loaded),
                "max_tokens": limit,
            })  # fmt: skip
        return {
            "models": served,
            "default": settings.models[0] if settings.models else None,
            "methods": list(METHODS),
            "default_method": settings.default_method,
        }

    @app.get("/healthz", summary="Liveness")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz", summary="Ready when Redis answers and every served model has a live worker")
    async def readyz():
        try:
            await state["redis"].ping()
            workers = await live_workers_async(state["redis"])
        except (redis.ConnectionError, redis.TimeoutError):
            return JSONResponse({"ready": False, "redis": False}, status_code=503)
        missing = [m for m in settings.models if not any(m in w.get("models", {}) for w in workers)]
        ready = not missing and not state["draining"]
        body = {"ready": ready, "redis": True, "workers": len(workers), "models_without_workers": missing}
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics", summary="Prometheus metrics", dependencies=metrics_guard)
    async def metrics():
        payload = await asyncio.to_thread(generate_latest, metrics_registry)
        return Response(payload, media_type=CONTENT_TYPE_LATEST)

    return app


async def _limit_body(request: Request, call_next, limit: int):
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return problem_response(Problem(413, "body_too_large", f"the request body exceeds {limit} bytes"), str(request.url.path))
    if request.method in ("POST", "PUT", "PATCH") and declared is None:
        body = await request.body()  # chunked upload: measure what arrived
        if len(body) > limit:
            return problem_response(Problem(413, "body_too_large", f"the request body exceeds {limit} bytes"), str(request.url.path))
    return await call_next(request)


def run_server(app: FastAPI, host: str, port: int) -> None:
    """uvicorn, with the app told to drain (503, not ready) as soon as shutdown begins: requests
    still in flight complete, new ones are refused and load balancers stop routing here."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.start_draining()
            super().handle_exit(sig, frame)

    DrainingServer(uvicorn.Config(app, host=host, port=port, log_level="info")).run()
