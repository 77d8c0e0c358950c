"""POST /attribute/batch against a live `heta serve` (heta-demo): one job, one entry per item with the
same result the item gets alone, admission of the whole batch before anything is queued (bad items
listed, the batch's total cost against the ceiling), progress over the batch, cancellation, and
HetaClient.batch."""

import time

import pytest

from heta_service.client import HetaClient, RequestError
from heta_service.connections import connect
from heta_service.schemas import BatchResult, JobResult

from ..helpers import job_count
from .conftest import serve
from .test_client import _embedded_url

ITEMS = [
    {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3", "id": "first"},
    {"text": "a=2 d=5 g=2 k=9 ? k", "target_text": " 9"},
    {"text": "a=2 d=5 ? d", "target_text": " 5", "config": {"method": "occlusion"}},
]
CONFIG = {"samples": 3, "seed": 5}
LONG = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2", "config": {"samples": 1000}}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    # the ceiling admits one LONG item (9,000 HVPs) but not two
    with serve(None, folder, MAX_BATCH_ITEMS="4", MAX_HVPS="12000") as server:
        server.redis = connect(_embedded_url(folder / "redis"))
        yield server


def test_a_batch_is_one_job_whose_entries_equal_each_item_alone(live):
    before = job_count(live.redis)
    answer = live.http.post("/attribute/batch", json={"items": ITEMS, "config": CONFIG, "wait": 120})
    assert answer.status_code == 200, answer.text
    batch = BatchResult.model_validate(answer.json())
    assert job_count(live.redis) == before + 1
    assert (batch.succeeded, batch.failed, [e.index for e in batch.items]) == (3, 0, [0, 1, 2])
    assert [e.id for e in batch.items] == ["first", None, None]
    assert batch.timings.compute_s > 0 and batch.timings.total_s >= batch.timings.compute_s
    for item, entry in zip(ITEMS, batch.items, strict=True):
        body = {key: value for key, value in item.items() if key != "id"}
        body["config"] = {**CONFIG, **item.get("config", {})}
        alone = JobResult.model_validate(live.http.post("/attribute", json={**body, "wait": 120}).json())
        assert entry.result.method == alone.method
        assert entry.result.meta.config == alone.meta.config  # the batch's config under the item's own
        assert [t.score for t in entry.result.tokens] == [t.score for t in alone.tokens]
    view = live.http.get(f"/jobs/{batch.job_id}").json()
    assert view["status"] == "done" and view["progress"] == 1.0
    assert BatchResult.model_validate(view["result"]) == batch


def test_a_batch_with_bad_items_is_refused_whole_naming_each(live):
    before = job_count(live.redis)
    body = {"items": [ITEMS[0], {"text": "a=2 ? a", "target_position": 40}, {"text": ""}, ITEMS[1]], "config": CONFIG}
    answer = live.http.post("/attribute/batch", json=body)
    assert answer.status_code == 422 and answer.headers["content-type"] == "application/problem+json"
    problem = answer.json()
    assert problem["code"] == "invalid_batch" and "2 of 4" in problem["detail"]
    assert [(p["index"], p["code"]) for p in problem["items"]] == [(1, "target_out_of_range"), (2, "empty_input")]
    too_many = live.http.post("/attribute/batch", json={"items": [ITEMS[1]] * 5})
    assert too_many.status_code == 422 and too_many.json()["code"] == "too_many_items"
    empty = live.http.post("/attribute/batch", json={"items": []})
    assert empty.status_code == 422 and empty.json()["code"] == "validation_error"
    assert job_count(live.redis) == before  # nothing was queued


def test_the_batch_cost_is_summed_against_the_ceiling(live):
    alone = live.http.post("/jobs", json=LONG)  # one fits (cancelled at once: it is not what this test runs)
    assert alone.status_code == 202 and live.http.delete(f"/jobs/{alone.json()['job_id']}").status_code == 202
    over = live.http.post("/attribute/batch", json={"items": [LONG, LONG]})
    assert over.status_code == 422 and over.json()["code"] == "cost_over_ceiling"
    assert over.json()["estimate"]["hvps"] > 12000


def test_progress_covers_the_batch_and_a_cancel_stops_it(live):
    answer = live.http.post(
        "/attribute/batch", json={"items": [ITEMS[0], {**LONG, "config": {"samples": 900}}], "wait": 0}
    )
    assert answer.status_code == 202
    job_id = answer.json()["job_id"]
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        view = live.http.get(f"/jobs/{job_id}").json()
        seen.append(view["progress"])
        if view["progress"] > 0.5:  # past the first item: inside the long one
            break
        time.sleep(0.05)
    assert 0.5 < seen[-1] < 1.0 and seen == sorted(seen)
    assert live.http.delete(f"/jobs/{job_id}").status_code == 202
    while time.monotonic() < deadline and live.http.get(f"/jobs/{job_id}").json()["status"] != "cancelled":
        time.sleep(0.1)
    assert live.http.get(f"/jobs/{job_id}").json()["status"] == "cancelled"


def test_the_client_sends_batches_and_raises_typed_problems(live):
    with HetaClient(live.url, backoff=0.05) as heta:
        batch = heta.batch(
            ["c=6 e=6 b=3 h=3 m=6 ? h", {"text": "a=2 d=5 ? d", "target_text": " 5", "id": 7}], config=CONFIG, wait=0
        )
        assert isinstance(batch, BatchResult) and batch.succeeded == 2  # waited for by polling the job
        assert batch.items[0].result.targets[0].text.strip() == "h" and batch.items[1].id == 7
        assert batch.items[1].result.topk(1)[0]["text"] == "d=5"
        with pytest.raises(RequestError) as refused:
            heta.batch([{"text": ""}])
        assert refused.value.code == "invalid_batch" and refused.value.problem["items"][0]["index"] == 0


def test_a_batch_reports_per_item_and_shows_in_the_queue(live):
    answer = live.http.post("/attribute/batch", json={"items": ITEMS[:2], "config": CONFIG, "wait": 120})
    job_id = answer.json()["job_id"]
    report = live.http.get(f"/jobs/{job_id}/report", params={"item": 1})
    assert report.status_code == 200 and "text/html" in report.headers["content-type"] and "k=9" in report.text
    for params in ({}, {"item": 2}):
        refused = live.http.get(f"/jobs/{job_id}/report", params=params)
        assert (
            refused.status_code == 422
            and refused.json()["code"] == "invalid_item"
            and "0..1" in refused.json()["detail"]
        )
    single_body = {k: v for k, v in ITEMS[1].items() if k != "id"}
    single = live.http.post("/attribute", json={**single_body, "config": CONFIG, "wait": 120}).json()
    assert live.http.get(f"/jobs/{single['job_id']}/report", params={"item": 0}).json()["code"] == "invalid_item"
    recent = {job["job_id"]: job for job in live.http.get("/queue").json()["jobs"]}
    assert recent[job_id]["summary"] == "batch of 2 prompts" and recent[job_id]["method"] == "heta"
