"""GET /jobs/{id}/events (server-sent events), GET /jobs/{id}/report and GET /queue on a live `heta
serve` with API keys, read with a plain HTTP client; and the explorer page asking for a key."""

import json
import time

import jsonschema
import pytest

from .browser import OfflinePage, chromium
from .conftest import serve
from .test_contract import schema_validator

PROMPT = "c=6 e=6 b=3 h=3 m=6 ? h"
K1 = {"Authorization": "Bearer k1"}
K2 = {"X-API-Key": "k2"}
# several seconds of work on heta-demo: progress moves through its chunks
LONG = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2", "config": {"samples": 400}}


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    with serve(None, tmp_path_factory.mktemp("events"), API_KEYS="k1,k2") as server:
        yield server


def read_events(server, job_id: str, headers: dict, keepalive: float = 15, limit: float = 120) -> list[tuple[str, str]]:
    """Every (event, data) of the stream, keep-alive comments as ("comment", text), until it closes."""
    events, lines = [], []
    with server.http.stream(
        "GET", f"/jobs/{job_id}/events", params={"keepalive": keepalive}, headers=headers, timeout=limit
    ) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line:
                lines.append(line)
                continue
            for item in lines:
                if item.startswith(":"):
                    events.append(("comment", item[1:].strip()))
            fields = dict(item.split(": ", 1) for item in lines if not item.startswith(":"))
            if fields:
                events.append((fields["event"], fields["data"]))
            lines = []
    return events


def submit(server, body: dict, headers: dict) -> str:
    answer = server.http.post("/jobs", json=body, headers=headers)
    assert answer.status_code == 202, answer.text
    return answer.json()["job_id"]


def test_events_arrive_in_order_and_end_with_the_result(keyed):
    body = {**LONG, "config": {**LONG["config"], "diagnostics": True}}
    job_id = submit(keyed, body, {**K1, "Idempotency-Key": "events-in-order"})
    started = time.monotonic()
    events = read_events(keyed, job_id, K1)
    seconds = time.monotonic() - started
    names = [name for name, _ in events if name != "comment"]
    assert names[0] == "status" and names[-1] == "result" and names.count("result") == 1
    statuses = [json.loads(data)["status"] for name, data in events if name == "status"]
    assert statuses[-1] == "done" and statuses == sorted(set(statuses), key=["queued", "running", "done"].index)
    # one event per change: a status event when the status changes, a progress event when only the progress does
    last = None
    for name, data in events:
        if name in ("status", "progress"):
            value = json.loads(data)["progress"]
            assert last is None or value >= last
            assert name == "status" or value != last, events
            last = value
    assert last == 1.0
    moving = {json.loads(data)["progress"] for name, data in events if name == "progress"}
    assert len([p for p in moving if 0 < p < 1]) >= 2  # the bar moves, not just 0 → 1
    job = keyed.http.get(f"/jobs/{job_id}", headers=K1).json()
    result = events[-1][1]
    assert json.loads(result) == job["result"]
    # the stored document, byte for byte: what POST /attribute answers for the finished job (the replay)
    assert result == keyed.http.post("/attribute", json=body, headers={**K1, "Idempotency-Key": "events-in-order"}).text
    assert json.loads(result)["diagnostics"]["rows"][0]["points"][1]["k"] == 3
    # a finished job's stream says so at once and closes
    again = read_events(keyed, job_id, K1)
    assert [name for name, _ in again] == ["status", "result"] and again[-1][1] == result
    print(f"events of a {seconds:.1f} s job: {names.count('progress')} progress events")


