"""Admission: a request is checked completely — model, limits, every engine check through the
weightless planner's ``estimate``, the cost ceilings — before anything is written to Redis, so bad
input is a 422 at once and never a failed job. Then one Lua script queues it (or finds its
idempotent twin, or refuses with 429 when the queue or the caller's in-flight jobs are full).
"""

from __future__ import annotations

import asyncio
import hashlib
import time

from heta_core import Attributor, Estimate, HetaError

from . import cache, logs, store, tracing
from .auth import hash_key
from .deps import Services
from .problems import Problem
from .ratelimit import Caller
from .schemas import AttributeRequest, AttributionConfig, BatchRequest, PromptRequest
from .settings import Settings


def max_tokens(settings: Settings, planner: Attributor) -> int:
    """Prompt + target tokens a request may have: the setting, capped by the model's positions."""
    return min(settings.max_prompt_tokens, planner.max_positions or 10**9)


def served_model(body: AttributeRequest | BatchRequest, settings: Settings, planners: dict[str, Attributor]) -> str:
    model = body.model or (settings.models[0] if settings.models else None)
    if model not in planners:
        raise Problem(422, "unknown_model", f"model {model!r} is not served; served: {', '.join(settings.models)}")
    return model


def check_prompt(prompt: PromptRequest, model: str, settings: Settings, planner: Attributor) -> Estimate:
    """The estimate of one admissible prompt (its config's method filled in); raises a 422 Problem."""
    if prompt.config.method is None:  # the stored job names its method, whatever the default later becomes
        prompt.config.method = settings.default_method
    try:
        kwargs, config = prompt.engine_call()
    except HetaError as error:
        raise Problem(422, error.code, str(error), field=error.field, **error.details) from None
    if config.num_hvp_samples > settings.max_samples:
        raise Problem(422, "invalid_config", f"samples must be <= {settings.max_samples}", field="samples")
    if prompt.generate is not None and prompt.generate > settings.max_generate:
        raise Problem(422, "invalid_target", f"generate must be <= {settings.max_generate}")
    try:
        with tracing.span("estimate", model=model, method=config.method) as span:
            estimate = planner.estimate(**kwargs, config=config)
            if span is not None:
                tokens = estimate.prompt_tokens + estimate.target_tokens
                span.set_attributes({"heta.tokens": tokens, "heta.hvps": estimate.hvps})
    except HetaError as error:
        raise Problem(422, error.code, str(error), field=error.field, **error.details) from None
    limit = max_tokens(settings, planner)
    tokens = estimate.prompt_tokens + estimate.target_tokens
    if tokens > limit:
        raise Problem(422, "too_many_tokens", f"the request has {tokens} tokens; {model} accepts at most {limit}")
    return within_ceiling(estimate, settings)


def within_ceiling(estimate: Estimate, settings: Settings) -> Estimate:
    if estimate.hvps > settings.max_hvps or estimate.forward_tokens > settings.max_forward_tokens:
        raise Problem(
            422,
            "cost_over_ceiling",
            f"the request needs {estimate.hvps} HVPs and {estimate.forward_tokens} token positions; the ceiling is "
            f"{settings.max_hvps} HVPs and {settings.max_forward_tokens} positions (try low_rank or window)",
            estimate=estimate.to_dict(),
        )
    return estimate


def validate(body: AttributeRequest, settings: Settings, planners: dict[str, Attributor]) -> tuple[str, Estimate]:
    """(model, estimate) of an admissible request; raises a 422 Problem otherwise."""
    model = served_model(body, settings, planners)
    return model, check_prompt(body, model, settings, planners[model])


def validate_batch(body: BatchRequest, settings: Settings, planners: dict[str, Attributor]) -> tuple[str, BatchRequest]:
    """(model, the batch as it runs: each item with its full config) of an admissible batch. A batch
    is admitted whole: any invalid item refuses it (422 ``invalid_batch``, every bad item listed),
    and the items together must fit one request's cost ceiling."""
    model = served_model(body, settings, planners)
    if len(body.items) > settings.max_batch_items:
        raise Problem(
            422, "too_many_items", f"the batch has {len(body.items)} items; at most {settings.max_batch_items}"
        )
    prompts, problems, estimates = body.prompts(), [], []
    for index, prompt in enumerate(prompts):
        try:
            estimates.append(check_prompt(prompt, model, settings, planners[model]))
        except Problem as problem:
            problems.append(
                {"index": index, "code": problem.code, "detail": problem.detail, "field": problem.extra.get("field")}
            )
    if problems:
        raise Problem(
            422,
            "invalid_batch",
            f"{len(problems)} of {len(prompts)} items cannot be run; nothing was queued",
            items=problems,
        )
    total = Estimate(
        prompt_tokens=sum(e.prompt_tokens for e in estimates),
        target_tokens=sum(e.target_tokens for e in estimates),
        hvps=sum(e.hvps for e in estimates),
        forward_tokens=sum(e.forward_tokens for e in estimates),
        peak_bytes=max(e.peak_bytes for e in estimates),  # the items run one after another
    )
    within_ceiling(total, settings)
    return model, body.model_copy(update={"items": prompts, "config": AttributionConfig()})


def _small(body: AttributeRequest) -> bool:
    """A prompt short enough to check on the event loop (under ~4,000 characters or ids)."""
    size = len(body.text or "") + len(body.input_ids or []) + sum(len(m.content) for m in body.messages or [])
    return size + len(body.target_text or "") < 4000 and (body.generate or 0) <= 64


