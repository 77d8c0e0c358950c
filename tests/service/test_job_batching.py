"""Concurrent jobs run together (HETA_BATCH_JOBS): a worker takes the jobs waiting for a model in one
read and packs their chunks into shared batches; each job keeps its own result, partial results,
cancellation and deadline."""

import pytest

from heta_core import Attributor, HetaConfig

from .conftest import serve

# heta-demo prompts of different lengths (the padded layout)
PROMPTS = [
    {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"},
    {"text": "a=2 d=5 ? d", "target_text": " 5"},
    {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? g", "target_text": " 2"},
    {"text": "b=3 h=3 m=6 ? m", "target_text": " 6"},
]
# keeps the one worker busy until cancelled, while the jobs under test queue behind it
BLOCKER = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? k", "target_text": " 9", "config": {"samples": 5000}}
SLOW = {"text": "a=2 d=5 g=2 k=9 n=5 p=9 c=4 e=4 ? n", "target_text": " 5", "config": {"samples": 1000}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve(None, tmp_path_factory.mktemp("batching"), WORKERS=1, BATCH_JOBS=8, MAX_SAMPLES=5000) as running:
        yield running


def submit(server, body: dict) -> str:
    answer = server.http.post("/jobs", json=body)
    assert answer.status_code == 202, answer.text
    return answer.json()["job_id"]


def release(server, blocker: str) -> None:
    """Cancels the blocker: the worker's next read takes every job queued behind it."""
    assert server.http.delete(f"/jobs/{blocker}").status_code == 202


def test_jobs_read_together_run_together_and_equal_solo_runs(server):
    blocker = submit(server, BLOCKER)  # the worker is busy with this while the others queue behind it
    server.wait_status(blocker, {"running"})
    ids = [submit(server, {**p, "config": {"samples": 4, "seed": 3}}) for p in PROMPTS]
    # doomed: five times SLOW's work (a packed batch ran SLOW's alone inside 3 s on a quiet machine)
    slow, doomed = submit(server, SLOW), submit(server, {**SLOW, "config": {"samples": 5000}, "deadline_s": 3})
    release(server, blocker)
    jobs = [server.wait_status(job_id, {"done"}, timeout=120) for job_id in ids]
    # one read took them: one TAKE started every job at the same server clock, on one worker
    assert len({job["started"] for job in jobs}) == 1 and len({job["worker"] for job in jobs}) == 1
    # a job of the batch is cancelled while it runs; another passes its deadline: the rest finish
    running = server.wait_status(slow, {"running"})
    assert running["started"] == jobs[0]["started"]
    assert server.http.delete(f"/jobs/{slow}").status_code == 202
    cancelled = server.wait_status(slow, {"cancelled"}, timeout=60)
    expired = server.wait_status(doomed, {"failed"}, timeout=60)
    assert expired["error"]["code"] == "deadline_exceeded"
    assert cancelled["partial"]["stages_done"] == ["flow", "kl"]  # its own partial result, published in the batch
    # every result is the engine's own, computed alone
    engine = Attributor.from_pretrained("heta-demo", config=HetaConfig(num_hvp_samples=4, seed=3))
    for prompt, job in zip(PROMPTS, jobs, strict=True):
        alone = engine.attribute(**dict(prompt))
        assert [t["score"] for t in job["result"]["tokens"]] == pytest.approx(alone.scores.tolist(), rel=1e-4, abs=1e-7)
        assert [t["hessian"] for t in job["result"]["tokens"]] == pytest.approx(
            alone.hessian.tolist(), rel=1e-4, abs=1e-7
        )
        assert job["result"]["meta"]["hvps"] == alone.meta.hvps
    assert server.wait_status(blocker, {"cancelled"})["status"] == "cancelled"


def test_a_batch_of_one_model_mixes_methods_and_batch_requests(server):
    blocker = submit(server, BLOCKER)
    server.wait_status(blocker, {"running"})
    heta = submit(server, {**PROMPTS[0], "config": {"samples": 2}})
    occlusion = submit(server, {**PROMPTS[1], "config": {"method": "occlusion"}})
    batch = server.http.post("/attribute/batch", json={"items": PROMPTS[:2], "config": {"samples": 2}, "wait": 0})
    assert batch.status_code == 202
    release(server, blocker)
    results = [
        server.wait_status(job_id, {"done"}, timeout=120) for job_id in (heta, occlusion, batch.json()["job_id"])
    ]
    assert results[0]["result"]["method"] == "heta" and results[1]["result"]["method"] == "occlusion"
    assert results[2]["result"]["succeeded"] == 2