def test_a_heta_job_streams_its_partial_results_before_the_result(keyed):
    """The flow, then flow and KL, each a full JobResult with `partial: true`, while the Hessian stage runs;
    GET /jobs/{id} carries the latest; POST /attribute?partial=true answers it on time-out; done drops it."""
    spec = keyed.http.get("/openapi.json").json()
    job_id = submit(keyed, LONG, K1)
    events = read_events(keyed, job_id, K1)
    names = [name for name, _ in events if name in ("partial", "result")]
    assert names == ["partial", "partial", "result"], names
    partials = [json.loads(data) for name, data in events if name == "partial"]
    final = json.loads(events[-1][1])
    assert [p["stages_done"] for p in partials] == [["flow"], ["flow", "kl"]] and final["stages_done"] == [
        "flow",
        "kl",
        "hessian",
    ]
    for partial in partials:
        schema_validator(spec, "JobResult").validate(partial)
        assert partial["partial"] is True and partial["job_id"] == job_id
        assert [t["flow"] for t in partial["tokens"]] == [t["flow"] for t in final["tokens"]]
        assert all(t["hessian"] is None for t in partial["tokens"])
    assert [t["kl"] for t in partials[1]["tokens"]] == [t["kl"] for t in final["tokens"]]
    assert final["partial"] is False and "partial" not in keyed.http.get(f"/jobs/{job_id}", headers=K1).json()
    # while running: the job view and POST /attribute?partial=true carry the latest partial
    twice = {**K1, "Idempotency-Key": "partial-twice"}
    slow = {**LONG, "config": {"samples": 1000}}  # runs until cancelled below
    answer = keyed.http.post("/attribute", params={"partial": "true"}, json={**slow, "wait": 0.0}, headers=twice)
    assert answer.status_code == 202 and set(answer.json()) == {"job_id", "status"}  # nothing known yet: the bare 202
    running = answer.json()["job_id"]
    deadline = time.monotonic() + 60
    while (
        "partial" not in (view := keyed.http.get(f"/jobs/{running}", headers=K1).json()) and time.monotonic() < deadline
    ):
        time.sleep(0.05)
    assert (
        view["status"] == "running"
        and view["partial"]["partial"] is True
        and view["partial"]["stages_done"][0] == "flow"
    )
    schema_validator(spec, "JobView").validate(view)
    twin = keyed.http.post("/attribute", params={"partial": "true"}, json={**slow, "wait": 0.5}, headers=twice)
    body = twin.json()
    assert twin.status_code == 202 and twin.headers["location"] == f"/jobs/{running}"
    assert body["partial"] is True and body["job_id"] == running and body["stages_done"] == ["flow", "kl"]
    schema_validator(spec, "JobResult").validate(body)
    # without partial=true a time-out is the bare 202
    bare = keyed.http.post("/attribute", json={**slow, "wait": 0.5}, headers=twice)
    assert bare.status_code == 202 and set(bare.json()) == {"job_id", "status"}
    keyed.http.delete(f"/jobs/{running}", headers=K1)
    cancelled = keyed.wait_status(running, {"cancelled"}, headers=K1)
    assert cancelled["partial"]["stages_done"] == ["flow", "kl"]  # what it knew when it was cancelled stays readable


def test_a_waiting_job_gets_keep_alives_and_its_cancellation_ends_the_stream(keyed):
    blocker = submit(
        keyed, {**LONG, "config": {"samples": 1000}}, K1
    )  # the one worker is busy with this while the next job waits
    waiting = submit(keyed, {"text": PROMPT, "target_text": " 3"}, K1)
    events = []
    with keyed.http.stream(
        "GET", f"/jobs/{waiting}/events", params={"keepalive": 0.5}, headers=K1, timeout=60
    ) as response:
        lines = response.iter_lines()
        for line in lines:
            events.append(line)
            if sum(1 for e in events if e.startswith(":")) == 2:
                assert keyed.http.delete(f"/jobs/{waiting}", headers=K1).status_code == 202
                break
        events += list(lines)
    assert events[0] == "event: status" and json.loads(events[1].removeprefix("data: "))["status"] == "queued"
    assert events.count(": keep-alive") >= 2
    tail = [e for e in events if e.startswith(("event:", "data:"))][-4:]
    assert tail[0] == "event: status" and json.loads(tail[1].removeprefix("data: "))["status"] == "cancelled"
    problem = json.loads(tail[3].removeprefix("data: "))
    assert tail[2] == "event: problem" and (problem["status"], problem["code"]) == (409, "cancelled")
    keyed.http.delete(f"/jobs/{blocker}", headers=K1)


