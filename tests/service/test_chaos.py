"""Chaos: real process-level faults with several accepted jobs in flight. After each fault every
accepted job ends in exactly one terminal state, completed results equal a fault-free run's, and
nothing is left in the stream."""

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from heta_core import Attributor, HetaConfig
from heta_service import jobs
from heta_service.connections import EmbeddedRedis, connect

from .conftest import SLOW, alive, serve

TEXT = "the cat sat on the mat . the dog ate the bone"
BODIES = [SLOW, {"text": TEXT}, {"text": TEXT, "config": {"samples": 3, "seed": 1}}, {"text": TEXT + " . a bird can"}]
FINAL = set(jobs.FINAL)


@pytest.fixture(scope="module")
def reference(model_dir):
    """The fault-free result of every body, computed in this process."""
    attributor = Attributor.from_pretrained(model_dir)

    def run(body: dict) -> list[float]:
        config = HetaConfig(**{"num_hvp_samples" if k == "samples" else k: v for k, v in body.get("config", {}).items()})
        return attributor.attribute(body["text"], config=config).scores.tolist()

    return {i: run(body) for i, body in enumerate(BODIES)}


@pytest.fixture
def store(tmp_path):
    """A Redis the test owns (and can kill, fill and inspect); not restarted by itself."""
    server = EmbeddedRedis(tmp_path / "store", keep_alive=False)
    yield server
    server.close()


def submit(server, bodies=BODIES) -> list[str]:
    ids = []
    for body in bodies:
        answer = server.http.post("/jobs", json=body)
        assert answer.status_code == 202, answer.text
        ids.append(answer.json()["job_id"])
    return ids


def settle(server, ids, timeout=180) -> dict[str, dict]:
    deadline = time.monotonic() + timeout
    finished = {}
    while len(finished) < len(ids):
        assert time.monotonic() < deadline, f"jobs still open: {set(ids) - set(finished)}"
        for job_id in set(ids) - set(finished):
            job = server.http.get(f"/jobs/{job_id}").json()
            if job["status"] in FINAL:
                finished[job_id] = job
        time.sleep(0.2)
    return finished


def assert_clean(client, ids, finished, reference, model: str, expect=None) -> None:
    """Exactly one terminal transition per job, results equal the fault-free run, no stream leftovers."""
    for i, job_id in enumerate(ids):
        record = client.hgetall(jobs.job_key(job_id))
        assert record["completions"] == "1", (job_id, record["status"])
        status = (expect or {}).get(i, "done")
        assert finished[job_id]["status"] == status, finished[job_id]
        if status == "done":
            scores = [t["score"] for t in finished[job_id]["result"]["tokens"]]
            assert scores == pytest.approx(reference[i], rel=1e-5, abs=1e-9)
    stream = jobs.stream_key(model)
    assert client.xlen(stream) == 0
    assert client.xpending(stream, jobs.GROUP)["pending"] == 0


def running_worker(server, job_id: str) -> int:
    job = server.wait_status(job_id, {"running"}, timeout=120)
    return int(job["worker"].split("-")[-2])


def test_sigkill_of_a_worker_mid_job(model_dir, tmp_path, store, reference):
    with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=2) as server:
        ids = submit(server)
        os.kill(running_worker(server, ids[0]), signal.SIGKILL)
        finished = settle(server, ids)
        assert finished[ids[0]]["attempts"] == 2
        assert_clean(connect(store.url), ids, finished, reference, model_dir)


def test_a_worker_stopped_past_its_lease_cannot_complete_the_job_twice(model_dir, tmp_path, store, reference):
    with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=2) as server:
        ids = submit(server)
        stopped = running_worker(server, ids[0])
        os.kill(stopped, signal.SIGSTOP)
        try:
            job = server.wait_status(ids[0], {"running"}, timeout=5)  # still the stopped worker's run
            deadline = time.monotonic() + 60
            while job["attempts"] < 2:  # the lease (2 s) expired: the other worker took the job over
                assert time.monotonic() < deadline
                time.sleep(0.2)
                job = server.http.get(f"/jobs/{ids[0]}").json()
        finally:
            os.kill(stopped, signal.SIGCONT)
        finished = settle(server, ids)
        time.sleep(3)  # the resumed worker finishes its stale run: it must change nothing
        client = connect(store.url)
        assert client.hget(jobs.job_key(ids[0]), "completions") == "1"
        assert server.http.get(f"/jobs/{ids[0]}").json()["result"] == finished[ids[0]]["result"]
        assert_clean(client, ids, finished, reference, model_dir)


