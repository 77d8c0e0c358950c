"""The worker registry: each worker refreshes ``heta:worker:{id}`` (a JSON document with a TTL) on
every heartbeat; a worker that stops is gone once its key expires. Used by /readyz and /models."""

from __future__ import annotations

import json

PREFIX = "heta:worker:"


def register(client, worker_id: str, info: dict, ttl_s: float) -> None:
    client.set(PREFIX + worker_id, json.dumps(info), px=int(ttl_s * 1000))


def unregister(client, worker_id: str) -> None:
    client.delete(PREFIX + worker_id)


def _gets(client, keys):
    # a pipeline of GETs, not MGET: on a Redis Cluster the keys live in different slots
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.get(key)
    return pipe


def live_workers(client) -> list[dict]:
    keys = list(client.scan_iter(match=PREFIX + "*", count=100))
    values = _gets(client, keys).execute() if keys else []
    return [json.loads(v) for v in values if v]


async def live_workers_async(client) -> list[dict]:
    keys = [key async for key in client.scan_iter(match=PREFIX + "*", count=100)]
    values = await _gets(client, keys).execute() if keys else []
    return [json.loads(v) for v in values if v]
