"""FastAPI dependencies: what a route needs, stated in its signature.

``ServicesDep`` (settings, the asyncio Redis client, the weightless planners, the API keys),
``CallerDep`` (authenticates and rate-limits; the caller's identity) and ``SubmitterDep``
(authenticates; admission counts the request).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from redis.asyncio import Redis as AsyncRedis

from heta_core import Attributor

from . import ratelimit
from .auth import Keys, hash_key
from .problems import Problem
from .ratelimit import Caller
from .settings import Settings
from .store import JobStore, authfail_key


@dataclass(frozen=True)
class Services:
    """What the routes use of the running app, as one dependency: FastAPI solves every dependency of
    a request separately (~20 µs each, measured), so one bundle costs less than four."""

    settings: Settings
    redis: AsyncRedis
    planners: dict[str, Attributor]  # a weightless Attributor per served model
    keys: Keys
    jobs: JobStore  # the job store on ``redis``


# async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, one thread hop per
# dependency per request (measured: ~1 ms of the queue overhead with four of them on 2 cores)
async def _services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(_services)]


async def authenticated(
    request: Request,
    authorization: Annotated[str | None, Header(description="Bearer <API key> (when HETA_API_KEYS is set)")] = None,
    x_api_key: Annotated[str | None, Header(description="the API key, as an alternative to Authorization")] = None,
) -> Caller:
    """The caller (per key, or per client address without keys), its request not counted yet.

    Failed authentications are limited per client address, so guessing keys is not free."""
    svc: Services = request.app.state.services
    limit = svc.settings.rate_limit_per_minute
    address = hash_key(request.client.host if request.client else "unknown")[:16]
    if not svc.keys.enabled:
        return Caller.of("anonymous:" + address, limit)
    token = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)
    try:
        return Caller.of(svc.keys.owner(token), limit)
    except Problem:
        failures = svc.settings.auth_failures_per_minute
        if await ratelimit.count(svc.redis, authfail_key(address, ratelimit.window())) > failures:
            raise ratelimit.too_many(failures, "failed authentications") from None
        raise


async def caller(request: Request, who: Annotated[Caller, Depends(authenticated)]) -> str:
    """Authenticates and rate-limits; the caller's identity."""
    await who.count(request.app.state.services.redis)
    return who.owner


CallerDep = Annotated[str, Depends(caller)]


async def submitter(request: Request, who: Annotated[Caller, Depends(authenticated)]) -> Caller:
    """The caller of a submission route, counted by admission (in the enqueue script when it can);
    a body the schema refuses never reaches admission: the validation handler counts it."""
    request.state.uncounted = who
    return who


SubmitterDep = Annotated[Caller, Depends(submitter)]