def test_sigterm_drains_a_worker_mid_job(model_dir, tmp_path, store, reference):
    with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=1, DRAIN_S=120) as server:
        ids = submit(server)
        worker = running_worker(server, ids[0])
        os.kill(worker, signal.SIGTERM)  # drain: the current job finishes, then the supervisor starts a new worker
        finished = settle(server, ids)
        assert finished[ids[0]]["attempts"] == 1 and not alive(worker)
        assert_clean(connect(store.url), ids, finished, reference, model_dir)


def test_redis_killed_mid_stream_and_restarted_on_its_data(model_dir, tmp_path, store, reference):
    with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=1) as server:
        workers = server.worker_pids()
        ids = submit(server)
        server.wait_status(ids[0], {"running"}, timeout=120)
        time.sleep(1.5)  # appendfsync everysec: what Redis acknowledged a second ago is on disk
        store.kill()
        quick = httpx.Client(base_url=server.url, timeout=10)
        for method, path, body in (("POST", "/jobs", {"text": TEXT}), ("GET", f"/jobs/{ids[1]}", None), ("GET", "/models", None)):
            answer = quick.request(method, path, json=body)
            assert answer.status_code == 503 and answer.json()["code"] == "redis_unavailable", answer.text
            assert answer.headers["content-type"] == "application/problem+json" and answer.headers["retry-after"]
        assert quick.get("/readyz").status_code == 503 and quick.get("/healthz").status_code == 200
        time.sleep(2)
        store.restart()
        finished = settle(server, ids)
        assert server.worker_pids() == workers and server.procs[0].poll() is None  # resumed, not restarted
        assert_clean(connect(store.url), ids, finished, reference, model_dir)


