"""The job statuses and every Redis key name of the service (see the package's docstring)."""

from __future__ import annotations

import hashlib
import uuid
from enum import StrEnum


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"  # a view's word for a running job with its cancel flag set
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    DEAD_LETTERED = "dead_lettered"


STATUSES = tuple(status.value for status in JobStatus)
FINAL = (JobStatus.DONE.value, JobStatus.FAILED.value, JobStatus.CANCELLED.value, JobStatus.DEAD_LETTERED.value)


# keys outside a job's hash slot
WORKER_PREFIX = "heta:worker:"  # + worker id: the registry entry (JSON, with a TTL the heartbeat renews)
METRICS_KEY = "heta:metrics"  # job counters and histograms, written by workers, read by every API replica
READY_PROBE = "heta:ready-probe"  # /readyz's write
CACHE_PREFIX = "heta:cache:{cache}"  # one hash tag: every cache key in one slot
CACHE_INDEX, CACHE_SIZES, CACHE_BYTES = CACHE_PREFIX + ":index", CACHE_PREFIX + ":sizes", CACHE_PREFIX + ":bytes"


def cache_entry(digest: str) -> str:
    return CACHE_PREFIX + digest


def rate_key(owner: str, window: int) -> str:
    """A caller's requests in one minute (``window``: minutes since the epoch)."""
    return f"heta:rate:{owner}:{window}"


def authfail_key(address: str, window: int) -> str:
    """A client address's failed authentications in one minute."""
    return f"heta:authfail:{address}:{window}"


_cluster = False
TAG_LENGTH = 9  # "m" and 8 hex digits of the model name's SHA-256


def use_cluster(enabled: bool) -> None:
    """Key names for Redis Cluster (hash-tagged per model) or for one Redis (plain); set once at start."""
    global _cluster
    _cluster = enabled


def model_tag(model: str) -> str:
    return "m" + hashlib.sha256(model.encode()).hexdigest()[: TAG_LENGTH - 1]


def new_job_id(model: str) -> str:
    """A job id that names its model's hash slot: the tag, then 32 random hex digits."""
    return model_tag(model) + uuid.uuid4().hex


def _slot(tag: str) -> str:
    return f"{{{tag}}}:" if _cluster else ""


def job_key(job_id: str) -> str:
    return f"heta:job:{_slot(job_id[:TAG_LENGTH])}{job_id}"


def done_key(job_id: str) -> str:
    return f"heta:done:{_slot(job_id[:TAG_LENGTH])}{job_id}"


def stream_key(model: str) -> str:
    return f"heta:stream:{{{model_tag(model)}}}" if _cluster else f"heta:stream:{model}"


def dead_letter_key(model: str) -> str:
    return f"heta:dead:{{{model_tag(model)}}}" if _cluster else f"heta:dead:{model}"


def inflight_key(owner: str, model: str) -> str:
    """Unfinished jobs of one caller (of one caller and model on a cluster)."""
    return f"heta:inflight:{_slot(model_tag(model))}{owner}"


def idempotency_key(owner: str, key_digest: str, model: str) -> str:
    return f"heta:idem:{_slot(model_tag(model))}{owner}:{key_digest}"


GROUP = "workers"


def read_queue(pipe, model: str):
    """Queues on ``pipe`` (a pipeline of the sync or the asyncio client) the reads :func:`queue_state`
    needs; run it with ``execute(raise_on_error=False)`` (a stream without its group yet has no pending list)."""
    stream = stream_key(model)
    return pipe.xlen(stream).xpending(stream, GROUP).xrange(stream, count=1)


def queue_state(answers: list, now: float) -> tuple[int, float]:
    """(jobs waiting: not yet delivered to a worker, the oldest unfinished job's age in seconds) from
    :func:`read_queue`'s answers."""
    total, pending, oldest = answers
    delivered = pending["pending"] if isinstance(pending, dict) else 0
    age = max(0.0, now - int(oldest[0][0].split("-")[0]) / 1000) if oldest else 0.0
    return max(0, total - delivered), age


def ensure_groups(client, models: list[str]) -> None:
    """Each model's stream and its consumer group (both API and workers call it: KEDA's lag trigger
    needs the group before the first worker exists)."""
    for model in models:
        try:
            client.xgroup_create(stream_key(model), GROUP, id="0", mkstream=True)
        except Exception as error:  # BUSYGROUP: it exists
            if "BUSYGROUP" not in str(error):
                raise
