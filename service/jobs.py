"""Job records in Redis and their state transitions.

A job is a hash ``heta:job:{id}``: status, model, request (JSON), owner (hashed API key), created,
deadline, attempts, progress, worker, result (JSON), error (JSON {code, detail}), the stream entry,
a cancel flag and a completion counter. Status moves queued → running → done | failed | cancelled |
dead_lettered; the final transition is one Lua script, so whoever finishes a job first (a worker, a
reclaiming worker, or the API cancelling a queued job) is the only one who does: a job completes once.
"""

from __future__ import annotations

import json
import time
from typing import Any

STATUSES = ("queued", "running", "cancelling", "done", "failed", "cancelled", "dead_lettered")
FINAL = ("done", "failed", "cancelled", "dead_lettered")


def job_key(job_id: str) -> str:
    return f"heta:job:{job_id}"


def stream_key(model: str) -> str:
    return f"heta:stream:{model}"


def dead_letter_key(model: str) -> str:
    return f"heta:dead:{model}"


def inflight_key(owner: str) -> str:
    return f"heta:inflight:{owner}"


def done_key(job_id: str) -> str:
    return f"heta:done:{job_id}"


GROUP = "workers"

# KEYS: stream, job, inflight, idempotency ("" for none)
# ARGV: max_depth, max_inflight, job_id, idempotency value, ttl, then field/value pairs of the job hash
ENQUEUE = """
if KEYS[4] ~= '' then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'idempotent', existing} end
end
local waiting = redis.call('XLEN', KEYS[1])
if waiting >= tonumber(ARGV[1]) then return {'queue_full', tostring(waiting)} end
local inflight = tonumber(redis.call('GET', KEYS[3]) or '0')
if inflight >= tonumber(ARGV[2]) then return {'inflight_limit', tostring(inflight)} end
if KEYS[4] ~= '' then redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[5]) end
local fields = {}
for i = 6, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[2], unpack(fields))
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[3])
redis.call('HSET', KEYS[2], 'entry', entry)
redis.call('INCR', KEYS[3])
return {'ok', ARGV[3]}
"""

# KEYS: job, inflight, done list; ARGV: status, finished, ttl, then field/value pairs
FINALIZE = """
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if status == 'done' or status == 'failed' or status == 'cancelled' or status == 'dead_lettered' then return 0 end
local fields = {'status', ARGV[1], 'finished', ARGV[2]}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('HINCRBY', KEYS[1], 'completions', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local left = redis.call('DECR', KEYS[2])
if left <= 0 then redis.call('DEL', KEYS[2]) end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], 60)
return 1
"""


def job_fields(job_id: str, model: str, request_json: str, owner: str, deadline: float) -> dict[str, str]:
    return {
        "id": job_id,
        "model": model,
        "status": "queued",
        "request": request_json,
        "owner": owner,
        "created": repr(time.time()),
        "deadline": repr(deadline),
        "attempts": "0",
        "progress": "0",
    }


def flatten(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


# The two transitions as EVAL argument lists, run the same way by the API's asyncio client and the
# worker's synchronous one: ``client.eval(*enqueue_call(...))``.


def enqueue_call(model: str, job_id: str, request_json: str, owner: str, deadline: float, *, idempotency: str,
                 idempotency_value: str, max_depth: int, max_inflight: int, ttl: int) -> list:  # fmt: skip
    """ENQUEUE for a new job; ``idempotency`` is the key of the caller's Idempotency-Key ("" for none)."""
    keys = [stream_key(model), job_key(job_id), inflight_key(owner), idempotency]
    fields = job_fields(job_id, model, request_json, owner, deadline)
    return [ENQUEUE, len(keys), *keys, max_depth, max_inflight, job_id, idempotency_value, ttl, *flatten(fields)]


def finalize_call(job_id: str, owner: str, status: str, ttl: int, **fields: Any) -> list:
    """FINALIZE: the job's one final transition (``fields`` are stored with it; non-strings as JSON)."""
    keys = [job_key(job_id), inflight_key(owner), done_key(job_id)]
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}
    return [FINALIZE, len(keys), *keys, status, repr(time.time()), str(ttl), *flatten(values)]


def public_view(job: dict[str, str]) -> dict[str, Any]:
    """The job as GET /jobs/{id} shows it."""
    view: dict[str, Any] = {
        "job_id": job["id"],
        "status": job["status"],
        "model": job["model"],
        "progress": float(job.get("progress", 0)),
        "attempts": int(job.get("attempts", 0)),
        "created": float(job["created"]),
        "started": float(job["started"]) if job.get("started") else None,
        "finished": float(job["finished"]) if job.get("finished") else None,
        "deadline": float(job["deadline"]),
        "worker": job.get("worker"),  # host-pid-suffix of the worker that ran it last
    }
    if job["status"] == "running" and job.get("cancel"):
        view["status"] = "cancelling"
    if job.get("result"):
        view["result"] = json.loads(job["result"])
    if job.get("error"):
        view["error"] = json.loads(job["error"])
    return view
