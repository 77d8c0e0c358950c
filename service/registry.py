"""The worker registry: each worker refreshes its entry (``store.WORKER_PREFIX`` + id, a JSON document with a TTL) on
every heartbeat; a worker that stops is gone once its key expires. Used by /readyz and /models."""

from __future__ import annotations

import json

from heta_core import Speed

from .store import WORKER_PREFIX as PREFIX


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


def serving(workers: list[dict], model: str, *, draining: bool = False) -> list[dict]:
    """The live workers holding ``model``; draining ones (about to stop) only when ``draining``."""
    return [w for w in workers if model in w.get("models", {}) and (draining or not w.get("draining"))]


# the work a speed is compared on: a small HETA request's (only the order of speeds matters)
_YARDSTICK = {"flow": (16, 1), "kl": (136, 1), "hessian": (1496, 1)}


def model_speeds(workers: list[dict]) -> dict[str, Speed]:
    """Per served model, the slowest speed its live workers measured (admission's time estimates
    are then never too hopeful for the worker a job lands on)."""
    found: dict[str, list[Speed]] = {}
    for worker in workers:
        for name, model in worker.get("models", {}).items():
            if model.get("speed"):
                found.setdefault(name, []).append(Speed.from_dict(model["speed"]))
    return {name: max(speeds, key=lambda s: s.seconds(_YARDSTICK)) for name, speeds in found.items()}
