"""Admission refuses everything refusable: every bad request is answered at once with a problem and
writes nothing to Redis — no job record, no stream entry, no idempotency key."""

import pytest

from heta_service import store
from heta_service.connections import EmbeddedRedis, connect

from .conftest import serve

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"  # heta-demo: 7 tokens, 64 positions
# (body, headers, status, code)
BAD = [
    ({"text": PROMPT, "target_text": " 3", "spans": [[5, 2]]}, {}, 422, "invalid_spans"),
    ({"text": PROMPT, "spans": [[-1, 3]]}, {}, 422, "invalid_spans"),
    ({"text": PROMPT, "spans": [[0, 100000]]}, {}, 422, "invalid_spans"),
    ({"input_ids": [5, 6, 7], "spans": [[0, 1]]}, {}, 422, "invalid_spans"),
    ({"input_ids": [5, 6, 7], "config": {"granularity": "word"}}, {}, 422, "no_offsets"),
    ({"text": "   "}, {}, 422, "empty_input"),
    ({"text": PROMPT, "input_ids": [1, 2]}, {}, 422, "validation_error"),
    ({"input_ids": [1, 10**6]}, {}, 422, "invalid_input_ids"),
    ({"text": PROMPT, "target_position": 99}, {}, 422, "target_out_of_range"),
    ({"text": PROMPT, "target_text": ""}, {}, 422, "empty_input"),
    ({"text": PROMPT, "target_text": " 3", "target_position": 2}, {}, 422, "invalid_target"),
    ({"text": PROMPT, "generate": 0}, {}, 422, "validation_error"),
    ({"text": PROMPT, "generate": 100}, {}, 422, "too_many_tokens"),
    ({"text": PROMPT, "config": {"samples": 0}}, {}, 422, "validation_error"),
    ({"text": PROMPT, "config": {"samples": 200}}, {}, 422, "cost_over_ceiling"),
    ({"text": PROMPT, "config": {"mask": "token:999999"}}, {}, 422, "invalid_config"),
    ({"text": PROMPT, "config": {"method": "nope"}}, {}, 422, "invalid_config"),
    ({"text": PROMPT, "config": {"curvature_layers": 99}}, {}, 422, "invalid_config"),
    ({"text": PROMPT, "config": {"method": "gradient", "window": 4}}, {}, 422, "invalid_config"),
    ({"text": PROMPT, "config": {"granularity": "paragraph"}}, {}, 422, "validation_error"),
    ({"messages": [{"role": "wizard", "content": "c=6 ? c"}]}, {}, 422, "invalid_messages"),
    ({"messages": [{"role": "user", "content": "c=6 ? c"}]}, {}, 422, "no_chat_template"),
    ({"model": "gpt2", "text": PROMPT}, {}, 422, "unknown_model"),
    ({"text": " ".join(["c=6"] * 80)}, {}, 422, "too_many_tokens"),
    ({"text": PROMPT, "surprise": 1}, {}, 422, "validation_error"),
    ({"text": PROMPT, "deadline_s": -1}, {}, 422, "validation_error"),
    ({"input_ids": [3]}, {}, 422, "too_short"),
    # what the published schema says (minItems; review finding 2) is refused as a schema violation
    ({"input_ids": []}, {}, 422, "validation_error"),
    ({"messages": []}, {}, 422, "validation_error"),
    ({"text": PROMPT, "response_ids": []}, {}, 422, "validation_error"),
    ({"text": PROMPT, "target_text": " 3", "foil_id": -1}, {}, 422, "validation_error"),
    ({"text": PROMPT, "response_ids": [23, 10**6]}, {}, 422, "invalid_input_ids"),
    ({"text": PROMPT, "response_ids": [23], "target_text": " 3"}, {}, 422, "invalid_target"),
    ({"text": PROMPT, "target_text": " 3", "foil_text": " 3"}, {}, 422, "invalid_foil"),
    ({"text": PROMPT, "target_text": " 3", "foil_text": " 6 7"}, {}, 422, "invalid_foil"),
    ({"text": PROMPT, "target_text": " 3", "foil_id": 10**6}, {}, 422, "invalid_foil"),
    (
        {"text": PROMPT, "target_text": " 3", "foil_text": " 6", "config": {"method": "rollout"}},
        {},
        422,
        "invalid_foil",
    ),
    ({"text": PROMPT, "config": {"preset": "quick"}}, {}, 422, "validation_error"),
    ({"text": PROMPT, "config": {"budget_s": -1}}, {}, 422, "validation_error"),
    ({"text": PROMPT, "config": {"budget_s": 0}}, {}, 422, "validation_error"),
    (b'{"text": "c=6 ? c", "config": {"budget_s": Infinity}}', {}, 422, "validation_error"),
    (b'{"text": "c=6 ? c", "config": {"budget_s": NaN}}', {}, 422, "validation_error"),
    ({"text": PROMPT, "config": {"method": "occlusion", "budget_s": 5}}, {}, 422, "invalid_config"),
    ({"text": PROMPT, "config": {"budget_s": 1e-6}}, {}, 422, "cost_over_ceiling"),
    ({"text": PROMPT}, {"Idempotency-Key": "k" * 300}, 422, "invalid_idempotency_key"),
    (b'{"text": "c=6 \\ud800 ? c"}', {}, 422, "invalid_text"),  # a lone surrogate, as JSON allows
    (b'{"text": "c=6 ? c"', {}, 400, "malformed_body"),
    ('{"text": "caf\u00e9"}'.encode("latin-1"), {}, 400, "malformed_body"),  # not UTF-8
]


