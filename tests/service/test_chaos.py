"""Chaos: real process-level faults with several accepted jobs in flight. After each fault every
accepted job ends in exactly one terminal state, completed results equal a fault-free run's, and
nothing is left in the stream.

Bound by work, not by the clock: a test waits for what it waits for (a job running, a worker idle, a
line in the service's log), not a fixed time for it to happen (the one sleep left is Redis's own
once-a-second fsync). The faults that keep the service up (a worker killed, stopped, drained; Redis
killed) share one `heta serve` per worker count, handed from test to test with every worker back,
idle and the stream empty: a start-up and stop cost ~10 s."""

import contextlib
import os
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest
import redis

from heta_service import store as job_store
from heta_service.connections import EmbeddedRedis, connect

from ..helpers import alive, children, cmdline, settle
from .conftest import serve
from .faults import BODIES, SLOW, TEXT, assert_clean, handed_over, running_worker, submit, wait_for_log, wait_idle


@contextlib.contextmanager
def serve_on_store(model_dir: str, tmp: Path, **settings):
    """`heta serve` on a Redis the test owns (and can kill, fill and inspect; not restarted by itself):
    the server's ``store`` and ``log`` (its output, workers' included)."""
    store = EmbeddedRedis(tmp / "store", keep_alive=False)
    try:
        with serve(model_dir, tmp, REDIS_URL=store.url, **settings) as server:
            server.store, server.log = store, tmp / "serve.log"
            yield server
    finally:
        store.close()


@pytest.fixture(scope="module")
def two_workers_server(model_dir, tmp_path_factory):
    with serve_on_store(model_dir, tmp_path_factory.mktemp("two-workers"), WORKERS=2) as server:
        yield server


@pytest.fixture(scope="module")
def one_worker_server(model_dir, tmp_path_factory):
    # a drain long enough to finish any job (the SIGTERM test); dead-lettered at the 3rd delivery (the
    # poison job's test; no other test here delivers a job more than once)
    with serve_on_store(
        model_dir, tmp_path_factory.mktemp("one-worker"), WORKERS=1, DRAIN_S=120, MAX_DELIVERIES=2
    ) as server:
        yield server


@pytest.fixture
def two_workers(two_workers_server):
    return handed_over(two_workers_server, 2)


@pytest.fixture
def one_worker(one_worker_server):
    return handed_over(one_worker_server, 1)


def test_sigkill_of_a_worker_mid_job(model_dir, two_workers, reference):
    server = two_workers
    ids = submit(server)
    os.kill(running_worker(server, ids[0]), signal.SIGKILL)
    finished = settle(server, ids)
    assert finished[ids[0]]["attempts"] == 2
    assert_clean(connect(server.store.url), ids, finished, reference, model_dir)


def test_a_worker_stopped_past_its_lease_cannot_complete_the_job_twice(model_dir, two_workers, reference):
    server = two_workers
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
    # the resumed worker finishes its stale run (and whichever run was second, its): it must change nothing
    wait_idle(server, server.worker_pids())
    client = connect(server.store.url)
    assert client.hget(job_store.job_key(ids[0]), "completions") == "1"
    assert server.http.get(f"/jobs/{ids[0]}").json()["result"] == finished[ids[0]]["result"]
    assert_clean(client, ids, finished, reference, model_dir)


def test_sigterm_drains_a_worker_mid_job(model_dir, one_worker, reference):
    server = one_worker  # HETA_DRAIN_S=120: the drain finishes the job
    ids = submit(server)
    worker = running_worker(server, ids[0])
    os.kill(worker, signal.SIGTERM)  # drain: the current job finishes, then the supervisor starts a new worker
    finished = settle(server, ids)
    assert finished[ids[0]]["attempts"] == 1 and not alive(worker)
    assert_clean(connect(server.store.url), ids, finished, reference, model_dir)


