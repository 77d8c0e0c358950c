"""``heta download``: fill the Hugging Face cache (``HF_HOME``) before the service starts, so that
workers load their models offline (the images set ``HF_HUB_OFFLINE=1``: nothing is fetched at run time).

Only what the engine loads is fetched: safetensors weights and the config, tokenizer and generation
files. Pickled ``.bin`` weights, ONNX or GGUF copies that many repositories also carry are skipped:
they are never loaded and can be several times the size of the model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from heta_core import Attributor, HetaError

ALLOW_PATTERNS = [
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer*",  # tokenizer.json, tokenizer_config.json, tokenizer.model (sentencepiece)
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.*",
    "merges.txt",
    "chat_template.*",
]
BUILTIN = "heta-demo"


class DownloadError(Exception):
    """Reported as one line on stderr, exit status 2."""


@dataclass
class Fetched:
    model: str  # as given
    pinned: str | None  # the HETA_MODELS entry that loads exactly these files (name@commit); None: nothing fetched
    path: str
    note: str


def split_revision(model: str, revision: str | None) -> tuple[str, str | None]:
    """``org/name@rev`` (the HETA_MODELS syntax) or ``org/name`` with ``--revision``."""
    name, at, pinned = model.partition("@")
    if not at:
        return model, revision
    if not name or not pinned:
        raise DownloadError(f"{model!r}: expected org/name@revision")
    if revision is not None and revision != pinned:
        raise DownloadError(f"{model!r} already pins revision {pinned!r}; --revision {revision!r} contradicts it")
    return name, pinned


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def fetch(model: str, revision: str | None = None) -> Fetched:
    if model == BUILTIN:
        if revision is not None:
            raise DownloadError(f"{BUILTIN} is built in and has no revisions")
        return Fetched(model, None, BUILTIN, f"{BUILTIN} is built into the package: nothing to download")
    if os.path.isdir(model):
        if revision is not None:
            raise DownloadError(f"{model} is a local directory: --revision applies to Hugging Face ids only")
        return Fetched(model, None, str(Path(model).resolve()), f"{model} is a local directory: nothing to download")
    repo, revision = split_revision(model, revision)

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalEntryNotFoundError

    try:
        path = snapshot_download(repo, revision=revision, allow_patterns=ALLOW_PATTERNS)
    except LocalEntryNotFoundError:
        where = f"@{revision}" if revision else ""
        raise DownloadError(
            f"{repo}{where} is not in the cache ({os.environ.get('HF_HOME', '~/.cache/huggingface')}) and "
            "HF_HUB_OFFLINE=1 forbids fetching it: run with HF_HUB_OFFLINE=0"
        ) from None
    except (HfHubHTTPError, HFValidationError, OSError, ValueError) as error:
        raise DownloadError(f"{model}: {_first_line(error)}") from None
    snapshot = Path(path)
    if not any(snapshot.glob("*.safetensors")):
        raise DownloadError(
            f"{model}: the repository has no safetensors weights (pickled .bin weights are never loaded)"
        )
    try:  # the architecture, from the config alone: an unsupported model fails here, not in a worker
        Attributor.planner(str(snapshot))
    except HetaError as error:
        raise DownloadError(f"{model}: {_first_line(error)}") from None
    # the cache keeps each revision under snapshots/<commit>: pinning that commit makes every worker
    # load these exact files, whatever the branch or tag points at later
    commit = snapshot.name if snapshot.parent.name == "snapshots" else revision
    pinned = f"{repo}@{commit}" if commit else repo
    return Fetched(model, pinned, str(snapshot), f"{model}: cached in {snapshot}")
