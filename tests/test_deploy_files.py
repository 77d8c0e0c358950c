"""Docker, compose and Kubernetes files, validated statically (no Docker engine on these machines)."""

import shlex
from pathlib import Path

import yaml

from service import jobs
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def test_dockerfile_installs_pinned_torch_first_runs_as_non_root_and_serves():
    rows = dockerfile_instructions()
    keywords = [k for k, _ in rows]
    assert keywords[0] == "FROM" and set(keywords) <= {"FROM", "ARG", "ENV", "RUN", "WORKDIR", "COPY", "USER", "EXPOSE",
                                                        "VOLUME", "HEALTHCHECK", "CMD"}  # fmt: skip
    runs = [rest for k, rest in rows if k == "RUN"]
    torch_step = next(i for i, r in enumerate(runs) if "torch==" in r)
    project_step = next(i for i, r in enumerate(runs) if '".[server]"' in r)
    assert torch_step < project_step and "--index-url" in runs[torch_step]
    assert ("USER", "heta") in rows and keywords.index("USER") > keywords.index("RUN")
    assert ("CMD", '["heta", "serve"]') in rows
    assert any(k == "HEALTHCHECK" and "/healthz" in rest for k, rest in rows)
    assert ("EXPOSE", "8000") in rows
    for _, rest in rows:
        if _ == "COPY":
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), source


def test_compose_wires_api_and_workers_to_one_redis(monkeypatch):
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "api", "worker"}
    assert services["api"]["command"] == ["heta", "api"] and services["worker"]["command"] == ["heta", "worker"]
    for name in ("api", "worker"):
        env = services[name]["environment"]
        assert env["REDIS_URL"] == "redis://redis:6379/0" and "HETA_MODELS" in env
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    assert "--appendonly" in services["redis"]["command"]
    monkeypatch.setenv("REDIS_URL", services["api"]["environment"]["REDIS_URL"])  # the variable the service reads
    assert Settings().redis_url == "redis://redis:6379/0"


def test_kubernetes_manifests():
    documents = [d for f in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    by_kind = {}
    for doc in documents:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    api = deployments["heta-api"]["spec"]["template"]["spec"]["containers"][0]
    worker = deployments["heta-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert api["command"] == ["heta", "api"] and worker["command"] == ["heta", "worker"]
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz" and api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for name, deployment in deployments.items():
        spec = deployment["spec"]
        assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items(), name
    config = by_kind["ConfigMap"][0]["data"]
    model = config["HETA_MODELS"].split(",")[0]
    trigger = by_kind["ScaledObject"][0]["spec"]["triggers"][0]
    assert trigger["type"] == "redis-streams"
    assert trigger["metadata"]["stream"] == jobs.stream_key(model)  # the stream the workers actually read
    assert trigger["metadata"]["consumerGroup"] == jobs.GROUP
    assert by_kind["ScaledObject"][0]["spec"]["scaleTargetRef"]["name"] == "heta-worker"
    assert config["REDIS_URL"].startswith("redis://heta-redis:6379")
    services = {s["metadata"]["name"] for s in by_kind["Service"]}
    assert {"heta-api", "heta-redis"} <= services
    grace = deployments["heta-worker"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > Settings(_env_file=None).drain_s


def test_every_setting_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for name in Settings.model_fields:
        assert f"HETA_{name.upper()}" in readme or name == "redis_url" and "REDIS_URL" in readme, name
