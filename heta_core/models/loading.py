"""Loading a Hugging Face decoder-only model by id or local path, under the safety rules.

Safetensors weights only (``use_safetensors=True``: pickled ``.bin`` checkpoints can execute code)
and ``trust_remote_code=False``. The architecture is checked from the config before any weights
are read, so an unsupported model fails fast with the list of supported ones.

``"heta-demo"`` and ``"heta-demo-hard"`` name the models shipped inside the package
(:mod:`heta_core.evaluation.demo`): they load offline, with no Hugging Face Hub lookup.

A model is named by a Hugging Face id, a local directory or ``heta-demo``; ``id@revision`` pins a
Hub revision (a branch, tag or commit). :func:`model_revision` names the exact weights for the
result's ``meta.revision``.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from ..errors import InputError, ModelLoadError
from .adapters import adapter_for
from .placement import check_placement, check_quantize, check_tied, parse_device_map, quantize_model

DTYPE_NAMES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype | str:
    if dtype is None or dtype == "auto":
        return "auto"  # the dtype the checkpoint was saved in
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPE_NAMES:
        raise InputError(f"dtype must be one of auto, {', '.join(DTYPE_NAMES)}; got {dtype!r}", code="invalid_dtype")
    return DTYPE_NAMES[dtype]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The requested device (default: CUDA when available), checked to exist."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InputError(f"unknown device {device!r}: {_first_line(error)}", code="invalid_device") from error
    if resolved.type == "cuda" and (
        not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count()
    ):
        raise InputError(f"device {device!r} requested but no such CUDA device is available", code="invalid_device")
    if resolved.type not in ("cpu", "cuda", "mps", "xpu"):
        raise InputError(f"unsupported device type {resolved.type!r}", code="invalid_device")
    return resolved


def builtin_path(name_or_path: str) -> str:
    """The directory of a builtin model name (``heta-demo``, ``heta-demo-hard``); anything else is returned
    unchanged."""
    from ..evaluation.demo import BUILTINS

    return str(BUILTINS[name_or_path][0]) if name_or_path in BUILTINS else name_or_path


_PINNED = re.compile(r"^(?P<name>[^@]+)@(?P<revision>[\w.\-/]+)$")


def split_revision(spec: str, revision: str | None = None) -> tuple[str, str | None]:
    """``"org/name@rev"`` → ``("org/name", "rev")``. A local path that exists as written is never
    split; an explicit ``revision`` wins over one in the name."""
    match = _PINNED.match(spec)
    if match is None or os.path.exists(spec):
        return spec, revision
    return match["name"], revision or match["revision"]


def _sha256_of_safetensors(directory: Path) -> str | None:
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as handle:
            while chunk := handle.read(1 << 24):
                digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def model_revision(name_or_path: str, revision: str | None = None) -> str | None:
    """The exact weights: a builtin demo model's fixed version, ``sha256:<hex>`` over a local directory's
    safetensors files (read once: about a second per GB), or a Hub snapshot's commit hash (from the
    local cache, no network). None when it cannot be told (an in-memory model)."""
    from ..evaluation.demo import BUILTINS

    if name_or_path in BUILTINS:
        return BUILTINS[name_or_path][1]
    if os.path.isdir(name_or_path):
        return _sha256_of_safetensors(Path(name_or_path))
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name_or_path, "config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a valid repo id: nothing to report
        return None
    match = re.search(r"snapshots/([0-9a-f]{40})/", str(cached)) if isinstance(cached, str) else None
    return match.group(1) if match else None


def load_planner(name_or_path: str, *, dtype: str | torch.dtype | None = None, revision: str | None = None):
    """(model on the meta device, tokenizer): the architecture without its weights, for validating
    inputs and estimating costs in processes that never run the model (e.g. an API front end)."""
    name_or_path = builtin_path(name_or_path)
    torch_dtype = resolve_dtype(dtype)
    model_config = _supported_config(name_or_path, revision)
    if torch_dtype == "auto":
        torch_dtype = getattr(model_config, "dtype", None) or torch.float32
        torch_dtype = DTYPE_NAMES.get(torch_dtype, torch_dtype) if isinstance(torch_dtype, str) else torch_dtype
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(model_config, dtype=torch_dtype, trust_remote_code=False)
    return model.eval(), _tokenizer(name_or_path, revision)


_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.\-]*(/[\w.\-]+)?$")


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connect to the Hub: without it, a machine with no network spends ~25 s in retries."""
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection(
            (url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout
        ).close()
    except OSError:
        return False
    return True


def _locate(name_or_path: str, revision: str | None) -> None:
    """Fail in a second with one clear line: a path that is not a directory, or a Hub id that is
    neither in the local cache nor reachable."""
    if os.path.isdir(name_or_path):
        return
    if not _HUB_ID.match(name_or_path):
        raise ModelLoadError(f"cannot load model {name_or_path!r}: no such directory (and not a Hugging Face id)")
    from huggingface_hub import constants, try_to_load_from_cache

    if constants.HF_HUB_OFFLINE or isinstance(
        try_to_load_from_cache(name_or_path, "config.json", revision=revision), str
    ):
        return  # offline mode says it in one line itself; a cached snapshot loads without the network
    if not _hub_reachable():
        raise ModelLoadError(
            f"cannot load model {name_or_path!r}: it is not in the local Hugging Face cache and the Hub cannot be "
            "reached (fetch it with `heta download` on a connected machine, or check the network)"
        )


def _supported_config(name_or_path: str, revision: str | None):
    """The model's config, checked against the adapters before any weights are read."""
    _locate(name_or_path, revision)
    try:
        model_config = AutoConfig.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(f"cannot load model {name_or_path!r}: {_first_line(error)}") from error
    adapter_for(model_config)
    return model_config


def _tokenizer(name_or_path: str, revision: str | None):
    try:
        return AutoTokenizer.from_pretrained(name_or_path, revision=revision, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # input_ids still work; text input will say it needs a tokenizer


def load_model(
    name_or_path: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    revision: str | None = None,
    device_map: str | dict | None = None,
    offload_folder: str | None = None,
    quantize: str | None = None,
):
    """(model, tokenizer or None) for a supported causal LM; raises ModelLoadError / UnsupportedArchitectureError.

    ``device_map`` splits the model with accelerate (:mod:`.placement`; ``offload_folder`` holds
    ``"disk"`` modules); ``quantize="int8"`` quantizes its linear layers (torchao)."""
    name_or_path = builtin_path(name_or_path)
    torch_dtype = resolve_dtype(dtype)
    device_map = parse_device_map(device_map)
    check_placement(device_map, offload_folder, device)
    check_quantize(quantize)
    target_device = resolve_device(device) if device_map is None else None
    model_config = _supported_config(name_or_path, revision)
    placed = {} if device_map is None else {"device_map": device_map, "offload_folder": offload_folder}
    try:
        model = AutoModelForCausalLM.from_pretrained(
            name_or_path,
            config=model_config,
            revision=revision,
            dtype=torch_dtype,
            use_safetensors=True,
            trust_remote_code=False,
            **placed,
        )
    except (OSError, ValueError, KeyError) as error:
        raise ModelLoadError(
            f"cannot load weights of {name_or_path!r} (safetensors only): {_first_line(error)}"
        ) from error
    check_tied(model)
    tokenizer = _tokenizer(name_or_path, revision)
    if target_device is not None:
        model.to(target_device)
    if quantize is not None:
        quantize_model(model, quantize)
    model.eval()
    return model, tokenizer
