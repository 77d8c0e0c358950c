"""Request ids and JSON logs (issue 24, item 2) on a live `heta serve` with API keys: X-Request-ID
accepted, replaced when invalid, echoed on every response, stored with the job, named in problem
bodies; every line the API, the worker and the supervisor log is one JSON object with the ids, and
no prompt or key ever reaches the logs (a unique canary string seeded in both)."""

import json
import re
import uuid

import pytest
import redis

from .conftest import serve
from .test_events import read_events

CANARY = f"canary{uuid.uuid4().hex}"
KEY = f"key-{CANARY}"
AUTH = {"Authorization": f"Bearer {KEY}"}
TEXT = f"the cat sat on the {CANARY} mat"
GENERATED = re.compile(r"[0-9a-f]{32}")


@pytest.fixture(scope="module")
def logged(model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("logs")
    with serve(model_dir, tmp, WORKERS=1, API_KEYS=KEY, LOG_FORMAT="json", ACCESS_LOG="true") as server:
        yield server, tmp / "serve.log"


def test_a_request_id_is_echoed_stored_with_the_job_and_shown_in_its_view_and_events(logged):
    server, _ = logged
    answer = server.http.post(
        "/attribute",
        json={"text": TEXT, "config": {"samples": 2}, "wait": 60},
        headers={**AUTH, "X-Request-ID": "caller-req/0001"},
    )
    assert answer.status_code == 200, answer.text
    assert answer.headers["X-Request-ID"] == "caller-req/0001" and "X-Request-ID-Replaced" not in answer.headers
    job_id = answer.json()["job_id"]
    view = server.http.get(f"/jobs/{job_id}", headers=AUTH)
    assert view.json()["request_id"] == "caller-req/0001"
    assert GENERATED.fullmatch(view.headers["X-Request-ID"])  # this GET's own id, generated
    events = read_events(server, job_id, AUTH)
    assert json.loads(events[0][1])["request_id"] == "caller-req/0001" and events[-1][0] == "result"


@pytest.mark.parametrize("given", ["x" * 129, "has space", "tab\there", "ünïcode".encode()])
def test_an_invalid_request_id_is_replaced_and_the_response_says_so(logged, given):
    server, _ = logged
    answer = server.http.get("/models", headers={**AUTH, "X-Request-ID": given})
    assert answer.status_code == 200
    assert GENERATED.fullmatch(answer.headers["X-Request-ID"]) and answer.headers["X-Request-ID-Replaced"] == "true"


def test_the_longest_valid_request_id_is_kept(logged):
    server, _ = logged
    given = "~" * 64 + "!" * 64
    answer = server.http.get("/models", headers={**AUTH, "X-Request-ID": given})
    assert answer.headers["X-Request-ID"] == given and "X-Request-ID-Replaced" not in answer.headers


@pytest.mark.parametrize(
    "method, path, headers, status, code",
    [
        ("GET", "/jobs/nope", AUTH, 404, "job_not_found"),
        ("GET", "/models", {}, 401, "missing_api_key"),
        ("GET", "/models", {"X-API-Key": f"wrong-{CANARY}"}, 403, "invalid_api_key"),
        ("POST", "/attribute", AUTH, 422, "validation_error"),
        ("GET", "/no/such/route", AUTH, 404, "not_found"),
    ],
)
def test_problem_bodies_name_the_request(logged, method, path, headers, status, code):
    server, _ = logged
    answer = server.http.request(method, path, headers={**headers, "X-Request-ID": "prob:1#a"}, json={"text": 5})
    body = answer.json()
    assert (answer.status_code, body["code"]) == (status, code)
    assert answer.headers["X-Request-ID"] == "prob:1#a" and body["instance"] == "urn:heta:request:prob:1%23a"


def test_a_server_error_carries_the_request_id_and_logs_it(logged):
    """A 500 (here a job key of the wrong type in the real Redis: a non-transient Redis error) is
    rendered inside the middleware, so it has the id like any other answer."""
    server, log = logged
    started = next(json.loads(line)["message"] for line in log.read_text().splitlines() if "embedded Redis at" in line)
    store = redis.Redis.from_url(started.split()[3])
    store.set("heta:job:broken", "not a hash")
    answer = server.http.get("/jobs/broken", headers={**AUTH, "X-Request-ID": "boom-1"})
    store.close()
    assert answer.status_code == 500 and answer.json()["code"] == "internal_error"
    assert answer.headers["X-Request-ID"] == "boom-1" and answer.json()["instance"] == "urn:heta:request:boom-1"
    logged_error = [json.loads(line) for line in log.read_text().splitlines() if '"boom-1"' in line]
    assert any(line["level"] == "ERROR" and "WRONGTYPE" in line["exception"] for line in logged_error)


def test_every_log_line_is_json_with_the_ids_and_no_prompt_or_key(logged):
    server, log = logged
    answer = server.http.post(
        "/attribute",
        json={"text": TEXT, "config": {"samples": 2}, "wait": 60},
        headers={**AUTH, "X-Request-ID": "log-check-1"},
    )
    job_id = answer.json()["job_id"]
    server.wait_status(job_id, {"done"}, headers=AUTH)
    server.http.get("/models", headers={"X-API-Key": f"wrong-{CANARY}"})  # a refused key is not logged either
    server.stop()  # the workers' and the supervisor's last lines too
    lines = [line for line in log.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line parses
    assert all(
        set(record) >= {"time", "level", "logger", "message", "request_id", "job_id", "model", "trace_id", "duration"}
        for record in records
    )
    assert not [line for line in lines if CANARY in line]
    loggers = {record["logger"] for record in records}
    assert {"heta.serve", "heta.worker", "uvicorn.access"} <= loggers, loggers
    api = [r for r in records if r["request_id"] == "log-check-1" and r["logger"] == "uvicorn.access"]
    assert api and api[0]["job_id"] == job_id and "POST /attribute" in api[0]["message"]
    worker = [r for r in records if r["job_id"] == job_id and r["logger"] == "heta.worker"]
    assert worker and worker[0]["request_id"] == "log-check-1" and worker[0]["model"] and worker[0]["duration"] > 0
    assert "done" in worker[0]["message"]
