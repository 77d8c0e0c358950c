"""The HTTP API (FastAPI): ``create_app`` wires settings, Redis, the weightless planners, error
handling and metrics, and includes one router per route module (:mod:`heta_service.routes`).
OpenAPI at /openapi.json (docs at /docs): every response is typed, every error is one
``application/problem+json`` schema (:mod:`heta_service.problems`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid

import redis
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from prometheus_client import CollectorRegistry
from starlette.exceptions import HTTPException

from heta_core import Attributor, __version__

from . import logs, tracing
from .auth import Keys
from .connections import connect_store, is_out_of_memory, is_transient
from .deps import Services
from .monitoring import RedisCollector, api_metrics
from .problems import Problem, openapi_with_problems, problem_response
from .registry import live_workers_async, model_speeds
from .routes import attribute, events, guide, health, jobs, models, queue, ui
from .settings import Settings
from .store import JobStore, ensure_groups, use_cluster

log = logging.getLogger("heta.api")
# codes for errors Starlette raises itself (unknown route, wrong method, unparseable body)
HTTP_CODES = {400: "malformed_body", 404: "not_found", 405: "method_not_allowed"}
UNGATED = ("/healthz", "/readyz", "/metrics")  # answer while draining: probes and scrapes
REQUEST_ID = re.compile(rb"[\x21-\x7e]{1,128}")  # a caller's X-Request-ID: printable ASCII without spaces, at most 128


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        use_cluster(settings.redis_cluster)
        app.state.redis = connect_store(settings, asynchronous=True)
        sync_redis = connect_store(settings)
        app.state.metrics_registry.register(RedisCollector(sync_redis, settings.models))
        try:
            await asyncio.to_thread(ensure_groups, sync_redis, settings.models)
        except redis.RedisError as error:  # the workers create them too; the API serves 503s until Redis is back
            if not is_transient(error):
                raise
            log.warning("cannot create the job streams yet: %s", error)
        # weightless models: tokenization, validation and cost estimates without loading weights
        app.state.planners = {
            name: await asyncio.to_thread(Attributor.planner, name, None, settings.dtype) for name in settings.models
        }
        app.state.services = Services(
            settings, app.state.redis, app.state.planners, app.state.keys, JobStore(app.state.redis)
        )
        speeds = asyncio.create_task(_follow_speeds(app.state.redis, app.state.planners))
        yield
        speeds.cancel()
        app.state.draining = True
        await app.state.redis.aclose()
        sync_redis.close()

    app = FastAPI(
        title="HETA attribution service",
        version=__version__,
        description="Hessian-Enhanced Token Attribution for decoder-only LLMs. Errors are RFC 9457 problem+json "
        "(`application/problem+json`) with a stable `code`. Every response carries `X-Request-ID`: the request's own "
        "(printable ASCII without spaces, at most 128 characters) or a generated one, with `X-Request-ID-Replaced: "
        "true` when the one sent was invalid; a W3C `traceparent` is continued when tracing is on.",
        lifespan=lifespan,
        # FastAPI's own OpenTelemetry span per request (once service.tracing has set a tracer provider;
        # inert otherwise): traces only; metrics are Prometheus' and its logs would carry the
        # validation errors' input (prompts); probes and scrapes are not traced
        telemetry={"metrics": False, "logs": False, "exclude": lambda scope: scope.get("path") in UNGATED},
        docs_url=None,  # /docs and /redoc: routes.ui, with their assets served locally (offline)
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.keys = Keys(settings.api_keys)
    app.state.draining = False
    app.state.metrics_registry = CollectorRegistry()
    app.state.start_draining = lambda: setattr(app.state, "draining", True)
    for module in (attribute, jobs, events, queue, models, health, ui):
        app.include_router(module.router)
    guide.mount(app, settings.guide_dir)
    _handle_errors(app)
    _observe(app, settings)
    if settings.cors_origins:  # outermost: a preflight is answered before the metrics, the drain gate and the routes
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Idempotency-Key", "Accept"],
            expose_headers=["Retry-After", "Location"],
            max_age=600,
        )

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            app.openapi_schema = openapi_with_problems(schema)
        return app.openapi_schema

    app.openapi = openapi
    return app


SPEEDS_EVERY_S = 5.0


async def _follow_speeds(client, planners: dict[str, Attributor]) -> None:
    """The planners price work (``budget_s``) with the speed the live workers measured, re-read every
    few seconds; until a worker has published one they assume one from the model's size."""
    while True:
        try:
            for name, speed in model_speeds(await live_workers_async(client)).items():
                if name in planners:
                    planners[name].speed = speed
        except redis.RedisError as error:  # Redis away: keep the last speeds
            log.debug("worker speeds not read: %s", error)
        await asyncio.sleep(SPEEDS_EVERY_S)


