"""meta.revision names the exact weights; the wheel installs heta_core and heta_service, nothing generic."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from heta_core import Attributor
from heta_core.models.toymodels import tiny_model, tiny_tokenizer

from .helpers import ROOT


def safetensors_sha256(directory: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(directory).glob("*.safetensors")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return "sha256:" + digest.hexdigest()


def test_heta_demo_has_a_fixed_revision():
    result = Attributor.from_pretrained("heta-demo").attribute("c=6 e=6 b=3 h=3 m=6 ? h", target_text=" 3")
    assert result.meta.revision == "heta-demo-1"


def test_a_local_model_is_named_by_the_content_of_its_weights(model_dir, tmp_path):
    local = Attributor.from_pretrained(model_dir)
    assert (
        local.revision == safetensors_sha256(model_dir)
        and local.attribute("the cat sat").meta.revision == local.revision
    )
    copy = shutil.copytree(model_dir, tmp_path / "elsewhere")  # same weights, another path: same revision
    assert Attributor.from_pretrained(str(copy)).revision == local.revision
    other = tmp_path / "other"
    tiny_model("gpt2", seed=1).save_pretrained(other)
    tiny_tokenizer().save_pretrained(other)
    assert Attributor.from_pretrained(str(other)).revision not in (None, local.revision)
    in_memory = Attributor(tiny_model("gpt2"), tiny_tokenizer())
    assert in_memory.attribute("the cat sat").meta.revision is None


def test_a_hub_model_is_named_by_its_snapshot_commit(model_dir, tmp_path):
    """A Hugging Face cache laid out as the Hub client writes it, read offline."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--heta-test--tiny"
    shutil.copytree(model_dir, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    script = (
        "import json; from heta_core import Attributor\n"
        "names = ['heta-test/tiny', 'heta-test/tiny@main', 'heta-test/tiny@" + commit + "']\n"
        "print(json.dumps([Attributor.from_pretrained(n).attribute('the cat sat').meta.revision for n in names]))"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [commit, commit, commit]


def test_the_wheel_holds_every_module_and_no_generic_package(tmp_path):
    source = tmp_path / "src"  # a copy: building in place would leave build/ and *.egg-info behind
    for name in ("heta_core", "service"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = (tmp_path / "dist").glob("heta-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"heta_core", "heta_service"}
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "heta_core").rglob("*.py")}
    expected |= {"heta_service/" + str(p.relative_to(ROOT / "service")) for p in (ROOT / "service").rglob("*.py")}
    assert expected <= set(names), sorted(expected - set(names))
    assert "heta_core/evaluation/demo/heta-demo/model.safetensors" in names
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "heta_service.cli:register" in entry_points and "heta_core.cli:main" in entry_points
