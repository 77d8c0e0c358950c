"""FastAPI dependencies: what a route needs, stated in its signature.

``SettingsDep``, ``RedisDep`` (the asyncio client), ``PlannersDep`` (a weightless Attributor per
served model) and ``CallerDep`` (authenticates and rate-limits; the caller's identity).
"""

from __future__ import annotations

import time
from typing import Annotated

import redis.asyncio
from fastapi import Depends, Header, Request

from heta_core import Attributor

from .auth import Keys, hash_key
from .problems import Problem
from .settings import Settings


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _redis(request: Request) -> redis.asyncio.Redis:
    return request.app.state.redis


def _planners(request: Request) -> dict[str, Attributor]:
    return request.app.state.planners


def _keys(request: Request) -> Keys:
    return request.app.state.keys


SettingsDep = Annotated[Settings, Depends(_settings)]
RedisDep = Annotated[redis.asyncio.Redis, Depends(_redis)]
PlannersDep = Annotated[dict[str, Attributor], Depends(_planners)]
KeysDep = Annotated[Keys, Depends(_keys)]


async def caller(
    request: Request,
    settings: SettingsDep,
    client: RedisDep,
    keys: KeysDep,
    authorization: Annotated[str | None, Header(description="Bearer <API key> (when HETA_API_KEYS is set)")] = None,
    x_api_key: Annotated[str | None, Header(description="the API key, as an alternative to Authorization")] = None,
) -> str:
    """Authenticates and rate-limits (per key, or per client address without keys); the caller's identity."""
    if keys.enabled:
        token = x_api_key or (authorization[7:] if authorization and authorization.lower().startswith("bearer ") else None)
        owner = keys.owner(token)
    else:
        owner = "anonymous:" + hash_key(request.client.host if request.client else "unknown")[:16]
    window = int(time.time() // 60)
    rate_key = f"heta:rate:{owner}:{window}"
    pipe = client.pipeline(transaction=False)
    pipe.incr(rate_key)
    pipe.expire(rate_key, 120)
    count, _ = await pipe.execute()
    if count > settings.rate_limit_per_minute:
        retry = str(int(60 - time.time() % 60) + 1)
        raise Problem(429, "rate_limited", f"more than {settings.rate_limit_per_minute} requests this minute",
                      headers={"Retry-After": retry})  # fmt: skip
    return owner


CallerDep = Annotated[str, Depends(caller)]