def test_embedded_redis_is_restarted_by_serve(model_dir, tmp_path, reference):
    with serve(model_dir, tmp_path, WORKERS=1) as server:
        ids = submit(server, BODIES[1:])
        settle(server, ids)
        redis_pid = next(pid for pid in _children(server.procs[0].pid) if b"redis-server" in _cmdline(pid))
        os.kill(redis_pid, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while server.http.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "serve did not bring its Redis back"
            time.sleep(0.5)
        # the data survived (finished jobs are still there) and new work runs
        assert server.http.get(f"/jobs/{ids[0]}").json()["status"] == "done"
        again = submit(server, BODIES[1:2])
        assert settle(server, again)[again[0]]["status"] == "done"


def test_sigkill_of_serve_leaves_no_process_behind_and_loses_no_job(model_dir, tmp_path, reference):
    with serve(model_dir, tmp_path, WORKERS=2) as server:
        ids = submit(server)
        server.wait_status(ids[0], {"running"}, timeout=120)
        children = [pid for pid in _children(server.procs[0].pid) if b"redis-server" in _cmdline(pid)] + server.worker_pids()
        assert len(children) == 3
        server.procs[0].kill()
        server.procs[0].wait()
        deadline = time.monotonic() + 30  # workers notice within a heartbeat and drain (HETA_DRAIN_S=5)
        while any(alive(pid) for pid in children):
            assert time.monotonic() < deadline, [pid for pid in children if alive(pid)]
            time.sleep(0.2)
    # a new serve on the same data finishes every accepted job, once
    with serve(model_dir, tmp_path) as again:
        finished = settle(again, ids)
        client = connect(_embedded_url(tmp_path / "redis"))
        assert_clean(client, ids, finished, reference, model_dir)


def test_a_full_redis_refuses_new_work_and_fails_nothing(model_dir, tmp_path, reference):
    store = EmbeddedRedis(tmp_path / "store", keep_alive=False, maxmemory="8mb")
    try:
        with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=1) as server:
            client = connect(store.url)
            ids = submit(server)
            server.wait_status(ids[0], {"running"}, timeout=120)
            filler = 0

            def fill(sizes=(65536, 1024, 16)) -> None:  # Redis to maxmemory with keys of our own, to the last bytes
                nonlocal filler
                for size in sizes:
                    try:
                        while True:
                            client.set(f"filler:{filler}", "x" * size)
                            filler += 1
                    except redis.exceptions.OutOfMemoryError:
                        pass

            fill()
            keys_before = set(client.scan_iter(match="heta:job:*"))
            fill((16,))  # the running job may have freed a few bytes meanwhile (stream entries, done lists)
            refused = server.http.post("/jobs", json={"text": TEXT})
            assert refused.status_code == 503 and refused.json()["code"] == "redis_unavailable", refused.text
            assert refused.headers["content-type"] == "application/problem+json"
            assert server.http.get("/readyz").status_code == 503
            assert server.http.get(f"/jobs/{ids[1]}").status_code == 200  # reads still work
            time.sleep(4)  # the worker meets the full store when it finishes: it must wait, not fail the job
            assert set(client.scan_iter(match="heta:job:*")) == keys_before  # nothing evicted, nothing half-written
            assert all(server.http.get(f"/jobs/{i}").json()["status"] != "failed" for i in ids)
            client.delete(*[f"filler:{i}" for i in range(filler)])
            finished = settle(server, ids)
            assert_clean(client, ids, finished, reference, model_dir)
            assert server.http.get("/readyz").status_code == 200
    finally:
        store.close()


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered(model_dir, tmp_path, store, reference):
    """The poison job's worker process dies whenever it runs it (SIGKILL, as a crash would); after
    HETA_MAX_DELIVERIES deliveries it is dead-lettered and the other jobs are unaffected."""
    with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=1, MAX_DELIVERIES=2) as server:
        poison = submit(server, [SLOW])[0]
        ids = submit(server, BODIES[1:])
        stop = threading.Event()

        def crash_on_poison():
            while not stop.is_set():
                job = server.http.get(f"/jobs/{poison}").json()
                if job["status"] in FINAL:
                    return
                if job["status"] == "running" and job["worker"]:
                    pid = int(job["worker"].split("-")[-2])
                    if alive(pid):
                        os.kill(pid, signal.SIGKILL)
                time.sleep(0.1)

        killer = threading.Thread(target=crash_on_poison, daemon=True)
        killer.start()
        finished = settle(server, [poison, *ids])
        stop.set()
        assert finished[poison]["status"] == "dead_lettered"
        assert connect(store.url).xlen(jobs.dead_letter_key(model_dir)) == 1
        assert_clean(connect(store.url), [*ids], finished, {i: reference[i + 1] for i in range(3)}, model_dir)


def test_a_deadline_that_passes_in_the_queue_costs_no_compute(model_dir, tmp_path, store):
    with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=1) as server:
        busy = submit(server, [SLOW])[0]
        server.wait_status(busy, {"running"}, timeout=120)
        late = server.http.post("/jobs", json={"text": TEXT, "deadline_s": 0.5}).json()["job_id"]
        finished = settle(server, [busy, late])
        assert finished[late]["status"] == "failed" and finished[late]["error"]["code"] == "deadline_exceeded"
        assert finished[late]["attempts"] == 0 and finished[late]["started"] is None  # never ran
        assert connect(store.url).hget(jobs.job_key(late), "completions") == "1"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return (Path("/proc") / str(pid) / "cmdline").read_bytes()
    except OSError:
        return b""


def _embedded_url(data: Path) -> str:
    """The unix socket of the embedded Redis whose data directory is ``data`` (from its redis.conf)."""
    conf = (data / "redis.conf").read_text().splitlines()
    return "unix://" + next(line.split()[1] for line in conf if line.startswith("unixsocket "))
