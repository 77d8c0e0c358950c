"""What the steps need besides torch, whether this interpreter has it, and installing the rest into a
virtual environment that keeps the machine's torch, then rerunning the script there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from . import ROOT, SCRIPT
from .plan import TEST_TOOLS


def requirements() -> list[str]:
    """What the steps need besides torch: the engine's dependencies, the server and placement extras, the test tools."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    # placement: accelerate and torchao, so that device maps and int8 weights can be checked on the GPU
    wanted = (
        [r for r in project["dependencies"] if _name(r) != "torch"] + list(extras["server"]) + list(extras["placement"])
    )
    wanted += [r for r in extras["dev"] if _name(r) in TEST_TOOLS]
    seen: set[str] = set()
    return [r for r in wanted if not (_name(r) in seen or seen.add(_name(r)))]


def _name(requirement: str) -> str:
    import re

    return re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def missing(wanted: list[str]) -> list[str]:
    """The requirements this interpreter does not satisfy (absent, or a version outside the range)."""
    from importlib import metadata

    try:
        from packaging.requirements import Requirement
    except ImportError:  # pip always carries it
        from pip._vendor.packaging.requirements import Requirement

    out = []
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        try:
            version = metadata.version(requirement.name)
        except metadata.PackageNotFoundError:
            out.append(text)
            continue
        if not requirement.specifier.contains(version, prereleases=True):
            out.append(text)
    return out


def project_installed() -> bool:
    """``heta_core`` and ``heta_service`` import from this checkout, with the `heta` command's metadata."""
    from importlib import metadata

    try:
        import heta_core
        import heta_service  # noqa: F401 - only the installed distribution maps service/ to this name

        metadata.version("heta")
    except (ImportError, metadata.PackageNotFoundError):
        return False
    return Path(heta_core.__file__).resolve().parents[1] == ROOT


def install_commands(
    python: str, wheelhouse: str | None, needed: list[str], torch_version: str | None
) -> list[list[str]]:
    """pip commands that add the project and ``needed`` without touching torch."""
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check"]
    offline = ["--no-index", "--find-links", wheelhouse] if wheelhouse else []
    # the project itself: no dependency resolution at all, and no build isolation (that would need
    # setuptools from an index the machine cannot reach)
    commands = [pip + ["--no-index", "--no-deps", "--no-build-isolation", "-e", str(ROOT)]]
    if needed:
        pin = [f"--constraint={_pin_file(torch_version)}"] if torch_version else []
        commands.append(pip + offline + pin + needed)
    return commands


def _pin_file(torch_version: str) -> str:
    path = Path(tempfile.gettempdir()) / "gpu-check-torch-pin.txt"
    path.write_text(f"torch=={torch_version}\n")
    return str(path)


def ensure_installed(args) -> dict:
    """Installs what is missing into ``args.venv`` and reruns this script there (never returns then)."""
    needed = missing(requirements())
    if not needed and project_installed():
        return {"venv": None, "installed": [], "python": sys.executable}
    if os.environ.get("GPU_CHECK_INSTALLED") == "1":
        raise SystemExit(f"gpu-check: still missing after installing: {needed or ['the project']}")
    try:
        from importlib import metadata

        torch_version = metadata.version("torch")
    except Exception:  # noqa: BLE001
        raise SystemExit("gpu-check: torch is not installed: install the machine's CUDA build of torch first") from None
    venv = Path(args.venv).resolve()
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    # the new environment sees this interpreter's packages (torch among them) after its own
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    parents = [p for p in sys.path if p and Path(p).is_dir() and ("site-packages" in p or "dist-packages" in p)]
    Path(site, "_gpu_check_parent.pth").write_text("\n".join(parents) + "\n")
    print(
        f"gpu-check: installing into {venv} (torch {torch_version} stays): {', '.join(needed) or 'the project'}",
        flush=True,
    )
    for command in install_commands(str(python), args.wheelhouse, needed, torch_version):
        subprocess.run(command, check=True)
    env = {**os.environ, "GPU_CHECK_INSTALLED": "1", "GPU_CHECK_INSTALL_LOG": json.dumps(needed)}
    os.execve(str(python), [str(python), str(SCRIPT), *sys.argv[1:]], env)