def written(client) -> dict:
    """What admission could have written: job records, idempotency keys, entries of any job stream."""
    keys = set(client.scan_iter(match="heta:job:*")) | set(client.scan_iter(match="heta:idem:*"))
    streams = {key: client.xlen(key) for key in client.scan_iter(match="heta:stream:*")}
    return {"keys": keys, "entries": sum(streams.values())}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """heta serve (heta-demo) against a Redis this test can read; a small HVP ceiling."""
    tmp = tmp_path_factory.mktemp("admission")
    redis_server = EmbeddedRedis(tmp / "own-redis")
    try:
        with serve(None, tmp, REDIS_URL=redis_server.url, MAX_HVPS=500, MAX_GENERATE=256) as server:
            yield server, connect(redis_server.url)
    finally:
        redis_server.close()


@pytest.mark.parametrize("path", ["/attribute", "/jobs"])
def test_no_bad_body_creates_a_job(guarded, path):
    server, client = guarded
    assert len(BAD) >= 15
    before = written(client)
    for body, headers, status, code in BAD:
        if isinstance(body, bytes):
            answer = server.http.post(path, content=body, headers={"content-type": "application/json", **headers})
        else:
            answer = server.http.post(path, json=body, headers=headers)
        assert answer.status_code == status and answer.json()["code"] == code, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        if code in ("invalid_config", "validation_error") and b"budget_s" in (
            body if isinstance(body, bytes) else str(body).encode()
        ):
            problem = answer.json()  # the field is named: by the engine's check, or in the schema's errors
            assert problem.get("field") == "budget_s" or any(
                e["loc"][-1] == "budget_s" for e in problem.get("errors", [])
            ), problem
        if code == "cost_over_ceiling" and "budget_s" in str(body):
            estimate = answer.json()["estimate"]  # the cheapest plan's
            assert estimate["seconds"] > 1e-6 and estimate["hvps"] == 0 and answer.json()["field"] == "budget_s"
        assert written(client) == before, f"{body!r} wrote to Redis"
    # the probe sees writes: a good request does create a job record and a stream entry
    accepted = server.http.post("/jobs", json={"text": PROMPT})
    assert accepted.status_code == 202
    after = written(client)
    assert store.job_key(accepted.json()["job_id"]) in after["keys"]
    server.wait_status(accepted.json()["job_id"], {"done"})


def test_contrastive_and_response_ids_requests_run(guarded):
    """A foil and a response produced elsewhere pass admission and come back in the result."""
    server, _ = guarded
    answer = server.http.post(
        "/attribute", json={"text": PROMPT, "response_ids": [23], "foil_text": " 6", "config": {"samples": 2}}
    )
    assert answer.status_code == 200, answer.text
    result = answer.json()
    (target,) = result["targets"]
    assert target["id"] == 23 and target["foil"]["id"] == 26 and target["foil"]["text"].strip() == "6"
    assert target["foil"]["logprob"] < target["logprob"] and result["warnings"] == []
    # the foil is part of the request: the same body without it is another (cacheable) request
    plain = server.http.post("/attribute", json={"text": PROMPT, "response_ids": [23], "config": {"samples": 2}}).json()
    assert plain["targets"][0]["foil"] is None and plain["tokens"] != result["tokens"]


def test_foil_and_response_ids_are_part_of_the_cache_key():
    from heta_service import cache
    from heta_service.schemas import AttributeRequest

    def key(**extra):
        return cache.key("heta-demo", None, *AttributeRequest.model_validate({"text": PROMPT, **extra}).engine_call())

    keys = {
        key(),
        key(response_ids=[23]),
        key(response_ids=[24]),
        key(target_text=" 3", foil_text=" 6"),
        key(target_text=" 3", foil_id=26),
    }
    assert len(keys) == 5


def rate_counts(client) -> int:
    return sum(int(client.get(key) or 0) for key in client.scan_iter(match="heta:rate:*"))


def test_every_submission_counts_once_against_the_rate_limit(guarded):
    """Admission counts a submission inside the enqueue script (no round trip of its own); a request
    refused by admission, by the schema, or answered as an idempotent replay counts all the same."""
    server, client = guarded
    sent = [
        ("/jobs", {"text": PROMPT}, {}, 202),
        ("/jobs", {"text": PROMPT}, {"Idempotency-Key": "counted"}, 202),
        ("/jobs", {"text": PROMPT}, {"Idempotency-Key": "counted"}, 202),  # the replay
        ("/jobs", {"text": PROMPT, "spans": [[5, 2]]}, {}, 422),  # refused by admission
        ("/attribute", {"text": PROMPT, "surprise": 1}, {}, 422),  # refused by the schema
        ("/attribute", {"text": PROMPT, "wait": 30}, {}, 200),
    ]
    before = rate_counts(client)
    for path, body, headers, status in sent:
        assert server.http.post(path, json=body, headers=headers).status_code == status
    assert rate_counts(client) - before == len(sent)


def test_a_submission_past_the_rate_limit_is_refused_and_writes_nothing(guarded):
    from heta_service.auth import hash_key
    from heta_service.ratelimit import window

    server, client = guarded
    now = window()
    full = [
        f"heta:rate:anonymous:{hash_key('127.0.0.1')[:16]}:{w}" for w in (now, now + 1)
    ]  # a minute may turn meanwhile
    for key in full:
        client.set(key, 600, ex=120)  # HETA_RATE_LIMIT_PER_MINUTE's default: this minute is used up
    try:
        before = written(client)
        for path, body in [
            ("/jobs", {"text": PROMPT}),
            ("/attribute", {"text": PROMPT}),
            ("/jobs", {"text": PROMPT, "spans": [[5, 2]]}),
        ]:
            answer = server.http.post(path, json=body)
            assert answer.status_code == 429 and answer.json()["code"] == "rate_limited", answer.text
            assert 0 < int(answer.headers["retry-after"]) <= 61
        assert written(client) == before
    finally:
        client.delete(*full)
