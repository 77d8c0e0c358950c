"""API keys and rate limits; `heta api` and `heta worker` as separate processes sharing one Redis."""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from heta_service.connections import EmbeddedRedis

from ..helpers import heta_command
from .conftest import Server, base_env, free_port, serve

TEXT = "the cat sat on the mat"
KEYS = {"alice": "key-alice", "bob": "key-bob", "carol": "key-carol"}


@pytest.fixture(scope="module")
def secured(model_dir, tmp_path_factory):
    import hashlib

    stored = ",".join([KEYS["alice"], KEYS["bob"], "sha256:" + hashlib.sha256(KEYS["carol"].encode()).hexdigest()])
    with serve(
        model_dir,
        tmp_path_factory.mktemp("secured"),
        WORKERS=1,
        API_KEYS=stored,
        METRICS_PUBLIC="false",
        RATE_LIMIT_PER_MINUTE=40,
        MAX_INFLIGHT_PER_KEY=2,
    ) as running:
        yield running


def auth(who: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[who]}"}


ROUTES = [
    ("POST", "/attribute"),
    ("POST", "/jobs"),
    ("GET", "/jobs/x"),
    ("DELETE", "/jobs/x"),
    ("GET", "/models"),
    ("GET", "/metrics"),
]


@pytest.mark.parametrize("method, path", ROUTES)
def test_every_protected_route_needs_a_valid_key(secured, method, path):
    body = {"json": {"text": TEXT}} if method == "POST" else {}
    missing = secured.http.request(method, path, **body)
    assert missing.status_code == 401 and missing.json()["code"] == "missing_api_key"
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = secured.http.request(method, path, headers={"Authorization": "Bearer nope"}, **body)
    assert wrong.status_code == 403 and wrong.json()["code"] == "invalid_api_key"
    ok = secured.http.request(method, path, headers={"X-API-Key": KEYS["bob"]}, **body)
    assert ok.status_code in (200, 202, 404), ok.text


def test_health_and_readiness_are_open(secured):
    assert secured.http.get("/healthz").status_code == 200
    assert secured.http.get("/readyz").status_code == 200


def test_keys_see_only_their_own_jobs_and_hashed_keys_work(secured):
    created = secured.http.post("/jobs", json={"text": TEXT}, headers=auth("alice")).json()["job_id"]
    assert secured.http.get(f"/jobs/{created}", headers=auth("alice")).status_code == 200
    other = secured.http.get(f"/jobs/{created}", headers=auth("carol"))  # carol's key is configured as a sha256 digest
    assert other.status_code == 404 and other.json()["code"] == "job_not_found"
    secured.wait_status(created, {"done"}, headers=auth("alice"))
    same_key = secured.http.post(
        "/attribute", json={"text": TEXT, "wait": 30}, headers={**auth("alice"), "Idempotency-Key": "k"}
    )
    other_key = secured.http.post(
        "/attribute", json={"text": TEXT, "wait": 30}, headers={**auth("carol"), "Idempotency-Key": "k"}
    )
    assert same_key.json()["job_id"] != other_key.json()["job_id"]  # idempotency is per (API key, key)


def test_rate_limit_per_key_with_retry_after(secured):
    # a fixed one-minute window: within 2 × 40 + 1 requests at least one window overflows
    limited = None
    for _ in range(81):
        response = secured.http.get("/models", headers=auth("carol"))
        if response.status_code == 429:
            limited = response
            break
        assert response.status_code == 200
    assert limited is not None and limited.json()["code"] == "rate_limited"
    assert 0 < int(limited.headers["retry-after"]) <= 61
    assert secured.http.get("/models", headers=auth("bob")).status_code == 200  # other keys are unaffected


@contextlib.contextmanager
def split_deployment(model_dir, tmp, **settings):
    """An embedded Redis, one `heta api` and one `heta worker`, each a separate process."""
    redis_server = EmbeddedRedis(tmp / "redis")
    port = free_port()
    env = base_env(model_dir, tmp, PORT=port, REDIS_URL=redis_server.url, **settings)
    logs = open(tmp / "split.log", "w")
    api = subprocess.Popen(heta_command("api"), env=env, stdout=logs, stderr=subprocess.STDOUT)
    worker = subprocess.Popen(heta_command("worker"), env=env, stdout=logs, stderr=subprocess.STDOUT)
    server = Server(f"http://127.0.0.1:{port}", [api, worker], env)
    try:
        server.wait_ready()
        yield server, api, worker, redis_server
    finally:
        server.procs = [p for p in server.procs if p.poll() is None]
        server.stop()
        with contextlib.suppress(Exception):
            redis_server.close()
        logs.close()