def test_redis_killed_mid_stream_and_restarted_on_its_data(model_dir, one_worker, reference):
    server, store = one_worker, one_worker.store
    workers = server.worker_pids()
    ids = submit(server)
    server.wait_status(ids[0], {"running"}, timeout=120)
    # appendfsync everysec: what Redis acknowledged a second ago is on disk (Redis's own clock; this
    # Redis (6.2) has no WAITAOF to wait for the fsync itself)
    time.sleep(1.5)
    failures = server.log.read_text(errors="replace").count("heartbeat failed")
    store.kill()
    quick = httpx.Client(base_url=server.url, timeout=10)
    for method, path, body in (
        ("POST", "/jobs", {"text": TEXT}),
        ("GET", f"/jobs/{ids[1]}", None),
        ("GET", "/models", None),
    ):
        answer = quick.request(method, path, json=body)
        assert answer.status_code == 503 and answer.json()["code"] == "redis_unavailable", answer.text
        assert answer.headers["content-type"] == "application/problem+json" and answer.headers["retry-after"]
    assert quick.get("/readyz").status_code == 503 and quick.get("/healthz").status_code == 200
    wait_for_log(server.log, "heartbeat failed", after=failures)  # the worker met the outage, and lives on
    store.restart()
    finished = settle(server, ids)
    assert server.worker_pids() == workers and server.procs[0].poll() is None  # resumed, not restarted
    assert_clean(connect(store.url), ids, finished, reference, model_dir)


def test_embedded_redis_is_restarted_by_serve(model_dir, tmp_path, reference):
    with serve(model_dir, tmp_path, WORKERS=1) as server:
        ids = submit(server, BODIES[1:])
        settle(server, ids)
        redis_pid = next(pid for pid in children(server.procs[0].pid) if b"redis-server" in cmdline(pid))
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
    # a drain of 1 s: the workers give their jobs back soon after they notice serve is gone (the
    # default 5 s would be the wait below; any drain shorter than the job's run gives it back)
    with serve(model_dir, tmp_path, WORKERS=2, DRAIN_S=1) as server:
        ids = submit(server)
        server.wait_status(ids[0], {"running"}, timeout=120)
        descendants = [
            pid for pid in children(server.procs[0].pid) if b"redis-server" in cmdline(pid)
        ] + server.worker_pids()
        assert len(descendants) == 3
        server.procs[0].kill()
        server.procs[0].wait()
        deadline = time.monotonic() + 30  # workers notice within a heartbeat and drain (HETA_DRAIN_S=1)
        while any(alive(pid) for pid in descendants):
            assert time.monotonic() < deadline, [pid for pid in descendants if alive(pid)]
            time.sleep(0.2)
    # a new serve on the same data finishes every accepted job, once
    with serve(model_dir, tmp_path) as again:
        finished = settle(again, ids)
        client = connect(_embedded_url(tmp_path / "redis"))
        assert_clean(client, ids, finished, reference, model_dir)


