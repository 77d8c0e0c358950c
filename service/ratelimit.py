"""Per-minute request limits, counted in Redis so every API replica shares them.

A fixed one-minute window per caller: ``heta:rate:<owner>:<minute>`` (and, for failed
authentications, ``heta:authfail:<client address>:<minute>``), each expiring after two minutes.
Every request counts, refused ones included. A submission on a single Redis (or Sentinel) is
counted inside the enqueue script instead of a round trip of its own (see
:func:`heta_service.store.enqueue_call`): the same key and the same rule, ~0.5 ms less per request.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis

from .connections import is_out_of_memory
from .problems import Problem
from .store import rate_key

WINDOW_TTL_S = 120


def window() -> int:
    return int(time.time() // 60)


async def count(client, key: str) -> int:
    """This minute's count under ``key``, this request included. A full Redis cannot count: the
    request passes (reads of finished jobs must keep working when the store is full; the writes it
    would make are refused anyway)."""
    pipe = client.pipeline(transaction=False)
    pipe.incr(key)
    pipe.expire(key, WINDOW_TTL_S)
    try:
        counted, _ = await pipe.execute()
    except redis.RedisError as error:
        if is_out_of_memory(error):
            return 0
        raise
    return counted


def too_many(limit: int, what: str) -> Problem:
    retry = str(int(60 - time.time() % 60) + 1)
    return Problem(429, "rate_limited", f"more than {limit} {what} this minute", headers={"Retry-After": retry})


@dataclass(frozen=True)
class Caller:
    """An authenticated caller whose request is not counted yet: ``owner`` is its identity (the
    key's digest, or the client address without keys), ``key`` this minute's counter."""

    owner: str
    key: str
    limit: int

    @classmethod
    def of(cls, owner: str, limit: int) -> Caller:
        return cls(owner, rate_key(owner, window()), limit)

    def refused(self) -> Problem:
        return too_many(self.limit, "requests")

    async def count(self, client) -> None:
        """Counts this request; 429 ``rate_limited`` past the limit."""
        if await count(client, self.key) > self.limit:
            raise self.refused()
