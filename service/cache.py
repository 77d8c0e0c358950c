"""The result cache: a repeated request is answered from Redis, with no compute.

Key: sha256 over (model, ``meta.revision`` of its weights, the canonical request): the engine call the
request resolves to — input (text, ids or messages), targets, granularity and spans — and the complete
``HetaConfig`` with every default filled in, the seed included. The engine's default seed is fixed
(0), so every request names the randomness it gets and every request is cacheable: the same key is
the same computation, bit for bit on the same hardware.

Shared across API keys: a hit needs an identical request for the same weights, so it can only return
what that caller's own run would have returned. The hit becomes a new job of the caller (its own id,
owner and retention), so one key never sees another key's job.

Bounded: entries expire after ``HETA_CACHE_TTL_S``; their sizes are summed, and the oldest entries are
dropped while the sum exceeds ``HETA_CACHE_MAX_BYTES`` (one Lua script, so the sum stays exact). All
cache keys share one hash tag: one slot on a Redis Cluster.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time

from .store import CACHE_BYTES as TOTAL
from .store import CACHE_INDEX as INDEX
from .store import CACHE_SIZES as SIZES
from .store import METRICS_KEY, cache_entry

# KEYS: entry, index (zset key → stored at), sizes (hash key → bytes), total; ARGV: value, ttl, max bytes, now
PUT = """
local size = string.len(ARGV[1])
local most = tonumber(ARGV[3])
if size > most then return 0 end
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[2]))) do
  redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], key) or '0'))
  redis.call('HDEL', KEYS[3], key)
  redis.call('ZREM', KEYS[2], key)
end
local previous = redis.call('HGET', KEYS[3], KEYS[1])
if previous then redis.call('DECRBY', KEYS[4], tonumber(previous)) end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[4], KEYS[1])
redis.call('HSET', KEYS[3], KEYS[1], size)
local total = redis.call('INCRBY', KEYS[4], size)
while total > most do
  local oldest = redis.call('ZPOPMIN', KEYS[2])
  if #oldest == 0 then break end
  total = redis.call('DECRBY', KEYS[4], tonumber(redis.call('HGET', KEYS[3], oldest[1]) or '0'))
  redis.call('HDEL', KEYS[3], oldest[1])
  redis.call('DEL', oldest[1])
end
return 1
"""


def key(model: str, revision: str | None, call: dict, config) -> str:
    """The entry of a request: ``call`` and ``config`` as ``AttributeRequest.engine_call()`` returns them."""
    canonical = {"model": model, "revision": revision, "call": call, "config": dataclasses.asdict(config)}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()
    return cache_entry(digest)


async def lookup(client, entry: str) -> str | None:
    """The stored result document, counted as a hit or a miss."""
    stored = await client.get(entry)
    await client.hincrby(METRICS_KEY, "cache|hit" if stored is not None else "cache|miss", 1)
    return stored


def served(stored: str, job_id: str, created: float) -> str:
    """A cached document as a new job's result: its id, ``meta.cached``, this request's service timings
    (the engine's own timings say what the original computation cost)."""
    document = json.loads(stored)
    document["job_id"] = job_id
    document["meta"]["cached"] = True
    document["meta"]["timings"].update(queue_s=0.0, total_s=max(0.0, time.time() - created))
    return json.dumps(document)


def put_call(entry: str, document: str, ttl: int, max_bytes: int) -> list:
    return [PUT, 4, entry, INDEX, SIZES, TOTAL, document, ttl, max_bytes, repr(time.time())]
