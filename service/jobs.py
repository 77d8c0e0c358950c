"""Job records in Redis and their state transitions.

A job is a hash ``heta:job:{id}``: status, model, request (JSON), owner (hashed API key), created,
deadline, attempts, progress, worker, result (JSON), error (JSON {code, detail}), the stream entry,
the submitting request's id (``request_id``) and trace context (``traceparent``, while tracing is on),
a cancel flag and a completion counter; while a HETA job runs, each partial result it publishes
(``partial:<stages>``, e.g. ``partial:flow,kl``: the JobResult JSON) and their list in order
(``partials``, e.g. "flow;flow,kl"; the last is the latest), dropped when the job is done. Status moves queued → running → done | failed | cancelled |
dead_lettered; the final transition is one Lua script, so whoever finishes a job first (a worker, a
reclaiming worker, or the API cancelling a queued job) is the only one who does: a job completes once.

Redis Cluster (``HETA_REDIS_CLUSTER``): a Lua script may only touch keys of one hash slot, so every
key a script touches carries the model's hash tag ``{m<8 hex>}`` (job ids start with it, so a job's
keys are found from its id alone), and the in-flight and idempotency counters become per model.
Without a cluster the key names stay plain (``heta:stream:<model>``: what KEDA scales on).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

STATUSES = ("queued", "running", "cancelling", "done", "failed", "cancelled", "dead_lettered")
FINAL = ("done", "failed", "cancelled", "dead_lettered")


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


def ensure_groups(client, models: list[str]) -> None:
    """Each model's stream and its consumer group (both API and workers call it: KEDA's lag trigger
    needs the group before the first worker exists)."""
    for model in models:
        try:
            client.xgroup_create(stream_key(model), GROUP, id="0", mkstream=True)
        except Exception as error:  # noqa: BLE001 - BUSYGROUP: it exists
            if "BUSYGROUP" not in str(error):
                raise

# KEYS: stream, job, inflight, idempotency, rate (an unused one repeats the job key: every key stays
# in the job's hash slot)
# ARGV: max_depth, max_inflight, job_id, idempotency value ("": no Idempotency-Key), ttl, rate limit
# (0: the request was counted elsewhere), then field/value pairs of the job hash. The request is
# counted first, as every request is; then the idempotent twin, the queue and the in-flight limit. A
# job that exists already is this very call retried (its answer lost on the network): answered as
# before, never a second stream entry (the job would run twice and its in-flight count never return).
ENQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return {'ok', ARGV[3]} end
local limit = tonumber(ARGV[6])
if limit > 0 then
  local counted = redis.call('INCR', KEYS[5])
  redis.call('EXPIRE', KEYS[5], 120)
  if counted > limit then return {'rate_limited', tostring(counted)} end
end
local idempotent = ARGV[4] ~= ''
if idempotent then
  local existing = redis.call('GET', KEYS[4])
  if existing then return {'idempotent', existing} end
end
local waiting = redis.call('XLEN', KEYS[1])
if waiting >= tonumber(ARGV[1]) then return {'queue_full', tostring(waiting)} end
local inflight = tonumber(redis.call('GET', KEYS[3]) or '0')
if inflight >= tonumber(ARGV[2]) then return {'inflight_limit', tostring(inflight)} end
if idempotent then redis.call('SET', KEYS[4], ARGV[4], 'EX', ARGV[5]) end
local fields = {}
for i = 7, #ARGV do fields[#fields + 1] = ARGV[i] end
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
if ARGV[1] == 'done' then
  for name in string.gmatch(redis.call('HGET', KEYS[1], 'partials') or '', '[^;]+') do
    redis.call('HDEL', KEYS[1], 'partial:' .. name)
  end
  redis.call('HDEL', KEYS[1], 'partials')
end
redis.call('HINCRBY', KEYS[1], 'completions', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local left = redis.call('DECR', KEYS[2])
if left <= 0 then redis.call('DEL', KEYS[2]) end
redis.call('RPUSH', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], 60)
return 1
"""


