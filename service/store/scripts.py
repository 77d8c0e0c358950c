"""The Lua transitions of a job and their argument lists (``client.eval(*enqueue_call(...))`` runs the
same way on the API's asyncio client and a worker's synchronous one). The statuses in the scripts are
written from :class:`~heta_service.store.keys.JobStatus`."""

from __future__ import annotations

import json
import time
from string import Template
from typing import Any

from .keys import FINAL, GROUP, JobStatus, done_key, inflight_key, job_key, stream_key


def _lua(script: str) -> str:
    """A Lua script with the statuses written from :class:`JobStatus` (``$done``, ``$running``, ...)
    and ``$is_final``, the test that a variable ``status`` holds a final one."""
    names = {status.name.lower(): f"'{status.value}'" for status in JobStatus}
    return Template(script).substitute(names, is_final=" or ".join(f"status == '{status}'" for status in FINAL))


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
FINALIZE = _lua("""
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 0 end
if $is_final then return 0 end
local fields = {'status', ARGV[1], 'finished', ARGV[2]}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
if ARGV[1] == $done then
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
""")


# start(job key, worker id, started): marks a job running unless it is gone or already final (a late
# worker whose lease was taken over must not reopen a job another run finished) or its deadline passed
# in the queue; answers {outcome, the job's fields...}: 'started' (the fields as they now are),
# 'expired' (not started) or 'gone' (no fields).
_START_FUNCTION = _lua("""
local function start(job, worker, started)
  local fields = redis.call('HGETALL', job)
  if #fields == 0 then return {'gone'} end
  local status = redis.call('HGET', job, 'status')
  if $is_final then return {'gone'} end
  if tonumber(redis.call('HGET', job, 'deadline')) < tonumber(started) then return {'expired', unpack(fields)} end
  redis.call('HSET', job, 'status', $running, 'worker', worker, 'started', started, 'progress', '0')
  redis.call('HINCRBY', job, 'attempts', 1)
  return {'started', unpack(redis.call('HGETALL', job))}
end
""")

# KEYS: job; ARGV: worker id, started
START = _START_FUNCTION + "return start(KEYS[1], ARGV[1], ARGV[2])"

# KEYS: the streams; ARGV: group, worker id (the consumer), the job key's prefix, how many. Runs
# pipelined right behind the worker's blocking XREADGROUP, in the same round trip: starts the entries it
# delivered (those pending for this consumer; the worker holds no others) at the server's clock. Answers
# one {stream index, entry id, job id, start's answer...} per entry (an entry deleted meanwhile, e.g.
# cancelled while queued, is left out: the worker acks it). One Redis node only: the job key is found
# from the entry, not declared (on a cluster it shares the stream's slot, but the worker starts jobs
# apart there).
TAKE = (
    _START_FUNCTION
    + """
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
)

# KEYS: job; ARGV: worker id, then field/value pairs. Writes only while this worker's run is the job's
# current one (fencing: a reclaimed job's stale worker changes nothing); returns the cancel flag.
IF_MINE = _lua("""
if redis.call('HGET', KEYS[1], 'worker') == ARGV[1] and redis.call('HGET', KEYS[1], 'status') == $running then
  local fields = {}
  for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
  if #fields > 0 then redis.call('HSET', KEYS[1], unpack(fields)) end
end
return redis.call('HGET', KEYS[1], 'cancel')
""")


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
    return [
        RENEW,
        1 + len(held),
        stream,
        *(job_key(job_id) for _, job_id in held),
        GROUP,
        worker,
        *(entry for entry, _ in held),
    ]


def job_fields(
    job_id: str,
    model: str,
    request_json: str,
    owner: str,
    deadline: float,
    *,
    request_id: str = "",
    traceparent: str = "",
) -> dict[str, str]:
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


def enqueue_call(
    model: str,
    job_id: str,
    request_json: str,
    owner: str,
    deadline: float,
    *,
    idempotency: str,
    idempotency_value: str,
    max_depth: int,
    max_inflight: int,
    ttl: int,
    cache: str = "",
    rate: tuple[str, int] | None = None,
    request_id: str = "",
    traceparent: str = "",
) -> list:
    """ENQUEUE for a new job; ``idempotency`` is the key of the caller's Idempotency-Key ("" for none),
    ``cache`` the result cache entry the worker fills when the job is done ("" for none), ``rate``
    (counter key, limit) when the script counts the request against the caller's per-minute limit
    (the key must share the job's hash slot: not on a Redis Cluster)."""
    job = job_key(job_id)
    keys = [stream_key(model), job, inflight_key(owner, model), idempotency or job, rate[0] if rate else job]
    fields = job_fields(job_id, model, request_json, owner, deadline, request_id=request_id, traceparent=traceparent)
    if cache:
        fields["cache"] = cache
    return [
        ENQUEUE,
        len(keys),
        *keys,
        max_depth,
        max_inflight,
        job_id,
        idempotency_value if idempotency else "",
        ttl,
        rate[1] if rate else 0,
        *flatten(fields),
    ]


def start_call(job_id: str, worker: str, started: float) -> list:
    return [START, 1, job_key(job_id), worker, repr(started)]


def take_call(streams: list[str], worker: str, count: int = 1) -> list:
    return [TAKE, len(streams), *streams, GROUP, worker, job_key(""), count]


def started(answer: list) -> tuple[str, dict[str, str]]:
    """START's answer as (outcome, the job's fields)."""
    outcome, flat = answer[0], answer[1:]
    return outcome, dict(zip(flat[::2], flat[1::2], strict=True))


def if_mine_call(job_id: str, worker: str, **fields: str) -> list:
    return [IF_MINE, 1, job_key(job_id), worker, *flatten(fields)]


def finalize_call(job_id: str, owner: str, model: str, status: str, ttl: int, **fields: Any) -> list:
    """FINALIZE: the job's one final transition (``fields`` are stored with it; non-strings as JSON)."""
    keys = [job_key(job_id), inflight_key(owner, model), done_key(job_id)]
    values = {k: v if isinstance(v, str) else json.dumps(v) for k, v in fields.items() if v is not None}
    return [FINALIZE, len(keys), *keys, status, repr(time.time()), str(ttl), *flatten(values)]
