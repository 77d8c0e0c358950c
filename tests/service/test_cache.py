"""The result cache on a live `heta serve` (heta-demo, two API keys): a repeated request is answered
from Redis with `meta.cached: true` and no compute, as a new job of the caller; anything that changes
the computation (seed, config, input) misses; the size bound drops the oldest entries."""

import time

import pytest

from heta_core import Attributor
from heta_service.schemas import AttributeRequest, job_result_json

from .conftest import serve

K1 = {"Authorization": "Bearer k1"}
K2 = {"Authorization": "Bearer k2"}
BODY = {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3", "config": {"samples": 40}}


def attribute(server, body, headers=K1) -> tuple[dict, float]:
    started = time.perf_counter()
    answer = server.http.post("/attribute", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    return answer.json(), time.perf_counter() - started


def scores(result: dict) -> list[float]:
    return [t["score"] for t in result["tokens"]]


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    with serve(None, tmp_path_factory.mktemp("cache"), API_KEYS="k1,k2", CACHE_TTL_S=600) as server:
        yield server


def test_a_repeated_request_is_answered_without_compute(cached):
    done_before = cached.metric('heta_jobs_total{outcome="done"}', K1)
    first, miss_s = attribute(cached, BODY)
    again, hit_s = attribute(cached, BODY)
    assert first["meta"]["cached"] is False and again["meta"]["cached"] is True
    assert again["job_id"] != first["job_id"] and scores(again) == scores(first)
    # the engine's own timings are the original run's; the service's say what this request took
    assert (
        again["meta"]["timings"]["compute_s"] == first["meta"]["timings"]["compute_s"]
        and again["meta"]["timings"]["queue_s"] == 0
    )
    job = cached.http.get(f"/jobs/{again['job_id']}", headers=K1).json()
    assert job["status"] == "done" and job["attempts"] == 0 and job["worker"] is None  # no worker touched it
    assert cached.metric('heta_jobs_total{outcome="done"}', K1) == done_before + 1  # one computation
    print(f"cache: miss {miss_s * 1000:.1f} ms, hit {hit_s * 1000:.1f} ms")


def test_only_an_identical_computation_hits(cached):
    attribute(cached, BODY)
    for changed in (
        {**BODY, "config": {**BODY["config"], "seed": 7}},  # another seed: other Hessian probes
        {**BODY, "config": {**BODY["config"], "normalize": "none"}},
        {**BODY, "text": BODY["text"].replace("h=3", "h=4"), "target_text": " 4"},
        {**BODY, "config": {**BODY["config"], "method": "occlusion"}},
    ):
        assert attribute(cached, changed)[0]["meta"]["cached"] is False, changed
    # the same computation spelled with the engine's defaults written out is the same entry
    explicit = {**BODY, "config": {**BODY["config"], "seed": 0, "method": "heta"}}
    assert attribute(cached, explicit)[0]["meta"]["cached"] is True


def test_keys_share_results_but_never_jobs(cached):
    mine, _ = attribute(cached, BODY, K1)
    theirs, _ = attribute(cached, BODY, K2)
    assert theirs["meta"]["cached"] is True and scores(theirs) == scores(mine)
    assert cached.http.get(f"/jobs/{theirs['job_id']}", headers=K2).status_code == 200
    assert cached.http.get(f"/jobs/{theirs['job_id']}", headers=K1).status_code == 404  # K2's job, not K1's


def test_cache_metrics_count_hits_misses_and_bytes(cached):
    hits = cached.metric('heta_cache_requests_total{result="hit"}', K1)
    misses = cached.metric('heta_cache_requests_total{result="miss"}', K1)
    body = {**BODY, "config": {**BODY["config"], "seed": 99}}
    attribute(cached, body)
    attribute(cached, body)
    assert cached.metric('heta_cache_requests_total{result="miss"}', K1) == misses + 1
    assert cached.metric('heta_cache_requests_total{result="hit"}', K1) == hits + 1
    assert cached.metric("heta_cache_bytes", K1) > 0


def test_the_size_bound_drops_the_oldest_results(tmp_path):
    request = AttributeRequest.model_validate(BODY)
    kwargs, config = request.engine_call()
    size = len(
        job_result_json(Attributor.from_pretrained("heta-demo").attribute(**kwargs, config=config), "x" * 41, 0.0, 0.0)
    )
    bound = int(2.5 * size)  # room for two results of this size (give or take a few bytes of timings), not three
    with serve(None, tmp_path, CACHE_TTL_S=600, CACHE_MAX_BYTES=bound) as server:
        bodies = [{**BODY, "config": {**BODY["config"], "seed": seed}} for seed in (1, 2, 3)]
        for body in bodies:
            assert attribute(server, body, {})[0]["meta"]["cached"] is False
        assert 0 < server.metric("heta_cache_bytes") <= bound
        assert attribute(server, bodies[2], {})[0]["meta"]["cached"] is True  # the newest stayed
        assert attribute(server, bodies[0], {})[0]["meta"]["cached"] is False  # the oldest was dropped


def test_the_cache_is_off_by_default(tmp_path):
    with serve(None, tmp_path) as server:
        assert [attribute(server, BODY, {})[0]["meta"]["cached"] for _ in range(2)] == [False, False]
        assert server.metric('heta_cache_requests_total{result="miss"}') == 0
