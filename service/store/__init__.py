"""The job store: every Redis key of the service, the job statuses and the Lua transitions, in one place.

A job is a hash ``heta:job:{id}``: status, model, request (JSON), owner (hashed API key), created,
deadline, attempts, progress, worker, result (JSON), error (JSON {code, detail}), the stream entry,
a cancel flag and a completion counter; while a HETA job runs, each partial result it publishes
(``partial:<stages>``, e.g. ``partial:flow,kl``: the JobResult JSON) and their list in order
(``partials``, e.g. "flow;flow,kl"; the last is the latest), dropped when the job is done. Status moves
queued → running → done | failed | cancelled | dead_lettered (:class:`JobStatus`); the final transition
is one Lua script, so whoever finishes a job first (a worker, a reclaiming worker, or the API cancelling
a queued job) is the only one who does: a job completes once.

The other keys (each built here and nowhere else): the model's stream ``heta:stream:<model>`` and its
dead letters, a waiter's wake-up list ``heta:done:<id>``, a caller's in-flight counter and idempotency
keys, the worker registry ``heta:worker:<id>``, the job metrics hash ``heta:metrics``, the result cache
``heta:cache:{cache}…``, the per-minute counters ``heta:rate:…`` / ``heta:authfail:…`` and the readiness
probe's ``heta:ready-probe``.

Redis Cluster (``HETA_REDIS_CLUSTER``): a Lua script may only touch keys of one hash slot, so every
key a script touches carries the model's hash tag ``{m<8 hex>}`` (job ids start with it, so a job's
keys are found from its id alone), and the in-flight and idempotency counters become per model.
Without a cluster the key names stay plain (``heta:stream:<model>``: what KEDA scales on).
"""

from __future__ import annotations

from .jobstore import JobStore
from .keys import (
    CACHE_BYTES,
    CACHE_INDEX,
    CACHE_PREFIX,
    CACHE_SIZES,
    FINAL,
    GROUP,
    METRICS_KEY,
    READY_PROBE,
    STATUSES,
    TAG_LENGTH,
    WORKER_PREFIX,
    JobStatus,
    authfail_key,
    cache_entry,
    dead_letter_key,
    done_key,
    ensure_groups,
    idempotency_key,
    inflight_key,
    job_key,
    model_tag,
    new_job_id,
    queue_state,
    rate_key,
    read_queue,
    stream_key,
    use_cluster,
)
from .scripts import (
    ENQUEUE,
    FINALIZE,
    IF_MINE,
    RENEW,
    START,
    TAKE,
    enqueue_call,
    finalize_call,
    flatten,
    if_mine_call,
    job_fields,
    renew_call,
    start_call,
    started,
    take_call,
)
from .views import VIEW_FIELDS, partial_fields, partials, public_view

__all__ = [
    "CACHE_BYTES",
    "CACHE_INDEX",
    "CACHE_PREFIX",
    "CACHE_SIZES",
    "ENQUEUE",
    "FINAL",
    "FINALIZE",
    "GROUP",
    "IF_MINE",
    "METRICS_KEY",
    "READY_PROBE",
    "RENEW",
    "START",
    "STATUSES",
    "TAG_LENGTH",
    "TAKE",
    "VIEW_FIELDS",
    "WORKER_PREFIX",
    "JobStatus",
    "JobStore",
    "authfail_key",
    "cache_entry",
    "dead_letter_key",
    "done_key",
    "enqueue_call",
    "ensure_groups",
    "finalize_call",
    "flatten",
    "idempotency_key",
    "if_mine_call",
    "inflight_key",
    "job_fields",
    "job_key",
    "model_tag",
    "new_job_id",
    "partial_fields",
    "partials",
    "public_view",
    "queue_state",
    "rate_key",
    "read_queue",
    "renew_call",
    "start_call",
    "started",
    "stream_key",
    "take_call",
    "use_cluster",
]