# start(job key, worker id, started): marks a job running unless it is gone or already final (a late
# worker whose lease was taken over must not reopen a job another run finished) or its deadline passed
# in the queue; answers {outcome, the job's fields...}: 'started' (the fields as they now are),
# 'expired' (not started) or 'gone' (no fields).
_START_FUNCTION = """
local function start(job, worker, started)
  local fields = redis.call('HGETALL', job)
  if #fields == 0 then return {'gone'} end
  local status = redis.call('HGET', job, 'status')
  if status == 'done' or status == 'failed' or status == 'cancelled' or status == 'dead_lettered' then return {'gone'} end
  if tonumber(redis.call('HGET', job, 'deadline')) < tonumber(started) then return {'expired', unpack(fields)} end
  redis.call('HSET', job, 'status', 'running', 'worker', worker, 'started', started, 'progress', '0')
  redis.call('HINCRBY', job, 'attempts', 1)
  return {'started', unpack(redis.call('HGETALL', job))}
end
"""

# KEYS: job; ARGV: worker id, started
START = _START_FUNCTION + "return start(KEYS[1], ARGV[1], ARGV[2])"

# KEYS: the streams; ARGV: group, worker id (the consumer), the job key's prefix, how many. Runs
# pipelined right behind the worker's blocking XREADGROUP, in the same round trip: starts the entries it
# delivered (those pending for this consumer; the worker holds no others) at the server's clock. Answers
# one {stream index, entry id, job id, start's answer...} per entry (an entry deleted meanwhile, e.g.
# cancelled while queued, is left out: the worker acks it). One Redis node only: the job key is found
# from the entry, not declared (on a cluster it shares the stream's slot, but the worker starts jobs
# apart there).
TAKE = _START_FUNCTION + """
local taken = {}
local now = redis.call('TIME')
local clock = now[1] .. '.' .. string.format('%06d', now[2])
for index, stream in ipairs(KEYS) do
  for _, pending in ipairs(redis.call('XPENDING', stream, ARGV[1], '-', '+', tonumber(ARGV[4]), ARGV[2])) do
    local entry = pending[1]
    local found = redis.call('XRANGE', stream, entry, entry)
    if #found > 0 then
      local job = found[1][2][2]
      taken[#taken + 1] = {index, entry, job, unpack(start(ARGV[3] .. job, ARGV[2], clock))}
    end
  end
end
return taken
"""

# KEYS: job; ARGV: worker id, then field/value pairs. Writes only while this worker's run is the job's
# current one (fencing: a reclaimed job's stale worker changes nothing); returns the cancel flag.
IF_MINE = """
if redis.call('HGET', KEYS[1], 'worker') == ARGV[1] and redis.call('HGET', KEYS[1], 'status') == 'running' then
  local fields = {}
  for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
  if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
end
return redis.call('HGET', KEYS[1], 'cancel')
"""


# KEYS: a stream, then the job of each entry; ARGV: group, worker, the entries. The heartbeat's lease
# renewal, for the entries whose job is still this worker's: a worker cut off past its lease, whose
# job another worker took over, does not take the entry back when the network heals.
RENEW = """
local renewed = {}
for i = 3, #ARGV do
  if redis.call('HGET', KEYS[i - 1], 'worker') == ARGV[2] then renewed[#renewed + 1] = ARGV[i] end
end
local count = #renewed
renewed[count + 1] = 'JUSTID'  -- no delivery counted: the same run goes on
if count > 0 then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, unpack(renewed)) end
return count
"""


def renew_call(stream: str, held: list[tuple[str, str]], worker: str) -> list:
    """RENEW for ``held``: (entry, job id) pairs of one stream."""
    return [RENEW, 1 + len(held), stream, *(job_key(job_id) for _, job_id in held), GROUP, worker, *(entry for entry, _ in held)]


