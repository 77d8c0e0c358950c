"""deploy/redis/users.acl against the code: the service user may run every command the service
sends (its Python calls, its Lua scripts, redis-py's own cluster discovery and transactions) and
nothing else, on heta:* keys only; the default user is off. The live proof (a real TLS redis-server
with this file) is tests/service/test_redis_tls.py."""

import re
from fnmatch import fnmatchcase
from pathlib import Path

import pytest
from redis.commands.core import CoreCommands

from heta_service import store

ROOT = Path(__file__).resolve().parents[1]
ACL = ROOT / "deploy" / "redis" / "users.acl"
# whitespace allowed around the dot and before the parenthesis: the formatter may break a long chain before ".xadd("
CALL = re.compile(r"\b(?:client|pipe|self\.client)\s*\.\s*([a-z_]+)\s*\(")
LUA_CALL = re.compile(r"redis\.p?call\(\s*'([A-Za-z]+)'")
METHOD_COMMAND = {"delete": "del", "scan_iter": "scan", "xgroup_create": "xgroup|create", "xpending_range": "xpending"}
# sent by redis-py itself: health checks; a transaction's MULTI/EXEC (DISCARD when one fails); a
# cluster client's discovery of slots and command keys, and its ASKING during a slot migration
CLIENT_LIBRARY = {"ping", "multi", "exec", "discard", "cluster|slots", "cluster|shards", "command", "asking"}
DANGEROUS = {
    "flushall",
    "flushdb",
    "config",
    "keys",
    "debug",
    "shutdown",
    "acl",
    "module",
    "monitor",
    "script",
    "save",
    "bgsave",
    "bgrewriteaof",
    "replicaof",
    "slaveof",
    "migrate",
    "restore",
    "client",
    "function",
    "sync",
    "psync",
    "failover",
    "swapdb",
    "move",
    "object",
    "sort",
    "eval_ro",
    "subscribe",
    "publish",
}


def used_commands() -> set[str]:
    """Every Redis command the service's code sends, read from the code."""
    methods = {name for name in dir(CoreCommands) if not name.startswith("_")} | {"scan_iter"}
    used = set()
    for path in (ROOT / "service").rglob("*.py"):
        text = path.read_text()
        used |= {METHOD_COMMAND.get(m, m) for m in CALL.findall(text) if m in methods}
        used |= {m.lower() for m in LUA_CALL.findall(text)}
    return used


def service_user() -> list[str]:
    lines = [line.split() for line in ACL.read_text().splitlines() if line.strip()]
    users = {line[1]: line[2:] for line in lines if line[0] == "user"}
    assert len(users) == len(lines), "an ACL file holds only user lines (no comments): the guide explains it"
    assert users["default"] == ["off"]
    return users["heta"]


def allowed(rules: list[str]) -> set[str]:
    return {rule[1:].lower() for rule in rules if rule.startswith("+")}


def test_the_code_is_read_for_its_commands():
    # the reader finds what the service is known to send, from Python and from Lua
    assert {"xreadgroup", "xautoclaim", "eval", "blpop", "xgroup|create", "hincrbyfloat", "wait"} <= used_commands()
    assert {"xadd", "zpopmin", "time", "decrby"} <= used_commands()


def test_the_service_user_may_run_every_command_the_code_sends_and_no_other():
    rules = allowed(service_user())
    needed = used_commands() | CLIENT_LIBRARY
    assert needed - rules == set(), "commands the code sends that users.acl refuses"
    assert rules - needed == set(), "commands users.acl allows that nothing sends"


def test_the_service_user_has_no_dangerous_command_and_only_heta_keys():
    rules = service_user()
    assert (
        rules[0] == "on" and rules[1].startswith("#") and len(rules[1]) == 65
    )  # a password hash, never a plaintext one
    assert "nopass" not in rules and not any(rule.startswith(">") for rule in rules)
    assert rules.index("-@all") < min(
        i for i, rule in enumerate(rules) if rule.startswith("+")
    )  # deny first, then allow
    assert [rule for rule in rules if rule.startswith(("~", "%", "allkeys"))] == ["~heta:*"]
    assert "resetchannels" in rules and not any(rule.startswith("&") or rule == "allchannels" for rule in rules)
    assert not any(rule.startswith("+@") for rule in rules)  # no category: each command by name
    granted = {rule.split("|")[0] for rule in allowed(rules)}
    assert granted & DANGEROUS == set()


def key_literals() -> set[str]:
    """The literal beginnings of every key name the code writes (f-strings cut at their first field)."""
    found = set()
    for path in (ROOT / "service").rglob("*.py"):
        found |= {m.split("{", 1)[0] for m in re.findall(r'f?"(heta:[^"]*)"', path.read_text())}
    return found


@pytest.mark.parametrize("cluster", [False, True])
def test_every_key_the_service_uses_is_under_the_users_pattern(cluster):
    store.use_cluster(cluster)
    try:
        keys = {
            store.job_key("j1"),
            store.done_key("j1"),
            store.stream_key("m"),
            store.dead_letter_key("m"),
            store.inflight_key("owner", "m"),
            store.idempotency_key("owner", "digest", "m"),
            store.CACHE_INDEX,
            store.CACHE_SIZES,
            store.CACHE_BYTES,
            store.METRICS_KEY,
            store.WORKER_PREFIX + "w-1",
        }
    finally:
        store.use_cluster(False)
    keys |= key_literals()
    assert len(key_literals()) >= 5 and all(fnmatchcase(key, "heta:*") for key in keys), keys
