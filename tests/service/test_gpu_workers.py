"""GPU hosts without a GPU: the worker-to-card assignment of `heta serve` (a faked device count) and
the out-of-memory recovery through a live `heta serve` (an injected allocation failure)."""

import pytest

from heta_service.settings import Settings
from heta_service.supervisor import device_env

from ..conftest import DEVICE
from .conftest import serve

TEXT = "the cat sat on the mat"


def settings(**values) -> Settings:
    return Settings(_env_file=None, **values)


def test_one_worker_per_visible_gpu_each_confined_to_its_card():
    assert device_env(settings(), 4, None) == [
        {"CUDA_VISIBLE_DEVICES": str(i), "HETA_DEVICE": "cuda"} for i in range(4)
    ]
    assert device_env(settings(device="cuda"), 2, None) == [
        {"CUDA_VISIBLE_DEVICES": "0", "HETA_DEVICE": "cuda"},
        {"CUDA_VISIBLE_DEVICES": "1", "HETA_DEVICE": "cuda"},
    ]


def test_workers_per_gpu_and_an_explicit_worker_count_fill_the_cards_evenly():
    two_each = device_env(settings(workers_per_gpu=2), 3, None)
    assert [w["CUDA_VISIBLE_DEVICES"] for w in two_each] == ["0", "1", "2", "0", "1", "2"]
    five = device_env(settings(workers=5), 2, None)
    assert [w["CUDA_VISIBLE_DEVICES"] for w in five] == ["0", "1", "0", "1", "0"]
    assert device_env(settings(workers=1, workers_per_gpu=4), 8, None) == [
        {"CUDA_VISIBLE_DEVICES": "0", "HETA_DEVICE": "cuda"}
    ]


def test_the_supervisors_own_visible_devices_are_handed_out_not_renumbered():
    assert [w["CUDA_VISIBLE_DEVICES"] for w in device_env(settings(), 2, "3,5")] == ["3", "5"]
    uuids = "GPU-8d2e1b7c-0000-0000-0000-000000000001,GPU-8d2e1b7c-0000-0000-0000-000000000002"
    assert [w["CUDA_VISIBLE_DEVICES"] for w in device_env(settings(), 2, uuids)] == uuids.split(",")


def test_cpu_and_a_named_device_take_no_card_assignment():
    assert device_env(settings(), 0, None) == [{}]
    assert device_env(settings(workers=3, device="cpu"), 0, None) == [{"HETA_DEVICE": "cpu"}] * 3
    assert device_env(settings(workers=2, device="cuda:1"), 0, "0,1") == [{"HETA_DEVICE": "cuda:1"}] * 2


def test_workers_per_gpu_is_a_validated_setting():
    assert settings().workers_per_gpu == 1
    with pytest.raises(ValueError):
        settings(workers_per_gpu=0)


def test_out_of_memory_halves_the_budget_retries_and_then_fails_the_job(model_dir, tmp_path):
    """Five injected allocation failures in the worker: the first job fails all three attempts
    (budgets auto = 512 MB on CPU, 256, 128) with `out_of_memory`; the second succeeds on its third
    attempt, at a quarter of the budget; the third runs untouched; the same worker serves throughout."""
    with serve(model_dir, tmp_path, WORKERS=1, FAULT_OOM_TIMES=5) as server:
        body = {"text": TEXT, "config": {"samples": 2, "seed": 1}}
        failed = server.http.post("/jobs", json=body)
        assert failed.status_code == 202, failed.text
        job = server.wait_status(failed.json()["job_id"], {"done", "failed"})
        assert job["status"] == "failed" and job["error"]["code"] == "out_of_memory", job

        retried = server.http.post("/attribute", json={**body, "wait": 60})
        assert retried.status_code == 200, retried.text
        clean = server.http.post("/attribute", json={**body, "wait": 60})
        assert clean.status_code == 200, clean.text
        assert len(server.worker_pids()) == 1  # one worker, never restarted
    # each job's retries halved the budget twice (on CPU: the auto 512 MB → 256 → 128; on CUDA the auto
    # budget is half the free memory at the time); the clean job had none
    log = (tmp_path / "serve.log").read_text()
    budgets = [int(line.rsplit("=", 1)[1]) for line in log.splitlines() if "retrying with memory_budget_mb=" in line]
    assert len(budgets) == 4 and budgets[1] == budgets[0] // 2 and budgets[3] == budgets[2] // 2, log[-2000:]
    if DEVICE.type == "cpu":
        assert budgets == [256, 128, 256, 128]
    # smaller chunks change how the work is batched, not the numbers
    scores = lambda response: [t["score"] for t in response.json()["tokens"]]  # noqa: E731
    assert scores(retried) == pytest.approx(scores(clean), rel=1e-9)