def test_the_stream_has_the_same_auth_as_the_job(keyed):
    job_id = submit(keyed, {"text": PROMPT, "target_text": " 3"}, K1)
    assert keyed.http.get(f"/jobs/{job_id}/events", headers=K2).status_code == 404  # another key's job
    assert keyed.http.get(f"/jobs/{job_id}/events").status_code == 401
    wrong = keyed.http.get(f"/jobs/{job_id}/events", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.headers["content-type"] == "application/problem+json"
    assert keyed.http.get("/jobs/unknown/events", headers=K1).json()["code"] == "job_not_found"
    assert read_events(keyed, job_id, K1)[-1][0] == "result"


def test_report_and_queue_routes(keyed):
    done = submit(keyed, {"text": PROMPT, "target_text": " 3"}, K2)
    read_events(keyed, done, K2)
    report = keyed.http.get(f"/jobs/{done}/report", headers=K2)
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/html")
    assert "http://" not in report.text and "https://" not in report.text and done in report.text
    assert keyed.http.get(f"/jobs/{done}/report", headers=K1).status_code == 404
    running = submit(keyed, LONG, K2)
    not_done = keyed.http.get(f"/jobs/{running}/report", headers=K2)
    assert not_done.status_code == 409 and not_done.json()["code"] == "job_not_done"
    queue = keyed.http.get("/queue", headers=K2).json()
    assert [j["job_id"] for j in queue["jobs"]][:2] == [running, done]  # newest first, only k2's
    assert (
        queue["jobs"][1]["status"] == "done"
        and queue["jobs"][1]["summary"] == PROMPT
        and queue["jobs"][1]["method"] == "heta"
    )
    (model,) = queue["models"]
    assert model["model"] == "heta-demo" and model["workers_busy"] + model["workers_idle"] == 1
    assert not {j["job_id"] for j in keyed.http.get("/queue", headers=K1).json()["jobs"]} & {done, running}
    keyed.http.delete(f"/jobs/{running}", headers=K2)
    cancelled = keyed.http.get(f"/jobs/{running}/report", headers=K2)
    assert keyed.http.get("/queue").status_code == 401
    assert cancelled.status_code in (409,) and cancelled.json()["code"] in ("cancelled", "job_not_done")


def test_openapi_documents_the_stream_and_its_events_match_it(keyed):
    spec = keyed.http.get("/openapi.json").json()
    events = spec["paths"]["/jobs/{job_id}/events"]["get"]
    assert list(events["responses"]["200"]["content"]) == ["text/event-stream"]
    assert {"401", "403", "404"} <= set(events["responses"])
    assert "keep-alive" in events["description"] and "`result`" in events["description"]
    # each event validates against the published per-event schema; each data line against its own schema
    schemas = {"status": "JobView", "partial": "JobResult", "result": "JobResult", "problem": "ProblemDetails"}
    per_event = jsonschema.Draft202012Validator(events["responses"]["200"]["content"]["text/event-stream"]["schema"])
    done = submit(keyed, {"text": PROMPT, "target_text": " 3"}, K1)
    cancelled = submit(keyed, {"text": PROMPT}, K1)
    keyed.http.delete(f"/jobs/{cancelled}", headers=K1)
    seen = set()
    for job_id in (done, cancelled):
        for name, data in read_events(keyed, job_id, K1):
            per_event.validate({"event": name, "data": data})
            if name in schemas:
                schema_validator(spec, schemas[name]).validate(json.loads(data))
            seen.add(name)
    assert {"status", "result", "problem"} <= seen <= set(schemas)  # `partial` when the stream sees the job run


def test_the_page_asks_for_a_key_and_says_when_it_is_wrong(keyed):
    with chromium() as browser:
        view = OfflinePage(browser, keyed.url)
        page = view.page
        page.goto(keyed.url + "/")
        page.wait_for_selector("#key-dialog[open]")
        assert "needs an API key" in page.text_content("#key-message")
        view.shot("20-key-asked", full_page=False)
        page.fill("#key-input", "not-a-key")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#key-message.error")
        message = page.text_content("#key-message")
        assert "refused this API key (403 invalid_api_key)" in message
        view.shot("21-key-refused", full_page=False)
        page.fill("#key-input", "k2")
        page.click("#key-form button[type=submit]")
        page.wait_for_selector("#model option[value='heta-demo']", state="attached")
        assert not page.is_visible("#key-dialog")
        assert page.evaluate("sessionStorage.getItem('heta-api-key')") == "k2"
        page.click("#explain")
        page.wait_for_selector("#results .result[data-partial=''] .hm-unit", timeout=120_000)
        job_id = page.get_attribute("#results .result", "data-job-id")
        assert keyed.http.get(f"/jobs/{job_id}", headers=K2).json()["status"] == "done"  # sent with the key
        assert keyed.http.get(f"/jobs/{job_id}", headers=K1).status_code == 404
        assert view.blocked == [] and view.errors == []
        view.close()
