"""What the fault tests share (process faults: test_chaos; network faults: test_network_faults; TLS:
test_redis_tls): the bodies in flight while a fault strikes, and the checks that every accepted job
ended once with the fault-free result (the ``reference`` fixture, in conftest)."""

import contextlib
import time
from pathlib import Path

import pytest
import redis

from heta_service import registry
from heta_service import store as job_store
from heta_service.connections import connect

from ..helpers import alive
from .conftest import SLOW_TEXT

TEXT = "the cat sat on the mat . the dog ate the bone"
# the job a fault strikes while it runs: a few seconds on one CPU thread (conftest's SLOW, 20 samples,
# is ~15 s there, and most tests run it twice: a fault, then the run that completes it)
SLOW = {"text": SLOW_TEXT, "config": {"samples": 6}}
BODIES = [SLOW, {"text": TEXT}, {"text": TEXT, "config": {"samples": 3, "seed": 1}}, {"text": TEXT + " . a bird can"}]


def handed_over(server, workers: int, timeout: float = 120):
    """The shared server as a fresh one would be: Redis up, ``workers`` live workers (a killed one
    restarted by serve, loaded), all idle, nothing in the stream."""
    deadline = time.monotonic() + timeout
    client = connect(server.store.url)
    while True:
        with contextlib.suppress(redis.exceptions.ConnectionError):
            live = [w for w in registry.live_workers(client) if alive(w["pid"])]
            stream = job_store.stream_key(server.env["HETA_MODELS"])
            if (
                len(live) == workers
                and not any(w["busy"] or w["draining"] for w in live)
                and client.xlen(stream) == 0
                and server.http.get("/readyz").status_code == 200
            ):
                return server
        assert time.monotonic() < deadline, f"the shared server did not come back to {workers} idle worker(s)"
        time.sleep(0.2)


def wait_idle(server, pids: list[int], timeout: float = 120) -> None:
    """Until each worker's registry entry says it is idle: whatever it was running has concluded."""
    deadline = time.monotonic() + timeout
    client = connect(server.store.url)
    while not all(any(w["pid"] == pid and not w["busy"] for w in registry.live_workers(client)) for pid in pids):
        assert time.monotonic() < deadline, f"workers {pids} stayed busy"
        time.sleep(0.2)


def wait_for_log(path: Path, text: str, after: int = 0, timeout: float = 120) -> int:
    """Until ``text`` occurs in the service's log more than ``after`` times; how many times it does."""
    deadline = time.monotonic() + timeout
    while (count := path.read_text(errors="replace").count(text)) <= after:
        assert time.monotonic() < deadline, f"{text!r} did not appear in {path}"
        time.sleep(0.2)
    return count


def submit(server, bodies=BODIES) -> list[str]:
    ids = []
    for body in bodies:
        answer = server.http.post("/jobs", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["job_id"])
    return ids


def assert_clean(client, ids, finished, reference, model: str, expect=None) -> None:
    """Exactly one terminal transition per job, results equal the fault-free run, no stream leftovers."""
    for i, job_id in enumerate(ids):
        record = client.hgetall(job_store.job_key(job_id))
        assert record["completions"] == "1", (job_id, record["status"])
        status = (expect or {}).get(i, "done")
        assert finished[job_id]["status"] == status, finished[job_id]
        if status == "done":
            scores = [t["score"] for t in finished[job_id]["result"]["tokens"]]
            assert scores == pytest.approx(reference[i], rel=1e-5, abs=1e-9)
    stream = job_store.stream_key(model)
    assert client.xlen(stream) == 0
    assert client.xpending(stream, job_store.GROUP)["pending"] == 0


def running_worker(server, job_id: str) -> int:
    job = server.wait_status(job_id, {"running"}, timeout=120)
    return int(job["worker"].split("-")[-2])
