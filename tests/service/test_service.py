"""End to end: API → Redis → worker → result, with `heta serve` as a real process tree."""

import os
import signal
import time

import pytest

from heta_core import Attributor, HetaConfig

from .conftest import SLOW, SLOW_TEXT, serve

TEXT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    with serve(
        model_dir,
        tmp_path_factory.mktemp("serve"),
        WORKERS=1,
        MAX_QUEUE_DEPTH=3,
        MAX_BODY_BYTES=20000,
        MAX_HVPS=100000,
        MAX_SAMPLES=1000,
    ) as running:
        yield running


def test_attribute_end_to_end_equals_the_engine(server, model_dir):
    response = server.http.post("/attribute", json={"text": TEXT, "config": {"samples": 3, "seed": 5}, "wait": 30})
    assert response.status_code == 200, response.text
    body = response.json()
    direct = Attributor.from_pretrained(
        model_dir, config=HetaConfig(num_hvp_samples=3, seed=5), device="cpu"
    ).attribute(TEXT)
    assert [t["text"] for t in body["tokens"]] == TEXT.split()[:-1]
    assert [t["score"] for t in body["tokens"]] == pytest.approx(direct.scores.tolist(), rel=1e-6)
    assert [t["position"] for t in body["tokens"]] == list(range(5))
    assert body["targets"][0]["text"] == "mat" and body["meta"]["config"]["seed"] == 5
    timings = body["meta"]["timings"]
    assert timings["compute_s"] > 0 and timings["total_s"] >= timings["queue_s"] + timings["compute_s"] - 1e-3
    assert body["meta"]["config"]["num_hvp_samples"] == 3 and body["job_id"]
    assert body["tokens"][0]["role"] is None


