"""`heta download`, offline: a Hugging Face cache laid out on disk as the Hub client writes it, the
real snapshot_download reading it under HF_HUB_OFFLINE=1, and the one-line errors."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub.utils import filter_repo_objects

from heta_service.download import ALLOW_PATTERNS

COMMIT = "0123456789abcdef0123456789abcdef01234567"
OFFLINE = " is not in the cache ({home}) and HF_HUB_OFFLINE=1 forbids fetching it: run with HF_HUB_OFFLINE=0"


def heta(*args: str, hf_home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HETA_MODELS", None)
    script = Path(sys.executable).parent / "heta"
    return subprocess.run([str(script), *args], env=env, capture_output=True, text=True, timeout=timeout)


def fake_cache(hf_home: Path, model_dir: str, repo: str = "org/tiny", refs=("main",), weights: bool = True) -> Path:
    """hub/models--org--tiny/snapshots/<commit>/ and refs/<name> -> <commit>: the Hub client's layout."""
    folder = hf_home / "hub" / ("models--" + repo.replace("/", "--"))
    snapshot = folder / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    for path in Path(model_dir).iterdir():
        if weights or path.suffix != ".safetensors":
            shutil.copy(path, snapshot / path.name)
    (folder / "refs").mkdir()
    for ref in refs:
        (folder / "refs" / ref).write_text(COMMIT)
    return snapshot


def test_a_cached_model_is_found_offline_and_pinned_to_its_commit(tmp_path, model_dir):
    snapshot = fake_cache(tmp_path, model_dir, refs=("main", "v1"))

    def found(model: str) -> list[str]:
        return [f"{model}: cached in {snapshot}", f"  pin it: HETA_MODELS=org/tiny@{COMMIT}"]

    # the default branch, a commit and a tag in one command (one process start-up: seconds each), then --revision
    names = ["org/tiny", f"org/tiny@{COMMIT}", "org/tiny@v1"]
    done = heta("download", *names, hf_home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [line for name in names for line in found(name)]
    done = heta("download", "org/tiny", "--revision", "v1", hf_home=tmp_path)
    assert done.returncode == 0 and done.stdout.splitlines() == found("org/tiny"), done.stderr


def test_every_configured_model_is_fetched_when_none_is_named(tmp_path, model_dir):
    snapshot = fake_cache(tmp_path, model_dir)
    env_models = f"org/tiny,heta-demo,{model_dir}"
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "HETA_MODELS": env_models}
    script = Path(sys.executable).parent / "heta"
    done = subprocess.run([str(script), "download"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"org/tiny: cached in {snapshot}",
        f"  pin it: HETA_MODELS=org/tiny@{COMMIT}",
        "heta-demo is built into the package: nothing to download",
        f"{model_dir} is a local directory: nothing to download",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["org/absent"],
            "org/absent" + OFFLINE,
        ),
        (
            ["org/tiny@v9"],
            "org/tiny@v9" + OFFLINE,
        ),
        (
            ["org/tiny@v1", "--revision", "v2"],
            "'org/tiny@v1' already pins revision 'v1'; --revision 'v2' contradicts it",
        ),
        (["org/tiny@"], "'org/tiny@': expected org/name@revision"),
        (["heta-demo", "--revision", "v1"], "heta-demo is built in and has no revisions"),
        (["org/tiny", "heta-demo", "--revision", "v1"], "--revision needs exactly one model"),
    ],
)
def test_errors_are_one_line_with_status_2(tmp_path, model_dir, args, message):
    fake_cache(tmp_path, model_dir, refs=("main", "v1"))
    done = heta("download", *args, hf_home=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == f"heta download: error: {message.format(home=tmp_path)}\n"


def test_a_repository_without_safetensors_is_refused(tmp_path, model_dir):
    fake_cache(tmp_path, model_dir, weights=False)
    done = heta("download", "org/tiny", hf_home=tmp_path)
    assert done.returncode == 2
    assert (
        done.stderr == "heta download: error: org/tiny: the repository has no safetensors weights"
        " (pickled .bin weights are never loaded)\n"
    )


def test_only_safetensors_weights_and_config_tokenizer_generation_files_are_fetched():
    """The filter snapshot_download applies to a repository's file list, on a typical one."""
    files = [
        "model.safetensors",
        "model-00001-of-00002.safetensors",
        "model.safetensors.index.json",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer.model",
        "special_tokens_map.json",
        "vocab.json",
        "merges.txt",
        "chat_template.jinja",
        "added_tokens.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
        "onnx/model.onnx",
        "model.gguf",
        "tf_model.h5",
        "flax_model.msgpack",
        "README.md",
        ".gitattributes",
        "original/consolidated.00.pth",
    ]
    kept = set(filter_repo_objects(files, allow_patterns=ALLOW_PATTERNS))
    assert kept == set(files[:13])
