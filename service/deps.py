"""FastAPI dependencies: what a route needs, stated in its signature.

``SettingsDep``, ``RedisDep`` (the asyncio client), ``PlannersDep`` (a weightless Attributor per
served model) and ``CallerDep`` (authenticates and rate-limits; the caller's identity).
"""

from __future__ import annotations

import time
from typing import Annotated

import redis
import redis.asyncio
from fastapi import Depends, Header, Request

from heta_core import Attributor

from .auth import Keys, hash_key
from .connections import is_out_of_memory
from .problems import Problem
from .settings import Settings


async def _settings(request: Request) -> Settings:
    return request.app.state.settings


async def _redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


async def _planners(request: Request) -> dict[str, Attributor]:
    return request.app.state.planners


async def _keys(request: Request) -> Keys:
    return request.app.state.keys


# async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, one thread hop per
# dependency per request (measured: ~1 ms of the queue overhead with four of them on 2 cores)
SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[redis.asyncio.Redis, Depends(_redis)]
PlannersDep = Annotated[dict[str, Attributor], Depends(_planners)]
KeysDep = Annotated[Keys, Depends(_keys)]


async def _count(client, key: str) -> int:
    """This minute's count under ``key``. A full Redis cannot count: the request passes (reads of
    finished jobs must keep working when the store is full; the writes it would make are refused anyway)."""
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, 120)
    try:
        count, _ = await pipe.execute()
    except redis.RedisError as error:
        if is_out_of_memory(error):
            return 0
        raise
    return count


def _too_many(limit: int, what: str) -> Problem:
    retry = str(int(60 - time.time() % 60) + 1)
    return Problem(429, "rate_limited", f"more than {limit} {what} this minute", headers={"Retry-After": retry})


async def caller(
    request: Request,
    settings: SettingsDep,
    client: RedisDep,
    keys: KeysDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key> (when HETA_API_KEYS is set)")] = None,
    x_api_key: Annotated[str | None, Header(description="the API key, as an alternative to Authorization")] = None,
) -> str:
    """Authenticates and rate-limits (per key, or per client address without keys); the caller's identity.

    Failed authentications are limited per client address as well, so guessing keys is not free."""
    window = int(time.time() // 60)
    address = hash_key(request.client.host if request.client else "unknown")[:16]
    if keys.enabled:
        token = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)
        try:
            owner = keys.owner(token)
        except Problem:
            if await _count(client, f"heta:authfail:{address}:{window}") > settings.auth_failures_per_minute:
                raise _too_many(settings.auth_failures_per_minute, "failed authentications") from None
            raise
    else:
        owner = "anonymous:" + address
    if await _count(client, f"heta:rate:{owner}:{window}") > settings.rate_limit_per_minute:
        raise _too_many(settings.rate_limit_per_minute, "requests")
    return owner


CallerDep = Annotated[str, Depends(caller)]
