"""A job's life on one Redis client (:class:`JobStore`)."""

from __future__ import annotations

import time
from typing import Any

from .keys import FINAL, done_key, job_key, stream_key
from .scripts import enqueue_call, finalize_call, if_mine_call, renew_call, start_call


class JobStore:
    """A job's life on one Redis client: the API's asyncio client (await each answer) or a worker's
    synchronous one. Each operation is one round trip; its keys and scripts are this module's.

    The other roles' keys (the worker registry, metrics, the result cache, rate counters) are named
    above and written by their own modules through them."""

    def __init__(self, client):
        self.client = client

    def create(self, model: str, job_id: str, request_json: str, owner: str, deadline: float, **options: Any):
        """ENQUEUE: the job queued (or refused: rate, queue depth, in-flight; an idempotent twin's id)."""
        return self.client.eval(*enqueue_call(model, job_id, request_json, owner, deadline, **options))

    def create_done(
        self, job_id: str, fields: dict[str, str], ttl: int, idempotency: str = "", idempotency_value: str = ""
    ):
        """A job that is done as it is created (a result cache hit: never queued, never computed); a
        waiter wakes at once, as FINALIZE would wake it. One transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(job_key(job_id), mapping=fields).expire(job_key(job_id), ttl)
        pipe.rpush(done_key(job_id), fields["status"]).expire(done_key(job_id), 60)
        if idempotency:
            pipe.set(idempotency, idempotency_value, ex=ttl)
        return pipe.execute()

    def read(self, job_id: str):
        """The job's fields ({} once it is gone)."""
        return self.client.hgetall(job_key(job_id))

    async def wait(self, job_id: str, seconds: float, fresh: bool = False) -> dict:
        """(The API's asyncio client.) The job once final, or as it is after ``seconds``. A ``fresh``
        job (just queued) cannot be final yet: its first read would be a wasted round trip on every
        request, so it starts waiting."""
        deadline = time.monotonic() + seconds
        job = None if fresh and seconds > 0 else await self.read(job_id)
        while True:
            left = deadline - time.monotonic()
            if job is not None and (not job or job["status"] in FINAL or left <= 0):
                return job
            job = await self._block_then_read(job_id, min(0.5, max(0.01, left)))

    async def _block_then_read(self, job_id: str, timeout: float) -> dict:
        """Wait for the job's done signal (or ``timeout``), then read the job. One round trip: in a
        pipeline the read queues behind the blocking pop on the same connection and runs the moment it
        returns (a Redis Cluster client pipelines no blocking command: two round trips there)."""
        from redis.asyncio.cluster import RedisCluster

        if isinstance(self.client, RedisCluster):
            await self.client.blpop([done_key(job_id)], timeout=timeout)
            return await self.read(job_id)
        pipe = self.client.pipeline(transaction=False)
        pipe.blpop([done_key(job_id)], timeout=timeout)
        pipe.hgetall(job_key(job_id))
        return (await pipe.execute())[1]

    def start(self, job_id: str, worker: str, started: float):
        """START: the job running on ``worker`` unless final, gone or past its deadline (see :func:`started`)."""
        return self.client.eval(*start_call(job_id, worker, started))

    def report(self, job_id: str, worker: str, **fields: str):
        """Progress or a partial result, written only while ``worker``'s run is the job's; answers the cancel flag."""
        return self.client.eval(*if_mine_call(job_id, worker, **fields))

    def renew(self, stream: str, held: list[tuple[str, str]], worker: str):
        """RENEW: the leases of ``held`` (entry, job id) still ``worker``'s."""
        return self.client.eval(*renew_call(stream, held, worker))

    def finish(self, job: dict, status: str, ttl: int, **fields: Any):
        """FINALIZE: the job's one final transition (1 if this call made it, 0 if it was final already)."""
        return self.client.eval(*finalize_call(job["id"], job["owner"], job["model"], status, ttl, **fields))

    def request_cancel(self, job_id: str):
        """The cancel flag: a running job stops at its next chunk (its worker reads the flag with each report)."""
        return self.client.hset(job_key(job_id), "cancel", "1")

    def dequeue(self, model: str, entry: str):
        """A queued job's stream entry removed (cancelled before any worker read it)."""
        return self.client.xdel(stream_key(model), entry)

    def purge(self, job_id: str):
        """A finished job's request and result deleted now, not at its TTL."""
        return self.client.delete(job_key(job_id), done_key(job_id))
