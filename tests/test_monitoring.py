"""deploy/prometheus and deploy/grafana: promtool's checks and unit tests, the alert tests' power to
catch a broken rule, and the Grafana dashboard as a dashboard model. The live half (a real
Prometheus scraping a real service) is tests/service/test_monitoring_live.py."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from .monitoring import DASHBOARD, GRAFANA, PROMETHEUS, ROOT, alert_rules, dashboard, metric_names, panel_queries

# what the issue asks the alerts and the dashboard to watch, by the metric that shows it
ALERTS_BY_METRIC = {
    "HetaJobWaitingTooLong": "heta_oldest_job_age_seconds",  # a job older than N minutes in the queue
    "HetaDeadLetters": "heta_jobs_total",  # dead letters appearing
    "HetaNoWorkerForModel": "heta_model_workers",  # no ready worker for a served model
    "HetaHigh5xxRate": "heta_requests_total",  # 5xx rate above 1 %
    "HetaJobLatencySLO": "heta_job_seconds_bucket",  # p95 job latency above its SLO
    "HetaGpuMemoryNearLimit": "heta_gpu_memory_bytes",  # GPU memory near the limit
}
DASHBOARD_METRICS = {
    "heta_requests_total",
    "heta_request_seconds_bucket",
    "heta_queue_depth",
    "heta_oldest_job_age_seconds",
    "heta_jobs_total",
    "heta_job_seconds_bucket",
    "heta_compute_seconds_total",
    "heta_hvps_total",
    "heta_workers",
    "heta_model_workers",
    "heta_gpu_memory_bytes",
}


def promtool(*args: str, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess:
    binary = shutil.which("promtool")
    assert binary, "promtool is not installed (scripts/setup installs Debian's prometheus)"
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_config_and_its_rules():
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout
    rules = promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0 and f"SUCCESS: {len(alert_rules())} rules found" in rules.stdout, (
        rules.stdout + rules.stderr
    )


def test_the_alerts_the_issue_asks_for_exist_and_read_their_metric():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name, metric in ALERTS_BY_METRIC.items():
        assert metric in metric_names(rules[name]["expr"]), name
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
        assert rule["annotations"]["runbook_url"] == f"docs/deploy.md#{rule['alert'].lower()}"


def test_every_alert_has_unit_tests_that_fire_it_and_keep_it_quiet_and_they_pass():
    done = promtool("test", "rules", "alerts.test.yml")
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    cases = [
        case
        for test in yaml.safe_load((PROMETHEUS / "alerts.test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    for rule in alert_rules():
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no test where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no test where it stays quiet"


@pytest.mark.parametrize("mutation", ["never fires", "always fires"])
def test_the_alert_unit_tests_catch_a_broken_rule(tmp_path, mutation):
    """Each alert's tests fail once its expression is replaced by one that never (or always) fires."""
    caught = []
    for rule in alert_rules():
        text = (PROMETHEUS / "alerts.yml").read_text()
        rules = yaml.safe_load(text)
        for candidate in rules["groups"][0]["rules"]:
            if candidate["alert"] == rule["alert"]:
                expr = candidate["expr"].strip()
                candidate["expr"] = "absent(vector(1))" if mutation == "never fires" else f"({expr}) or on() vector(1)"
                candidate.pop("for", None)
        (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
        shutil.copy(PROMETHEUS / "alerts.test.yml", tmp_path / "alerts.test.yml")
        done = promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
        if done.returncode != 0 and f"alertname: {rule['alert']}" in done.stdout + done.stderr:
            caught.append(rule["alert"])
    assert caught == [rule["alert"] for rule in alert_rules()]


def test_the_dashboard_is_a_valid_dashboard_model():
    board = dashboard()
    assert isinstance(board["schemaVersion"], int) and board["schemaVersion"] >= 36  # Grafana 9+
    assert re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", board["uid"]) and board["title"]
    panels = board["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) for i in ids)
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert panel["type"] in ("timeseries", "stat") and panel["title"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        area = {
            (x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])
        }
        assert not area & cells, f"{panel['title']} overlaps another panel"
        cells |= area
        refs = [target["refId"] for target in panel["targets"]]
        assert refs and len(refs) == len(set(refs)) and all(target["expr"].strip() for target in panel["targets"])
    variables = board["templating"]["list"]
    used = {name for _, expr in panel_queries() for name in re.findall(r"\$(\w+)", expr)}
    assert not used, f"variables left after substitution: {used}"
    assert {v["name"] for v in variables} == {"model"}


def test_every_datasource_reference_resolves_to_the_provisioned_prometheus():
    provisioned = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    uids = {(source["type"], source["uid"]) for source in provisioned}
    board = dashboard()
    references = [panel["datasource"] for panel in board["panels"]]
    references += [target["datasource"] for panel in board["panels"] for target in panel["targets"]]
    references += [variable["datasource"] for variable in board["templating"]["list"]]
    assert references and {(ref["type"], ref["uid"]) for ref in references} <= uids
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    (source,) = provisioned
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in compose and f"127.0.0.1:{port}:{port}" in compose[host]["ports"]


def test_the_provisioning_files_point_at_the_dashboard():
    """Follow the provider's path through compose's volume mounts back to the repository."""
    (provider,) = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "heta.yml").read_text())["providers"]
    grafana = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]["grafana"]
    mounts = {target: source for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    assert (ROOT / mounts["/etc/grafana/provisioning"]).resolve() == (GRAFANA / "provisioning").resolve()
    folder = ROOT / mounts[provider["options"]["path"]]
    assert folder.resolve() == DASHBOARD.parent.resolve() and sorted(p.name for p in folder.glob("*.json")) == [
        "heta.json"
    ]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / mounts[str(Path(home).parent)] / Path(home).name).resolve() == DASHBOARD.resolve()
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "true"
    assert grafana["environment"]["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"  # read-only


def test_the_dashboard_shows_what_the_issue_lists():
    read = {name for _, expr in panel_queries() for name in metric_names(expr)}
    assert DASHBOARD_METRICS <= read
    latency = [expr for title, expr in panel_queries() if "heta_request_seconds_bucket" in expr]
    assert sorted(re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in latency) == ["0.5", "0.95", "0.99"]
    assert all("route" in expr for expr in latency)


def test_metric_names_reads_a_promql_expression():
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(heta_request_seconds_bucket{route!="/metrics", a=~"x|y"}'
        "[5m] offset 1m))) > 1e9 and on(model) max without (pod) (heta_queue_depth) or vector(0)"
    )
    assert metric_names(expr) == {"heta_request_seconds_bucket", "heta_queue_depth"}
