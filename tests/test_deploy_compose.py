"""docker-compose.yml, validated statically (no Docker engine on these machines): its profiles (GPU
by default, CPU without any GPU), Redis as a queue, the wiring of API, workers, Prometheus, Jaeger and
Grafana, and that everything it names exists or is documented in docs/deploy.md."""

import re
from urllib.parse import urlparse

import yaml

from heta_service.settings import Settings

from .helpers import ROOT, settings_variables

EXTERNAL_ENV = ("HF_", "GF_", "COMPOSE_")  # variables of Hugging Face, Grafana and compose, not of the service


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def active(services: dict, profiles: set[str]) -> set[str]:
    """The services `docker compose up` starts with these profiles enabled."""
    return {name for name, s in services.items() if not s.get("profiles") or set(s["profiles"]) & profiles}


def gpu_reservation(service: dict) -> list:
    return service.get("deploy", {}).get("resources", {}).get("reservations", {}).get("devices", [])


def test_compose_profiles_gpu_by_default_and_cpu_without_any_gpu():
    services = compose()["services"]
    dotenv = dict(
        line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines() if line and not line.startswith("#")
    )
    default = active(services, set(dotenv["COMPOSE_PROFILES"].split(",")))  # `docker compose up`
    assert default == {"redis", "api", "worker", "prometheus", "jaeger", "grafana"}
    (device,) = gpu_reservation(services["worker"])
    assert device == {"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}
    assert services["worker"]["environment"]["HETA_DEVICE"] == "cuda" and services["worker"]["image"] == "heta:cuda"
    cpu = active(services, {"cpu"})  # `docker compose --profile cpu up`: the flag replaces COMPOSE_PROFILES
    assert cpu == {"redis", "api", "worker-cpu", "prometheus", "jaeger", "grafana"}
    assert not any(gpu_reservation(services[name]) for name in cpu)
    assert (
        services["worker-cpu"]["environment"]["HETA_DEVICE"] == "cpu" and services["worker-cpu"]["image"] == "heta:cpu"
    )
    for name in ("worker", "worker-cpu"):  # `--scale worker=N`: nothing that only one container can have
        assert "container_name" not in services[name] and "ports" not in services[name]
    assert "download" not in default | cpu and services["download"]["profiles"] == ["tools"]


def test_compose_redis_is_a_queue_that_refuses_rather_than_evicts():
    redis = compose()["services"]["redis"]
    assert re.fullmatch(r"redis:7\.\d+\.\d+-alpine", redis["image"])
    command = redis["command"]
    options = {command[i]: command[i + 1] for i in range(1, len(command) - 1, 2)}
    assert options["--appendonly"] == "yes" and options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction" and options["--maxmemory"]


def test_compose_wires_api_workers_and_prometheus_to_each_other(monkeypatch):
    services = compose()["services"]
    assert services["api"]["command"] == ["heta", "api"]
    for name in ("worker", "worker-cpu"):
        assert services[name]["command"] == ["heta", "worker"]
        assert services[name]["healthcheck"]["test"] == ["CMD", "heta", "probe-worker"]
        grace = int(services[name]["stop_grace_period"].removesuffix("s"))
        assert grace > Settings(_env_file=None).drain_s  # SIGTERM drains before Docker kills
    for name in ("api", "worker", "worker-cpu"):
        env = services[name]["environment"]
        assert urlparse(env["REDIS_URL"]).hostname == "redis" and "HETA_MODELS" in env
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        monkeypatch.setenv("REDIS_URL", env["REDIS_URL"])
        assert Settings(_env_file=None).redis_url == env["REDIS_URL"]  # the variable the service reads
    port = Settings(_env_file=None).port
    assert f"{port}:{port}" in services["api"]["ports"] and "/healthz" in " ".join(
        services["api"]["healthcheck"]["test"]
    )
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"] == [{"targets": [f"api:{port}"]}] and job["metrics_path"] == "/metrics"
    for name, service in services.items():
        assert set(service.get("depends_on", {})) <= set(services), name
        assert "latest" not in service.get("image", ""), name


def test_compose_sends_traces_to_jaeger_and_grafana_reads_them(monkeypatch):
    services = compose()["services"]
    assert re.fullmatch(r"jaegertracing/all-in-one:\d+\.\d+\.\d+", services["jaeger"]["image"])
    for name in ("api", "worker", "worker-cpu"):
        endpoint = services[name]["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"]
        url = urlparse(endpoint)
        assert (url.scheme, url.hostname, url.port) == ("http", "jaeger", 4318), name  # Jaeger's OTLP/HTTP port
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
        assert Settings(_env_file=None).otel_exporter_otlp_endpoint == endpoint  # the variable the service reads
    (source,) = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "jaeger.yml").read_text()
    )["datasources"]
    assert source["type"] == "jaeger" and source["access"] == "proxy" and not source.get("isDefault")
    url = urlparse(source["url"])
    assert (
        url.hostname == "jaeger" and f"127.0.0.1:{url.port}:{url.port}" in services["jaeger"]["ports"]
    )  # the query UI/API
    prometheus = yaml.safe_load(
        (ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert source["uid"] not in {other["uid"] for other in prometheus["datasources"]}
    assert "jaeger" in services["grafana"]["depends_on"]


def test_compose_names_only_things_that_exist_or_are_documented():
    spec = compose()
    services, declared = spec["services"], set(spec["volumes"])
    guide = (ROOT / "docs" / "deploy.md").read_text()
    used = set()
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: {source}"
            else:
                used.add(source)
        for variable in service.get("environment", {}):
            if variable.startswith(EXTERNAL_ENV):
                assert f"`{variable}`" in guide, f"{name}: {variable} is not in docs/deploy.md"
            else:
                assert variable in settings_variables(), f"{name}: {variable} is not a setting"
        for profile in service.get("profiles", []):
            assert f"`{profile}`" in guide, profile
    assert used == declared
    text = (ROOT / "docker-compose.yml").read_text()
    for variable in set(re.findall(r"\$\{(\w+)", text)) | {"COMPOSE_PROFILES"}:
        assert f"| `{variable}` |" in guide, f"${{{variable}}} is not in docs/deploy.md's compose table"
    for name in services:
        assert re.search(rf"`{name}`|compose up -d {name}\b", guide), f"the {name} service is not in docs/deploy.md"