def test_readyz_turns_false_when_the_last_worker_dies_and_redis_outage_is_503(model_dir, tmp_path):
    with split_deployment(model_dir, tmp_path) as (server, api, worker, redis_server):
        done = server.http.post("/attribute", json={"text": TEXT, "wait": 30})
        assert done.status_code == 200
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
        deadline = time.monotonic() + 15
        while server.http.get("/readyz").status_code == 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        ready = server.http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["models_without_workers"] == [model_dir]
        queued = server.http.post("/attribute", json={"text": TEXT, "wait": 0.5})
        assert queued.status_code == 202  # accepted work waits in Redis for a worker, it is not lost

        redis_server.close()
        down = server.http.post("/attribute", json={"text": TEXT})
        assert down.status_code == 503 and down.json()["code"] == "redis_unavailable"
        assert server.http.get("/readyz").status_code == 503
        assert server.http.get("/healthz").status_code == 200


def test_commands_need_redis_and_models(model_dir, tmp_path):
    env = base_env(model_dir, tmp_path)
    for command in ("api", "worker"):
        done = subprocess.run(heta_command(command), env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "REDIS_URL" in done.stderr
    env["HETA_MODELS"] = ""  # unset means heta-demo; explicitly empty means nothing to serve
    done = subprocess.run(heta_command("serve"), env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "no models" in done.stderr


def test_sigterm_drains_the_worker_and_finishes_the_current_job(model_dir, tmp_path):
    from .conftest import SLOW

    # a drain window far above the job's length: on a loaded machine the 5 s default can expire,
    # and then the job is (correctly) handed back to the queue instead of finished
    with split_deployment(model_dir, tmp_path, DRAIN_S=120) as (server, api, worker, _):
        job_id = server.http.post("/jobs", json={**SLOW, "config": {"samples": 5}}).json()["job_id"]
        server.wait_status(job_id, {"running"})
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        assert server.http.get(f"/jobs/{job_id}").json()["status"] == "done"
        assert httpx.get(server.url + "/readyz").status_code == 503


def test_sigterm_to_serve_stops_its_workers(model_dir, tmp_path):
    from ..helpers import alive

    with serve(model_dir, tmp_path, WORKERS=2) as server:
        mine = server.worker_pids()
        assert len(mine) == 2  # `heta worker` processes started by this serve
        proc = server.procs[0]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in mine) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(pid) for pid in mine)


def test_inflight_jobs_per_key_are_bounded(secured):
    from .conftest import SLOW

    ids = [secured.http.post("/jobs", json=SLOW, headers=auth("bob")).json()["job_id"] for _ in range(2)]
    try:
        refused = secured.http.post("/jobs", json=SLOW, headers=auth("bob"))
        assert refused.status_code == 429 and refused.json()["code"] == "too_many_inflight"
        assert "retry-after" in refused.headers
        assert secured.http.post("/jobs", json={"text": TEXT}, headers=auth("alice")).status_code == 202  # per key
    finally:
        for job_id in ids:
            secured.http.delete(f"/jobs/{job_id}", headers=auth("bob"))


def test_a_job_whose_workers_keep_dying_is_dead_lettered(model_dir, tmp_path):
    from .conftest import SLOW

    with serve(model_dir, tmp_path, WORKERS=1, MAX_DELIVERIES=1) as server:
        job_id = server.http.post("/jobs", json=SLOW).json()["job_id"]
        job = server.wait_status(job_id, {"running"})
        os.kill(int(job["worker"].split("-")[-2]), signal.SIGKILL)
        dead = server.wait_status(job_id, {"dead_lettered"}, timeout=90)
        assert dead["error"]["code"] == "dead_lettered" and "delivered 2 times" in dead["error"]["detail"]
        assert server.metric('heta_jobs_total{outcome="dead_lettered"}') == 1
        after = server.http.post("/attribute", json={"text": TEXT, "wait": 30})
        assert after.status_code == 200  # the replacement worker keeps serving
        assert len(server.worker_pids()) == 1  # the supervisor replaced the killed one


