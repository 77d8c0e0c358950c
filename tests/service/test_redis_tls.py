"""Redis over TLS with the least-privilege ACL user of deploy/redis/users.acl: Debian's redis-server
(built with TLS) started by the test with mutual TLS on (certificates made here with openssl) and the
shipped ACL file (its password hash set to the test's). The service's core flows pass against it;
Sentinel and Cluster clients reach it the same way; a plaintext connection to the TLS port, and every
other bad TLS setting, ends the start with one line naming the setting."""

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest
import redis

from heta_core.cli import main as heta_main
from heta_service.connections import EmbeddedRedis, connect, connect_store
from heta_service.settings import Settings

from ..helpers import settle
from .conftest import ROOT, base_env, free_port, heta_command, serve
from .faults import BODIES, SLOW, TEXT, assert_clean, handed_over, running_worker, submit
from .test_events import read_events
from .test_redis_ha import cluster_port, wait_for

ACL = ROOT / "deploy" / "redis" / "users.acl"
PLACEHOLDER = "#" + "0" * 64  # the shipped file's password hash: nobody can log in until it is replaced
PASSWORD = "tls-test-password"
ADMIN = "user admin on >admin-password ~* &* +@all"  # the test's own, for the sentinel and for cluster set-up


def debian_redis_server() -> str:
    found = shutil.which("redis-server")
    assert found, "Debian's redis-server is missing: scripts/setup installs it"
    return found


def make_certificates(directory: Path) -> SimpleNamespace:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    directory.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=heta-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    (directory / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN=heta-{name}",
            "-keyout",
            f"{name}.key",
            "-out",
            f"{name}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            f"{name}.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            f"{name}.crt",
        )
    return SimpleNamespace(
        **{
            f"{name}_{kind}": directory / f"{name}.{kind}"
            for name in ("ca", "server", "client")
            for kind in ("crt", "key")
        }
    )


def acl_file(directory: Path, *extra: str) -> Path:
    """The shipped ACL file, with the test's password hash in place of the placeholder."""
    shipped = ACL.read_text()
    assert shipped.count(PLACEHOLDER) == 1
    path = directory / "users.acl"
    digest = hashlib.sha256(PASSWORD.encode()).hexdigest()
    path.write_text(shipped.replace(PLACEHOLDER, "#" + digest) + "".join(line + "\n" for line in extra))
    return path


def tls_config(certs, **config) -> dict:
    return {
        "port": "0",
        "bind": "127.0.0.1",
        "tls_cert_file": str(certs.server_crt),
        "tls_key_file": str(certs.server_key),
        "tls_ca_cert_file": str(certs.ca_crt),
        "tls_auth_clients": "yes",
        **config,
    }


def tls_redis(directory: Path, certs, port: int, **config) -> EmbeddedRedis:
    """Debian's redis-server on a TLS port only (its unix socket stays for EmbeddedRedis's own ping)."""
    return EmbeddedRedis(
        directory, keep_alive=False, binary=debian_redis_server(), **tls_config(certs, tls_port=str(port), **config)
    )


def tls_env(certs) -> dict:
    return {"REDIS_TLS_CA": certs.ca_crt, "REDIS_TLS_CERT": certs.client_crt, "REDIS_TLS_KEY": certs.client_key}