def _handle_errors(app: FastAPI) -> None:
    def path(request: Request) -> str:
        return str(request.url.path)

    @app.exception_handler(Problem)
    async def on_problem(request: Request, problem: Problem):
        return problem_response(problem)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, error: RequestValidationError):
        refused = await _count_refused(request)
        if refused is not None:
            return problem_response(refused)
        errors = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in error.errors()]
        if any(e["type"] == "json_invalid" for e in errors):
            detail = f"the body is not valid JSON: {error.errors()[0].get('ctx', {}).get('error', 'decode error')}"
            return problem_response(Problem(400, "malformed_body", detail))
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in errors)
        code = (
            "invalid_idempotency_key"
            if all(e["loc"][:2] == ["header", "idempotency-key"] for e in errors)
            else "validation_error"
        )
        return problem_response(Problem(422, code, detail, errors=errors))

    @app.exception_handler(HTTPException)
    async def on_http(request: Request, error: HTTPException):
        detail = "the body is not valid UTF-8 JSON" if error.status_code == 400 else str(error.detail)
        code = HTTP_CODES.get(error.status_code, "http_error")
        headers = dict(error.headers or {})
        if error.status_code == 405:  # Starlette names only the first matching route's methods
            headers["Allow"] = ", ".join(allowed_methods(app, request.url.path))
        return problem_response(Problem(error.status_code, code, detail, headers=headers))

    @app.exception_handler(redis.RedisError)
    async def on_redis(request: Request, error: redis.RedisError):
        if not is_transient(error):
            return bug_response(error, path(request))
        full = is_out_of_memory(error)
        detail = "the job store is full; retry later" if full else "the job store is unavailable; retry later"
        log.warning("%s on %s: %s", "Redis full" if full else "Redis unavailable", path(request), error)
        return problem_response(Problem(503, "redis_unavailable", detail, headers={"Retry-After": "5"}))


def bug_response(error: Exception, path: str):
    """The 500 of an unhandled error, rendered by :class:`Observe` so that it carries the request's
    id (Starlette renders a handler for ``Exception`` outside every middleware)."""
    log.error("unhandled error on %s", path, exc_info=error)
    return problem_response(Problem(500, "internal_error", f"{type(error).__name__}: the server failed; this is a bug"))


async def _count_refused(request: Request) -> Problem | None:
    """A submission whose body the schema refused still counts against its caller's limit (the
    429 when past it); a Redis that cannot count does not hide the validation error."""
    who = getattr(request.state, "uncounted", None)
    if who is None:
        return None
    try:
        await who.count(request.app.state.redis)
    except Problem as problem:
        return problem
    except redis.RedisError:
        pass
    return None


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every method some route serves at ``path``."""
    methods: set[str] = set()
    for route in app.routes:
        match = getattr(route, "path_regex", None)
        if match is not None and match.match(path):
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _observe(app: FastAPI, settings: Settings) -> None:
    request_count, request_latency = api_metrics(app.state.metrics_registry)
    app.add_middleware(
        Observe, state=app.state, limit=settings.max_body_bytes, count=request_count, latency=request_latency
    )


class Observe:
    """Request ids, request metrics, the drain gate and the body limit, as a plain ASGI middleware:
    Starlette's ``BaseHTTPMiddleware`` runs every request through an extra task and memory streams,
    which cost about a millisecond per request of the queue overhead (docs/benchmarks.md, Load).

    The request id is the caller's ``X-Request-ID`` when valid, else a new one (an invalid one is
    replaced and the response says so with ``X-Request-ID-Replaced: true``); every response carries
    it, and every log line and problem body of the request names it."""

    def __init__(self, app, *, state, limit: int, count, latency):
        self.app, self.state, self.limit, self.count, self.latency = app, state, limit, count, latency

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        status = [500]
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id")
        request_id = given.decode() if given is not None and REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        stamped = [(b"x-request-id", request_id.encode())]
        if given is not None and given != stamped[0][1]:
            stamped.append((b"x-request-id-replaced", b"true"))

        started_response = [False]

        async def observed_send(message):
            if message["type"] == "http.response.start":
                status[0], started_response[0] = message["status"], True
                message["headers"] = [*message.get("headers", []), *stamped]
            await send(message)

        path = scope["path"]
        refused = None
        with logs.bound(request_id=request_id):
            tracing.annotate(request_id=request_id)  # on FastAPI's span of the request
            if self.state.draining and path not in UNGATED:
                refused = Problem(503, "draining", "the server is shutting down", headers={"Retry-After": "5"})
            else:
                refused, receive = await self._limit_body(scope, headers, receive)
            try:
                if refused is not None:
                    await problem_response(refused)(scope, receive, observed_send)
                else:
                    await self.app(scope, receive, observed_send)
            except Exception as error:
                if started_response[0]:
                    raise
                await bug_response(error, path)(scope, receive, observed_send)
            finally:
                template = getattr(scope.get("route"), "path", "unmatched")
                self.count.labels(template, scope["method"], str(status[0])).inc()
                self.latency.labels(template, scope["method"]).observe(time.perf_counter() - started)

    async def _limit_body(self, scope, headers: dict[bytes, bytes], receive):
        """(413 problem or None, the receive to pass on): a declared length is checked at once; a
        chunked upload is read here, measured, and replayed to the app."""
        declared = headers.get(b"content-length")
        too_large = Problem(413, "body_too_large", f"the request body exceeds {self.limit} bytes")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return too_large, receive
        if scope["method"] not in ("POST", "PUT", "PATCH") or declared is not None:
            return None, receive
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None, receive  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                return too_large, receive
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), [False]

        async def replay():
            if not replayed[0]:
                replayed[0] = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return None, replay


def run_server(app: FastAPI, host: str, port: int) -> None:
    """uvicorn, with the app told to drain (503, not ready) as soon as shutdown begins: requests
    still in flight complete, new ones are refused and load balancers stop routing here."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig, frame):
            app.state.start_draining()
            super().handle_exit(sig, frame)

    settings = app.state.settings
    logs.configure(settings.log_format)
    tracing.setup(settings.otel_exporter_otlp_endpoint, settings.otel_service_name, "api")
    # json: uvicorn's own lines go through the root logger's JSON handler instead of its text formatters
    log_config = None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG
    config = uvicorn.Config(
        app, host=host, port=port, log_level="info", access_log=settings.access_log, log_config=log_config
    )
    DrainingServer(config).run()