def test_a_full_redis_refuses_new_work_and_fails_nothing(model_dir, tmp_path, reference):
    store = EmbeddedRedis(tmp_path / "store", keep_alive=False, maxmemory="8mb")
    try:
        # submissions that slip in (below) must meet the full store, not the per-key limit of unfinished jobs
        with serve(model_dir, tmp_path, REDIS_URL=store.url, WORKERS=1, MAX_INFLIGHT_PER_KEY=1000) as server:
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
            # Redis frees bytes for a while after a fill (the 64 KiB query buffer shrinks, a rehashed key table
            # drops its old half): filled again until a quarter second passes with nothing more to take
            quiet = time.monotonic()
            while time.monotonic() - quiet < 0.25:
                before = filler
                fill((1024, 16))
                if filler != before:
                    quiet = time.monotonic()
                time.sleep(0.02)
            keys_before = set(client.scan_iter(match="heta:job:*"))
            # kept full: the bytes the running job and the service free meanwhile (stream entries, done
            # lists, a client's buffer) are taken again at once, so the job's end meets a full store
            stop = threading.Event()

            def keep_full() -> None:
                while not stop.is_set():
                    try:
                        fill((16,))
                    except redis.exceptions.ConnectionError:
                        return
                    stop.wait(0.01)

            keeper = threading.Thread(target=keep_full, daemon=True)
            keeper.start()
            try:
                # like the probe below, a submission can slip into a moment below maxmemory (the keeper refills
                # every 10 ms): such a job is whole and accepted, and must not fail either
                deadline, slipped = time.monotonic() + 10, []
                while (refused := server.http.post("/jobs", json={"text": TEXT})).status_code == 202:
                    assert time.monotonic() < deadline, "submissions were never refused"
                    slipped.append(refused.json()["job_id"])
                    keys_before.add(job_store.job_key(slipped[-1]))
                assert refused.status_code == 503 and refused.json()["code"] == "redis_unavailable", refused.text
                assert refused.headers["content-type"] == "application/problem+json"
                # the probe is a write: while the keeper refills what the store frees, one can slip into a
                # moment below maxmemory, so readiness is read until it reports the full store
                deadline = time.monotonic() + 10
                while server.http.get("/readyz").status_code != 503:
                    assert time.monotonic() < deadline, "/readyz never reported the full store"
                    time.sleep(0.05)
                assert server.http.get(f"/jobs/{ids[1]}").status_code == 200  # reads still work
                # the worker meets the full store when it finishes the job: it must wait, not fail the job
                wait_for_log(tmp_path / "serve.log", "Redis unavailable during a job")
                assert set(client.scan_iter(match="heta:job:*")) == keys_before  # nothing evicted, nothing half-written
                assert all(server.http.get(f"/jobs/{i}").json()["status"] != "failed" for i in ids + slipped)
            finally:
                stop.set()
                keeper.join()
            client.delete(*[f"filler:{i}" for i in range(filler)])
            finished = settle(server, ids + slipped)
            assert_clean(client, ids, finished, reference, model_dir)
            assert all(finished[i]["status"] == "done" for i in slipped)
            # the worker's registry entry expired while the store was full; its next heartbeat brings it back
            deadline = time.monotonic() + 30
            while (ready := server.http.get("/readyz")).status_code != 200:
                assert time.monotonic() < deadline, ready.text
                time.sleep(0.2)
    finally:
        store.close()


def test_a_job_that_kills_its_worker_every_time_is_dead_lettered(model_dir, one_worker, reference):
    """The poison job's worker process dies whenever it runs it (SIGKILL, as a crash would); after
    HETA_MAX_DELIVERIES deliveries it is dead-lettered and the other jobs are unaffected."""
    server, store = one_worker, one_worker.store  # HETA_MAX_DELIVERIES=2
    poison = submit(server, [SLOW])[0]
    ids = submit(server, BODIES[1:])
    stop = threading.Event()

    def crash_on_poison():
        while not stop.is_set():
            job = server.http.get(f"/jobs/{poison}").json()
            if job["status"] in job_store.FINAL:
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
    assert connect(store.url).xlen(job_store.dead_letter_key(model_dir)) == 1
    assert_clean(connect(store.url), [*ids], finished, {i: reference[i + 1] for i in range(3)}, model_dir)


def test_a_deadline_that_passes_in_the_queue_costs_no_compute(one_worker):
    server = one_worker
    busy = submit(server, [SLOW])[0]
    server.wait_status(busy, {"running"}, timeout=120)
    late = server.http.post("/jobs", json={"text": TEXT, "deadline_s": 0.5}).json()["job_id"]
    finished = settle(server, [busy, late])
    assert finished[late]["status"] == "failed" and finished[late]["error"]["code"] == "deadline_exceeded"
    assert finished[late]["attempts"] == 0 and finished[late]["started"] is None  # never ran
    assert connect(server.store.url).hget(job_store.job_key(late), "completions") == "1"


def _embedded_url(data: Path) -> str:
    """The unix socket of the embedded Redis whose data directory is ``data`` (from its redis.conf)."""
    conf = (data / "redis.conf").read_text().splitlines()
    return "unix://" + next(line.split()[1] for line in conf if line.startswith("unixsocket "))