async def admissible(
    body: AttributeRequest | BatchRequest, settings: Settings, planners
) -> tuple[str, AttributeRequest | BatchRequest]:
    """(model, the request as it is queued) of an admissible request; raises a 422 Problem otherwise."""
    if isinstance(body, BatchRequest):
        return await asyncio.to_thread(validate_batch, body, settings, planners)
    if _small(body):  # ~0.3 ms of tokenizing and planning: cheaper than a thread hop
        return validate(body, settings, planners)[0], body
    # a long prompt's tokenization would stall every other request on the event loop
    return (await asyncio.to_thread(validate, body, settings, planners))[0], body


async def submit(
    svc: Services, body: AttributeRequest | BatchRequest, caller: Caller, idempotency_key: str | None
) -> tuple[str, bool]:
    """Queue the job (a batch is one job; or find the idempotent twin); returns (job id, created).

    Every request counts against the caller's per-minute limit, whatever its outcome: on one Redis
    node the enqueue script counts it (no round trip of its own); a refused or cached request, and
    every request on a Redis Cluster (whose script cannot reach the counter's hash slot), is counted apart."""
    client, settings, planners = svc.redis, svc.settings, svc.planners
    one_node = not settings.redis_cluster
    if not one_node:
        await caller.count(client)
    try:
        with tracing.span("admission"):
            model, body = await admissible(body, settings, planners)
    except Problem:
        if one_node:
            await caller.count(client)  # past the limit the answer is 429, as it would be for a good request
        raise
    owner = caller.owner
    request_json = body.model_dump_json(exclude={"wait"})
    digest = hashlib.sha256(request_json.encode()).hexdigest()
    job_id = store.new_job_id(model)
    logs.annotate(job_id=job_id, model=model)
    tracing.annotate(job_id=job_id, model=model)
    deadline = time.time() + min(body.deadline_s or settings.job_deadline_s, settings.job_deadline_s)
    idempotency = store.idempotency_key(owner, hash_key(idempotency_key), model) if idempotency_key is not None else ""
    entry = ""
    if settings.cache_ttl_s and settings.cache_max_bytes and isinstance(body, AttributeRequest):
        entry = cache.key(model, await asyncio.to_thread(lambda: planners[model].revision), *body.engine_call())
        stored = await cache.lookup(client, entry)
        if stored is not None and not (idempotency and await client.exists(idempotency)):
            if one_node:
                await caller.count(client)
            await _answer_from_cache(svc, stored, model, job_id, request_json, owner, deadline, idempotency, digest)
            return job_id, True
    with tracing.span("enqueue", job_id=job_id, model=model):
        outcome, value = await svc.jobs.create(
            model,
            job_id,
            request_json,
            owner,
            deadline,
            idempotency=idempotency,
            idempotency_value=f"{job_id}:{digest}",
            max_depth=settings.max_queue_depth,
            max_inflight=settings.max_inflight_per_key,
            ttl=settings.result_ttl_s,
            cache=entry,
            rate=(caller.key, caller.limit) if one_node else None,
            # the worker's spans continue the enqueue span's trace
            request_id=logs.current("request_id") or "",
            traceparent=tracing.traceparent(),
        )
        tracing.annotate(outcome=outcome)
    if outcome == "rate_limited":
        raise caller.refused()
    if outcome == "idempotent":
        existing, existing_digest = value.split(":")
        if existing_digest != digest:
            raise Problem(422, "idempotency_key_reused", "this Idempotency-Key was used with a different request body")
        await replicated(client, settings, existing)
        return existing, False
    if outcome == "queue_full":
        raise Problem(429, "queue_full", f"the queue for {model} is full ({value} jobs)", headers={"Retry-After": "10"})
    if outcome == "inflight_limit":
        raise Problem(
            429,
            "too_many_inflight",
            f"you have {value} unfinished jobs; wait for some to finish",
            headers={"Retry-After": "5"},
        )
    await replicated(client, settings, job_id)
    return job_id, True


async def _answer_from_cache(
    svc: Services,
    stored: str,
    model: str,
    job_id: str,
    request_json: str,
    owner: str,
    deadline: float,
    idempotency: str,
    digest: str,
) -> None:
    """A finished job of this caller holding the cached result: never queued, never computed."""
    fields = store.job_fields(job_id, model, request_json, owner, deadline, request_id=logs.current("request_id") or "")
    now = repr(time.time())
    fields.update(
        status=store.JobStatus.DONE,
        progress="1",
        started=now,
        finished=now,
        completions="1",
        result=cache.served(stored, job_id, float(fields["created"])),
    )
    await svc.jobs.create_done(job_id, fields, svc.settings.result_ttl_s, idempotency, f"{job_id}:{digest}")
    await replicated(svc.redis, svc.settings, job_id)


_replicas: dict[int, tuple[float, int]] = {}  # client → (when read, connected replicas)


async def _connected_replicas(client) -> int:
    """The master's replicas now (read at most every 5 s)."""
    when, count = _replicas.get(id(client), (0.0, 0))
    if time.monotonic() - when > 5:
        info = await client.info("replication")
        count = int(info.get("connected_slaves", 0))
        _replicas[id(client)] = (time.monotonic(), count)
    return count


async def replicated(client, settings: Settings, job_id: str) -> None:
    """Acknowledge a job only once it is on a replica when there is one: replication is
    asynchronous, and a failover would otherwise lose an accepted job (WAIT)."""
    if settings.redis_cluster:  # the job's node, not "the" master: HETA_REDIS_WAIT_REPLICAS does not apply
        return
    wanted = settings.redis_wait_replicas
    if wanted is None:
        wanted = min(1, await _connected_replicas(client))
    if wanted and await client.wait(wanted, settings.redis_wait_timeout_ms) < wanted:
        raise Problem(
            503,
            "redis_unavailable",
            f"the job is queued but not yet on {wanted} replica(s); retry with the same Idempotency-Key",
            headers={"Retry-After": "2"},
            job_id=job_id,
        )