def job_fields(job_id: str, model: str, request_json: str, owner: str, deadline: float, *, request_id: str = "",
               traceparent: str = "") -> dict[str, str]:  # fmt: skip
    """A new job's hash; ``request_id`` and ``traceparent`` (the submitting request's) only when given."""
    origin = {name: value for name, value in (("request_id", request_id), ("traceparent", traceparent)) if value}
    return {
        **origin,
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
                 idempotency_value: str, max_depth: int, max_inflight: int, ttl: int, cache: str = "",
                 rate: tuple[str, int] | None = None, request_id: str = "", traceparent: str = "") -> list:  # fmt: skip
    """ENQUEUE for a new job; ``idempotency`` is the key of the caller's Idempotency-Key ("" for none),
    ``cache`` the result cache entry the worker fills when the job is done ("" for none), ``rate``
    (counter key, limit) when the script counts the request against the caller's per-minute limit
    (the key must share the job's hash slot: not on a Redis Cluster)."""
    job = job_key(job_id)
    keys = [stream_key(model), job, inflight_key(owner, model), idempotency or job, rate[0] if rate else job]
    fields = job_fields(job_id, model, request_json, owner, deadline, request_id=request_id, traceparent=traceparent)
    if cache:
        fields["cache"] = cache
    return [ENQUEUE, len(keys), *keys, max_depth, max_inflight, job_id, idempotency_value if idempotency else "", ttl,
            rate[1] if rate else 0, *flatten(fields)]  # fmt: skip


def start_call(job_id: str, worker: str, started: float) -> list:
    return [START, 1, job_key(job_id), worker, repr(started)]


def take_call(streams: list[str], worker: str, count: int = 1) -> list:
    return [TAKE, len(streams), *streams, GROUP, worker, job_key(""), count]


def started(answer: list) -> tuple[str, dict[str, str]]:
    """START's answer as (outcome, the job's fields)."""
    outcome, flat = answer[0], answer[1:]
    return outcome, dict(zip(flat[::2], flat[1::2]))


def if_mine_call(job_id: str, worker: str, **fields: str) -> list:
    return [IF_MINE, 1, job_key(job_id), worker, *flatten(fields)]


def finalize_call(job_id: str, owner: str, model: str, status: str, ttl: int, **fields: Any) -> list:
    """FINALIZE: the job's one final transition (``fields`` are stored with it; non-strings as JSON)."""
    keys = [job_key(job_id), inflight_key(owner, model), done_key(job_id)]
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}
    return [FINALIZE, len(keys), *keys, status, repr(time.time()), str(ttl), *flatten(values)]


# the fields of the job's status (what GET /jobs/{id} shows besides the result, error and partial result)
VIEW_FIELDS = ("id", "status", "model", "progress", "attempts", "created", "started", "finished", "deadline", "worker", "cancel",
               "request_id")


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
        "request_id": job.get("request_id"),
    }
    if job["status"] == "running" and job.get("cancel"):
        view["status"] = "cancelling"
    if job.get("result"):
        view["result"] = json.loads(job["result"])
    if job.get("error"):
        view["error"] = json.loads(job["error"])
    latest = partials(job)[-1:]
    if latest:
        view["partial"] = json.loads(latest[0][1])
    return view


def partial_fields(stages: list[str], body: str, published: list[str]) -> dict[str, str]:
    """The job fields that store one more partial result (``published``: the stage lists stored before)."""
    name = ",".join(stages)
    return {f"partial:{name}": body, "partials": ";".join([*published, name])}


def partials(job: dict[str, str]) -> list[tuple[str, str]]:
    """(stages, JobResult JSON) of every partial result the job holds, oldest first."""
    names = [name for name in job.get("partials", "").split(";") if name]
    return [(name, job[f"partial:{name}"]) for name in names if f"partial:{name}" in job]