SECRET_PROMPT = "the zebra of secrets sat on the mat"  # must never appear in logs


def test_a_key_can_neither_cancel_nor_purge_another_keys_job_and_purges_its_own(secured):
    job_id = secured.http.post("/jobs", json={"text": SECRET_PROMPT}, headers=auth("alice")).json()["job_id"]
    for request in ({}, {"params": {"purge": "true"}}):
        other = secured.http.delete(f"/jobs/{job_id}", headers=auth("bob"), **request)
        assert other.status_code == 404 and other.json()["code"] == "job_not_found"
    first = secured.http.delete(f"/jobs/{job_id}", params={"purge": "true"}, headers=auth("alice"))
    assert first.status_code in (204, 409)  # 204: it had finished already (a fast machine) and is purged
    if first.status_code == 409:  # job_running while unfinished: purged once it is done
        assert first.json()["code"] == "job_running"
        secured.wait_status(job_id, {"done"}, headers=auth("alice"))
        assert secured.http.get(f"/jobs/{job_id}", headers=auth("bob")).status_code == 404
        assert (
            secured.http.delete(f"/jobs/{job_id}", params={"purge": "true"}, headers=auth("alice")).status_code == 204
        )
    gone = secured.http.get(f"/jobs/{job_id}", headers=auth("alice"))
    assert gone.status_code == 404  # the stored prompt and result are deleted, not only hidden


@pytest.mark.parametrize(
    "model", ["../tiny-gpt2", "/etc/passwd", "http://example.com/model", "gpt2", "heta-demo", " x", "models/../x"]
)
def test_the_model_allowlist_cannot_be_bypassed(secured, model_dir, model):
    for name in (model, model_dir + "/../tiny-gpt2", model_dir + "/"):
        answer = secured.http.post("/jobs", json={"model": name, "text": TEXT}, headers=auth("bob"))
        assert answer.status_code == 422 and answer.json()["code"] == "unknown_model", name


def test_api_documentation_is_public_and_carries_no_secrets(secured):
    """A choice (README): the schema and the docs pages describe the API, they hold no data, and
    clients generate code from them; everything that reads or writes data needs a key."""
    for path in ("/openapi.json", "/docs", "/redoc"):
        assert secured.http.get(path).status_code == 200
    schema = secured.http.get("/openapi.json").text
    assert not any(key in schema for key in KEYS.values())
    guide = secured.http.get("/guide/")  # the documentation site, public too (built or not: never a key problem)
    assert guide.status_code == 200 or guide.json()["code"] == "guide_not_built", guide.text


def test_logs_and_error_bodies_hold_no_keys_and_no_prompts(secured):
    bad = secured.http.post("/jobs", json={"text": SECRET_PROMPT, "input_ids": [1]}, headers=auth("alice"))
    assert bad.status_code == 422 and SECRET_PROMPT not in bad.text
    wrong = secured.http.get("/models", headers={"Authorization": "Bearer " + KEYS["alice"] + "x"})
    assert wrong.status_code == 403 and KEYS["alice"] not in wrong.text
    done = secured.http.post("/attribute", json={"text": SECRET_PROMPT, "wait": 30}, headers=auth("alice"))
    assert done.status_code == 200
    log = (Path(secured.env["HETA_REDIS_DIR"]).parent / "serve.log").read_text()
    assert SECRET_PROMPT not in log and not any(key in log for key in KEYS.values())


def test_guessing_keys_is_rate_limited_per_client(model_dir, tmp_path):
    with serve(model_dir, tmp_path, API_KEYS=KEYS["alice"], AUTH_FAILURES_PER_MINUTE=5) as server:
        answers = [server.http.get("/models", headers={"Authorization": f"Bearer guess-{i}"}) for i in range(12)]
        codes = [a.status_code for a in answers]
        # a fixed one-minute window: at most 2 × 5 failures pass before 429s, even across a boundary
        assert codes.count(403) <= 10 and codes[-1] == 429, codes
        assert answers[-1].json()["code"] == "rate_limited" and int(answers[-1].headers["retry-after"]) <= 61
        assert server.http.get("/models", headers=auth("alice")).status_code == 200  # the right key still works