def url_with_files(certs, port: int) -> str:
    """The same TLS settings as the URL's parameters (what the test's own client uses)."""
    files = {"ssl_ca_certs": certs.ca_crt, "ssl_certfile": certs.client_crt, "ssl_keyfile": certs.client_key}
    return f"rediss://heta:{PASSWORD}@127.0.0.1:{port}/0?" + urlencode(files)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certificates(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_store(certs, tmp_path_factory):
    directory = tmp_path_factory.mktemp("tls-redis")
    port = free_port()
    store = tls_redis(directory / "data", certs, port, aclfile=str(acl_file(directory)))
    store.port, store.tls_url = port, url_with_files(certs, port)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(scope="module")
def tls_server(model_dir, certs, tls_store, tmp_path_factory):
    url = f"rediss://heta:{PASSWORD}@127.0.0.1:{tls_store.port}/0"
    with serve(
        model_dir, tmp_path_factory.mktemp("tls-serve"), REDIS_URL=url, WORKERS=2, CACHE_TTL_S=600, **tls_env(certs)
    ) as server:
        server.store = SimpleNamespace(url=tls_store.tls_url)  # what test_chaos's helpers inspect, over TLS too
        yield server


def test_core_flows_over_tls_with_the_least_privilege_user(model_dir, tls_server, reference):
    server = handed_over(tls_server, 2)
    ids = submit(server)  # submit
    events = read_events(server, ids[1], {})  # events
    cancelled = submit(server, [SLOW])[0]  # cancel, while it runs
    running_worker(server, cancelled)
    assert server.http.delete(f"/jobs/{cancelled}").status_code == 202
    finished = settle(server, [*ids, cancelled])
    assert [name for name, _ in events if name != "comment"][-1] == "result"
    assert finished[ids[1]]["result"] == json.loads(events[-1][1])
    assert_clean(
        connect(server.store.url), [*ids, cancelled], finished, reference, model_dir, expect={len(BODIES): "cancelled"}
    )
    body = {"text": TEXT, "config": {"samples": 3, "seed": 7}, "wait": 60}  # wait, then the cache
    first = server.http.post("/attribute", json=body)
    again = server.http.post("/attribute", json=body)
    assert first.status_code == again.status_code == 200, (first.text, again.text)
    assert first.json()["meta"]["cached"] is False and again.json()["meta"]["cached"] is True
    assert again.json()["tokens"] == first.json()["tokens"]


def test_a_killed_worker_is_reclaimed_over_tls(model_dir, tls_server, reference):
    server = handed_over(tls_server, 2)
    client = connect(server.store.url)
    cached = list(client.scan_iter(match="heta:cache:*"))
    if cached:  # the flows above cached these bodies' results: computed again here, so that a worker can die mid-job
        client.delete(*cached)
    ids = submit(server)
    os.kill(running_worker(server, ids[0]), signal.SIGKILL)
    finished = settle(server, ids)
    assert finished[ids[0]]["attempts"] == 2
    assert_clean(connect(server.store.url), ids, finished, reference, model_dir)


def test_the_service_user_can_neither_administer_nor_leave_its_keys(tls_store, certs):
    client = connect(tls_store.tls_url)
    assert client.set("heta:acl-probe", "1") and client.get("heta:acl-probe") == "1"
    for command in (
        ("FLUSHALL",),
        ("FLUSHDB",),
        ("CONFIG", "GET", "*"),
        ("KEYS", "*"),
        ("SCRIPT", "FLUSH"),
        ("BGSAVE",),
        ("SHUTDOWN",),
        ("ACL", "LIST"),
        ("MONITOR",),
        ("SET", "other:key", "1"),
        ("GET", "other:key"),
    ):
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.execute_command(*command)
    default_user = redis.Redis(
        port=tls_store.port,
        ssl=True,
        ssl_ca_certs=str(certs.ca_crt),
        ssl_certfile=str(certs.client_crt),
        ssl_keyfile=str(certs.client_key),
    )
    with pytest.raises(redis.AuthenticationError):  # the default user is off
        default_user.ping()


def test_a_plaintext_url_to_the_tls_port_fails_at_start_with_one_line(tls_store, tmp_path):
    env = base_env(None, tmp_path, REDIS_URL=f"redis://heta:{PASSWORD}@127.0.0.1:{tls_store.port}/0")
    started = time.monotonic()
    done = subprocess.run(heta_command("api"), env=env, capture_output=True, text=True, timeout=120)
    seconds = time.monotonic() - started
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert lines[0].startswith("heta api: error: REDIS_URL: ") and "TLS port" in lines[0] and "rediss://" in lines[0]
    print(f"plaintext to the TLS port: refused at start in {seconds:.1f} s (process start included)")


def bad_settings(certs, tls_store, plain_port: int) -> dict[str, tuple[dict, str]]:
    tls_url = f"rediss://heta:{PASSWORD}@127.0.0.1:{tls_store.port}/0"
    good = {k: str(v) for k, v in tls_env(certs).items()}
    return {
        "missing file": (
            {"REDIS_URL": tls_url, **good, "REDIS_TLS_CA": str(certs.ca_crt) + ".missing"},
            "HETA_REDIS_TLS_CA: ",
        ),
        "key without cert": (
            {"REDIS_URL": tls_url, "REDIS_TLS_KEY": good["REDIS_TLS_KEY"]},
            "HETA_REDIS_TLS_KEY is set without HETA_REDIS_TLS_CERT",
        ),
        "TLS files without a URL": (good, "HETA_REDIS_TLS_* is set without REDIS_URL=rediss://"),
        "TLS files with redis://": (
            {**good, "REDIS_URL": tls_url.replace("rediss", "redis")},
            "REDIS_URL is redis:// (plaintext)",
        ),
        "missing file in the URL": (
            {"REDIS_URL": tls_url + "?ssl_ca_certs=/nonexistent/ca.crt"},
            "REDIS_URL: ssl_ca_certs=/nonexistent/ca.crt: no such file",
        ),
        "unknown CA": (
            {**good, "REDIS_URL": tls_url, "REDIS_TLS_CA": good["REDIS_TLS_CERT"]},
            "HETA_REDIS_TLS_CA: Redis's certificate is not signed",
        ),
        "no client certificate": (
            {"REDIS_URL": tls_url, "REDIS_TLS_CA": good["REDIS_TLS_CA"]},
            "HETA_REDIS_TLS_CERT: ",
        ),
        "wrong password": (
            {**good, "REDIS_URL": tls_url.replace(PASSWORD, "wrong")},
            "REDIS_URL: Redis refused the credentials",
        ),
        "rediss:// to a plaintext port": (
            {**good, "REDIS_URL": f"rediss://127.0.0.1:{plain_port}/0", "REDIS_TIMEOUT_S": "1"},
            f"REDIS_URL: 127.0.0.1:{plain_port} accepts connections but completed no TLS handshake",
        ),
    }


def test_bad_tls_settings_fail_at_start_naming_the_setting(certs, tls_store, tmp_path, monkeypatch):
    plain = EmbeddedRedis(tmp_path / "plain", keep_alive=False, port=str(free_port()), bind="127.0.0.1")
    try:
        plain_port = int(plain.config["port"])
        for case, (settings, expected) in bad_settings(certs, tls_store, plain_port).items():
            for name in [n for n in os.environ if n.startswith("HETA_") or n == "REDIS_URL"]:
                monkeypatch.delenv(name)
            for name, value in settings.items():
                monkeypatch.setenv(name if name == "REDIS_URL" else f"HETA_{name}", value)
            started = time.monotonic()
            with pytest.raises(SystemExit) as refused:
                heta_main(["worker"])
            line = str(refused.value)
            assert line.startswith("heta worker: error: ") and expected in line and "\n" not in line, (case, line)
            assert time.monotonic() - started < 15, case  # a timeout or two, never a hang
    finally:
        plain.close()


def test_sentinel_and_cluster_clients_use_tls_and_the_acl_user(certs, tmp_path):
    """Each mode's client, built by connect_store from the same settings, over TLS as the service user."""
    common = {"redis_tls_ca": certs.ca_crt, "redis_tls_cert": certs.client_crt, "redis_tls_key": certs.client_key}
    master_port, sentinel_port, node_port = free_port(), free_port(), cluster_port()
    acl = acl_file(tmp_path, ADMIN)
    master = tls_redis(tmp_path / "master", certs, master_port, aclfile=str(acl))
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        "".join(
            f"{k.replace('_', '-')} {v}\n"
            for k, v in tls_config(certs, tls_port=sentinel_port, tls_replication="yes").items()
        )
        + f"dir {tmp_path}\nsentinel monitor heta 127.0.0.1 {master_port} 1\nsentinel auth-user heta admin\n"
        "sentinel auth-pass heta admin-password\n"
    )
    sentinel = subprocess.Popen(
        [debian_redis_server(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    node = tls_redis(
        tmp_path / "node",
        certs,
        node_port,
        aclfile=str(acl),
        tls_cluster="yes",
        cluster_enabled="yes",
        cluster_config_file="nodes.conf",
    )
    try:
        admin = redis.Redis(
            port=node_port,
            username="admin",
            password="admin-password",
            ssl=True,
            ssl_ca_certs=str(certs.ca_crt),
            ssl_certfile=str(certs.client_crt),
            ssl_keyfile=str(certs.client_key),
            decode_responses=True,
        )
        admin.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        wait_for(lambda: admin.cluster("info")["cluster_state"] == "ok", 30, "the one-node cluster did not form")
        modes = {
            "sentinel": Settings(
                redis_sentinels=[f"127.0.0.1:{sentinel_port}"], redis_username="heta", redis_password=PASSWORD, **common
            ),
            "cluster": Settings(
                redis_url=f"rediss://heta:{PASSWORD}@127.0.0.1:{node_port}/0", redis_cluster=True, **common
            ),
        }
        for mode, settings in modes.items():
            client = wait_for(lambda: _ready(connect_store(settings)), 30, f"{mode}: no connection")  # noqa: B023 - called at once
            assert client.eval("return redis.call('INCR', KEYS[1])", 1, f"heta:{{{mode}}}:n") == 1, mode
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set(f"other:{{{mode}}}", "1")
            client.close()
    finally:
        sentinel.terminate()
        sentinel.wait(timeout=10)
        node.close()
        master.close()


def _ready(client):
    with contextlib.suppress(redis.ConnectionError):
        if client.ping():
            return client
    client.close()
    return None
