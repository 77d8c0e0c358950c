"""``heta probe-worker``: a liveness signal for workers, which serve no port.

A worker's heartbeat thread re-registers it in Redis every ``HETA_HEARTBEAT_S`` with a TTL of three
beats (:mod:`heta_service.registry`), under its host name. So "this host has a registry entry" means
"a worker process here is alive and reaching Redis". A container orchestrator runs this in the
worker's container (Kubernetes exec probe, compose healthcheck); each container has its own host name.
"""

from __future__ import annotations

import socket

import redis

from .connections import connect_store
from .registry import live_workers
from .settings import Settings


def probe_worker(settings: Settings, host: str | None = None) -> tuple[bool, str]:
    """(alive, one line saying why)."""
    host = host or socket.gethostname()
    if not settings.has_store:
        return False, "heta probe-worker: set REDIS_URL (the worker's Redis)"
    try:
        client = connect_store(settings)
        try:
            workers = live_workers(client)
        finally:
            client.close()
    except redis.RedisError as error:
        # the heartbeat cannot reach Redis either: restarting this worker would not bring Redis back,
        # and every worker restarting at once would throw away every loaded model
        return True, f"Redis unreachable ({type(error).__name__}): not judging the worker"
    mine = [w for w in workers if w.get("host") == host]
    if not mine:
        return False, f"no live worker registered from host {host}"
    states = ", ".join(
        f"{w['id']} {'busy' if w.get('busy') else 'idle'}{' draining' if w.get('draining') else ''}" for w in mine
    )
    return True, f"alive: {states}"
