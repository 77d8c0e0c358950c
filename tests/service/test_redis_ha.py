"""Highly available Redis with real servers on loopback: a master, a replica and three sentinels
(the master killed mid-stream: the service follows the failover and loses no acknowledged job),
and a three-master Redis Cluster serving two models."""

import contextlib
import socket
import subprocess
import time
from pathlib import Path

import httpx
import redis

from heta_service import store as job_store
from heta_service.connections import EmbeddedRedis, connect, die_with_parent, redis_server_binary

from ..helpers import settle
from .conftest import free_port, serve

TEXT = "the cat sat on the mat . the dog ate the bone"


def tcp_redis(directory: Path, port: int, **config) -> EmbeddedRedis:
    return EmbeddedRedis(directory, keep_alive=False, port=str(port), bind="127.0.0.1", **config)


@contextlib.contextmanager
def sentinels(tmp: Path, master_port: int, count: int = 3):
    """``count`` redis-server --sentinel processes monitoring the master as "heta" (quorum 2)."""
    procs, ports = [], []
    try:
        for i in range(count):
            port = free_port()
            conf = tmp / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {tmp}\nsentinel monitor heta 127.0.0.1 {master_port} 2\n"
                "sentinel down-after-milliseconds heta 1000\nsentinel failover-timeout heta 4000\n"
                "sentinel parallel-syncs heta 1\n"
            )
            procs.append(
                subprocess.Popen(
                    [redis_server_binary(), str(conf), "--sentinel"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    preexec_fn=die_with_parent,
                )
            )
            ports.append(port)
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError):
            value = predicate()
            if value:
                return value
        time.sleep(0.2)
    raise TimeoutError(what)


def test_a_sentinel_failover_loses_no_acknowledged_job(model_dir, tmp_path):
    master_port, replica_port = free_port(), free_port()
    master = tcp_redis(tmp_path / "master", master_port)
    replica = tcp_redis(tmp_path / "replica", replica_port, replicaof=f"127.0.0.1 {master_port}")
    try:
        with sentinels(tmp_path, master_port) as ports:
            watcher = redis.Redis(port=ports[0], decode_responses=True)
            wait_for(lambda: watcher.sentinel_slaves("heta"), 30, "the sentinels did not find the replica")
            addresses = ",".join(f"127.0.0.1:{p}" for p in ports)
            with serve(model_dir, tmp_path, REDIS_SENTINELS=addresses, REDIS_MASTER="heta", WORKERS=1) as server:
                on_replica = redis.Redis(port=replica_port, decode_responses=True)
                accepted = []
                for _ in range(4):
                    answer = server.http.post("/jobs", json={"text": TEXT, "config": {"samples": 5}})
                    assert answer.status_code == 202, answer.text
                    job_id = answer.json()["job_id"]
                    accepted.append(job_id)
                    assert on_replica.exists(job_store.job_key(job_id))  # acknowledged only once replicated (WAIT)
                master.kill()  # mid-stream: jobs queued and running
                refused = 0
                quick = httpx.Client(base_url=server.url, timeout=30)
                for _ in range(20):  # keep submitting through the failover: accepted or a 503, never a 500
                    answer = quick.post("/jobs", json={"text": TEXT})
                    assert answer.status_code in (202, 503), answer.text
                    if answer.status_code == 202:
                        accepted.append(answer.json()["job_id"])
                    else:
                        refused += 1
                        assert answer.json()["code"] == "redis_unavailable"
                    time.sleep(0.25)
                wait_for(lambda: watcher.sentinel_get_master_addr_by_name("heta")[1] == replica_port, 60, "no failover")
                finished = settle(server, accepted, failing_over=True)
                assert all(job["status"] == "done" for job in finished.values())
                promoted = connect(f"redis://127.0.0.1:{replica_port}/0")
                for job_id in accepted:  # exactly one terminal transition on the master that survived
                    assert promoted.hget(job_store.job_key(job_id), "completions") == "1"
                assert promoted.xlen(job_store.stream_key(model_dir)) == 0
    finally:
        replica.close()
        master.close()


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is valid and free too."""
    while True:
        port = free_port()
        if port + 10000 <= 65535:
            with socket.socket() as sock:
                with contextlib.suppress(OSError):
                    sock.bind(("127.0.0.1", port + 10000))
                    return port


@contextlib.contextmanager
def cluster(tmp: Path, masters: int = 3):
    ports = [cluster_port() for _ in range(masters)]
    nodes = [
        tcp_redis(
            tmp / f"node-{port}",
            port,
            cluster_enabled="yes",
            cluster_config_file="nodes.conf",
            cluster_node_timeout="2000",
        )
        for port in ports
    ]
    try:
        cli = Path(redis_server_binary()).with_name("redis-cli")
        created = subprocess.run(
            [
                str(cli),
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        probe = redis.Redis(port=ports[0], decode_responses=True)
        wait_for(lambda: probe.cluster("info")["cluster_state"] == "ok", 30, "the cluster did not form")
        yield ports
    finally:
        for node in nodes:
            node.close()


def test_a_redis_cluster_serves_two_models(model_dir, tmp_path):
    with cluster(tmp_path) as ports:
        models = f"{model_dir},heta-demo"
        with serve(
            model_dir,
            tmp_path,
            REDIS_URL=f"redis://127.0.0.1:{ports[0]}/0",
            REDIS_CLUSTER="true",
            MODELS=models,
            WORKERS=1,
        ) as server:
            bodies = [
                {"model": model_dir, "text": TEXT},
                {"model": "heta-demo", "text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"},
            ]
            ids = [server.http.post("/jobs", json=body).json()["job_id"] for body in bodies * 3]
            done = server.http.post("/attribute", json={**bodies[1], "wait": 60})
            assert done.status_code == 200 and done.json()["meta"]["model"] == "heta-demo"
            finished = settle(server, ids, failing_over=True)
            assert all(job["status"] == "done" for job in finished.values())
            from redis.cluster import RedisCluster

            client = RedisCluster(host="127.0.0.1", port=ports[0], decode_responses=True)
            job_store.use_cluster(True)
            try:
                for model in (model_dir, "heta-demo"):  # each model's keys share one slot
                    slot = client.keyslot(job_store.stream_key(model))
                    model_ids = [job_id for job_id, job in finished.items() if job["model"] == model]
                    assert len(model_ids) == 3
                    assert {client.keyslot(job_store.job_key(job_id)) for job_id in model_ids} == {slot}
                    assert all(client.hget(job_store.job_key(job_id), "completions") == "1" for job_id in model_ids)
                slots = {client.keyslot(job_store.stream_key(m)) for m in (model_dir, "heta-demo")}
                assert len(slots) == 2
                metrics = server.http.get("/metrics").text
                assert 'heta_jobs_total{outcome="done"} 7.0' in metrics and "heta_queue_depth" in metrics
                assert server.http.get("/models").json()["models"][1]["workers"] == 1
            finally:
                job_store.use_cluster(False)