def test_chat_spans_and_aggregates_through_the_service(server):
    body = {
        "messages": [{"role": "user", "content": "the cat sat on the mat ."}],
        "target_text": " the answer",
        "target_mode": "each",
        "config": {"samples": 1, "granularity": "word"},
        "wait": 30,
    }
    response = server.http.post("/attribute", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["target_mode"] == "each" and len(result["targets"]) == 2
    assert {t.get("role") for t in result["tokens"] if not t["template"]} == {"user"}
    assert [m["role"] for m in result["aggregates"]["message"]] == ["user"]
    assert len(result["aggregates"]["word"][0]["score"]) == 2


def test_async_job_progress_and_result(server):
    created = server.http.post("/jobs", json={**SLOW, "config": {"samples": 5}})
    assert created.status_code == 202 and created.headers["location"] == f"/jobs/{created.json()['job_id']}"
    job_id = created.json()["job_id"]
    seen = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = server.http.get(f"/jobs/{job_id}").json()
        seen.add(job["status"])
        if job["status"] == "done":
            break
        assert 0.0 <= job["progress"] <= 1.0
        time.sleep(0.05)
    assert job["status"] == "done" and job["progress"] == 1.0 and job["attempts"] == 1
    assert len(job["result"]["tokens"]) == 119 and "running" in seen


def test_attribute_answers_202_when_not_done_within_wait(server):
    response = server.http.post("/attribute", json={**SLOW, "wait": 0})
    assert response.status_code == 202 and response.headers["location"].startswith("/jobs/")
    job = server.wait_status(response.json()["job_id"], {"done"})
    assert job["result"]["targets"][0]["position"] == 119
    # it ran longer than the 2 s lease on a healthy worker: the heartbeat kept it, it ran once
    assert job["finished"] - job["started"] > 2.0 and job["attempts"] == 1


def test_cancel_queued_and_running_jobs(server):
    running = server.http.post("/jobs", json=SLOW).json()["job_id"]
    queued = server.http.post("/jobs", json={"text": TEXT}).json()["job_id"]
    server.wait_status(running, {"running"})
    cancelled = server.http.delete(f"/jobs/{queued}")
    assert cancelled.status_code == 202 and cancelled.json()["status"] == "cancelled"
    stop = server.http.delete(f"/jobs/{running}")
    assert stop.status_code == 202 and stop.json()["status"] in {"cancelling", "cancelled"}
    job = server.wait_status(running, {"cancelled"}, timeout=20)
    assert job["progress"] < 1.0
    time.sleep(1.0)  # the worker is free now: a queued job that was cancelled must still never run
    never = server.http.get(f"/jobs/{queued}").json()
    assert never["status"] == "cancelled" and never["attempts"] == 0 and never["started"] is None
    again = server.http.delete(f"/jobs/{queued}")
    assert again.status_code == 409 and again.json()["code"] == "job_finished"


def test_idempotency(server):
    body = {"text": TEXT, "config": {"samples": 2}, "wait": 30}
    first = server.http.post("/attribute", json=body, headers={"Idempotency-Key": "abc"})
    second = server.http.post("/attribute", json=body, headers={"Idempotency-Key": "abc"})
    assert first.status_code == second.status_code == 200
    assert first.json()["job_id"] == second.json()["job_id"]
    other = server.http.post(
        "/attribute", json={**body, "text": "the dog ate the bone"}, headers={"Idempotency-Key": "abc"}
    )
    assert other.status_code == 422 and other.json()["code"] == "idempotency_key_reused"
    fresh = server.http.post("/attribute", json=body, headers={"Idempotency-Key": "def"})
    assert fresh.json()["job_id"] != first.json()["job_id"]


def test_full_queue_is_429_with_retry_after(server):
    ids = []
    try:
        for _ in range(3):
            response = server.http.post("/jobs", json=SLOW)
            assert response.status_code == 202, response.text
            ids.append(response.json()["job_id"])
        refused = server.http.post("/jobs", json=SLOW)
        assert refused.status_code == 429 and refused.json()["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) > 0
        assert refused.headers["content-type"] == "application/problem+json"
    finally:
        for job_id in ids:
            server.http.delete(f"/jobs/{job_id}")
        for job_id in ids:
            server.wait_status(job_id, {"cancelled", "done"}, timeout=30)


@pytest.mark.parametrize(
    "body, status, code",
    [
        ({"text": ""}, 422, "empty_input"),
        ({"text": "cat"}, 422, "too_short"),
        ({"input_ids": list(range(4, 34)) * 5}, 422, "too_many_tokens"),
        ({"text": TEXT, "model": "gpt2"}, 422, "unknown_model"),
        ({"text": TEXT, "config": {"samples": 0}}, 422, "validation_error"),
        ({"text": TEXT, "config": {"mask": "blank"}}, 422, "invalid_config"),
        ({"text": TEXT, "config": {"temperature": 1}}, 422, "validation_error"),
        ({"text": TEXT, "input_ids": [4, 5]}, 422, "validation_error"),
        ({"text": TEXT, "target_position": 50}, 422, "target_out_of_range"),
        ({"text": TEXT, "spans": [[0, 500]]}, 422, "invalid_spans"),
        ({"messages": [{"role": "wizard", "content": "the cat"}]}, 422, "invalid_messages"),
        ({"text": SLOW_TEXT, "config": {"samples": 1000}}, 422, "cost_over_ceiling"),
        ({"text": "x" * 30000}, 413, "body_too_large"),
    ],
)
def test_bad_requests_are_problems_never_500(server, body, status, code):
    response = server.http.post("/attribute", json=body)
    assert response.status_code == status, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["code"] == code and problem["status"] == status and problem["detail"] and problem["title"]


def test_malformed_bodies_unknown_routes_and_unknown_jobs_are_problems(server):
    for body in (b"{not json", '{"text": "caf\u00e9"}'.encode("latin-1")):  # broken JSON; not UTF-8
        broken = server.http.post("/attribute", content=body, headers={"content-type": "application/json"})
        assert broken.status_code == 400 and broken.json()["code"] == "malformed_body", broken.text
        assert broken.headers["content-type"] == "application/problem+json"
    for method, path, status, code in (
        ("GET", "/nowhere", 404, "not_found"),
        ("PUT", "/attribute", 405, "method_not_allowed"),
    ):
        answer = server.http.request(method, path)
        assert (answer.status_code, answer.json()["code"]) == (status, code)
        assert answer.headers["content-type"] == "application/problem+json"
    missing = server.http.get("/jobs/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "job_not_found"
    assert server.http.delete("/jobs/nope").status_code == 404


def test_deadline_exceeded_is_504(server):
    response = server.http.post("/attribute", json={**SLOW, "deadline_s": 1, "wait": 30})
    assert response.status_code == 504, response.text
    assert response.json()["code"] == "deadline_exceeded"


def test_models_health_and_metrics(server, model_dir):
    models = server.http.get("/models").json()
    assert models["default"] == model_dir
    assert models["models"][0] | {"devices": None} == {
        "name": model_dir,
        "model_type": "gpt2",
        "dtype": "float64",
        "devices": None,
        "workers": 1,
        "max_tokens": 128,
        "placement": {
            "dtype": "float64",
            "quantization": None,
            "device_map": {},
            "requested_device_map": None,
            "gpus_per_worker": 1,
            "loaded": True,
        },
        "cuda_graphs": None,  # HETA_CUDA_GRAPHS is off
    }
    assert server.http.get("/healthz").json() == {"status": "ok"}
    assert server.http.get("/readyz").json()["ready"] is True
    assert server.metric('heta_jobs_total{outcome="done"}') >= 3
    assert server.metric('heta_jobs_total{outcome="cancelled"}') >= 1
    assert server.metric("heta_hvps_total") > 0
    assert server.metric('heta_compute_seconds_total{method="heta",stage="hessian"}') > 0
    assert server.metric('heta_requests_total{method="POST",route="/attribute",status="200"}') >= 1
    assert server.metric("heta_job_seconds_count") >= 3
    text = server.http.get("/metrics").text
    assert (
        'heta_queue_depth{model="' in text
        and "heta_oldest_job_age_seconds" in text
        and 'heta_workers{state="idle"}' in text
    )
    assert 'heta_job_seconds_bucket{le="600.0"}' in text


def test_openapi_documents_the_routes(server):
    paths = server.http.get("/openapi.json").json()["paths"]
    assert {"/attribute", "/jobs", "/jobs/{job_id}", "/models", "/healthz", "/readyz", "/metrics"} <= set(paths)
    assert server.http.get("/docs").status_code == 200


def test_sigkill_of_a_worker_mid_job_completes_the_job_once(server):
    before = server.metric('heta_jobs_total{outcome="done"}')
    job_id = server.http.post("/jobs", json=SLOW).json()["job_id"]
    job = server.wait_status(job_id, {"running"})
    pid = int(job["worker"].split("-")[-2])
    assert pid in server.worker_pids()
    os.kill(pid, signal.SIGKILL)
    done = server.wait_status(job_id, {"done"}, timeout=90)
    assert done["attempts"] == 2  # the killed delivery and the reclaimed one
    assert server.metric('heta_jobs_total{outcome="done"}') == before + 1  # completed once
    assert server.metric('heta_jobs_total{outcome="reclaimed"}') >= 1
    assert pid not in server.worker_pids() and len(server.worker_pids()) == 1  # the supervisor replaced it
    assert job["status"] == "running"


def test_a_worker_of_two_models_runs_every_job_it_is_handed(model_dir, tmp_path):
    """XREADGROUP's COUNT counts per stream: a worker serving two models, free again while both
    queues hold a job, is handed one of each at once. It must run both, not leave one pending until
    its lease runs out (120 s here) and another worker reclaims it."""
    with serve(model_dir, tmp_path, MODELS=f"{model_dir},heta-demo", WORKERS=1, LEASE_S=120) as running:
        busy = running.http.post("/jobs", json={**SLOW, "model": model_dir}).json()["job_id"]
        running.wait_status(busy, {"running"})
        queued = [
            running.http.post("/jobs", json=body).json()["job_id"]
            for body in ({"model": model_dir, "text": TEXT}, {"model": "heta-demo", "text": "c=6 e=6 b=3 h=3 m=6 ? h"})
        ]
        finished = [running.wait_status(job_id, {"done", "failed"}, timeout=60) for job_id in [busy, *queued]]
        assert [job["status"] for job in finished] == ["done"] * 3
        assert [job["attempts"] for job in finished] == [1, 1, 1]
        assert max(job["finished"] for job in finished) - finished[0]["finished"] < 30  # not a lease later
