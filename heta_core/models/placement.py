"""Where a model's weights live and in what form: device maps (``accelerate``) and quantized weights (``torchao``).

A model loaded with a ``device_map`` is split by accelerate: each top-level module (a block, the
embeddings, the head) computes on its own device, and modules mapped to ``"cpu"``/``"disk"`` on a GPU
machine (``"disk"`` anywhere) keep their weights offloaded; accelerate's hooks bring them in for each
forward and move a module's inputs to its device. The engine reads some weights outside any forward
(``W_O``, ``W_V``): :func:`weight` fetches them the same way and dequantizes quantized ones, so the
adapters hand the algorithm plain tensors wherever the block lives.

Quantized weights are torchao's int8 weight-only (``Int8WeightOnlyConfig``): activations stay in the
model's dtype, so second derivatives with respect to the activations go through the dequantized
matmul like any other. torchao quantizes ``nn.Linear`` layers only; GPT-2's ``Conv1D`` projections
(the same affine map with a transposed weight) are turned into ``nn.Linear`` first so that they are
quantized too.

Both libraries are the ``placement`` extra (``pip install 'heta[placement]'``).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..errors import InputError

QUANTIZATIONS = ("int8",)
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# torchao wants float32/bfloat16/float16 activations (its int8 kernels refuse float64)
QUANTIZABLE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


class _ImportNoise(logging.Filter):
    """Lines torchao's import logs that say nothing to a user (transformers imports torchao whenever it
    is installed, so they would reach every command's stderr): one "Failed to load" per CUDA extension
    on a CPU-only torch (not needed there), and torch's deprecation notice for each Enum torchao
    registers with pytree. Any other message passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.name == "torchao":
            return not (torch.version.cuda is None and message.startswith("Failed to load") and ".so" in message)
        return "is an Enum subclass and is now natively supported" not in message


for _logger in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_logger).addFilter(_ImportNoise())


def _require(package: str, what: str):
    import importlib

    try:
        return importlib.import_module(package)
    except ImportError:
        raise InputError(f"{what} needs {package}: pip install 'heta[placement]'", code="missing_dependency") from None


def parse_device_map(value: str | dict | None, *, check_devices: bool = True) -> str | dict | None:
    """``auto``/``balanced``/``balanced_low_0``/``sequential``, a mapping of module name → device
    (``cpu``, ``disk``, ``cuda:N`` or a GPU index), given as a dict, JSON text or ``@FILE`` of JSON.
    ``check_devices=False``: the form only (a process that never loads the model, e.g. the API)."""
    if value is None or isinstance(value, dict):
        return _check_map(value, check_devices) if value is not None else None
    text = value.strip()
    if text in DEVICE_MAP_STRATEGIES:
        return text
    if text.startswith("@"):
        try:
            with open(text[1:], encoding="utf-8") as handle:
                text = handle.read()
        except OSError as error:
            raise InputError(
                f"cannot read device map file {text[1:]!r}: {error.strerror}", code="invalid_device_map"
            ) from None
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError:
        raise InputError(
            f"device map must be one of {', '.join(DEVICE_MAP_STRATEGIES)}, "
            f"a JSON object of module → device, or @FILE; got {value!r}",
            code="invalid_device_map",
        ) from None
    if not isinstance(mapping, dict):
        raise InputError("device map JSON must be an object of module name → device", code="invalid_device_map")
    return _check_map(mapping, check_devices)


def _check_map(mapping: dict, check_devices: bool = True) -> dict:
    if not mapping:
        raise InputError("device map is empty", code="invalid_device_map")
    for name, device in mapping.items():
        if isinstance(device, bool) or not isinstance(device, (int, str)):
            raise InputError(f"device map: {name!r} → {device!r} is not a device", code="invalid_device_map")
        if device in ("cpu", "disk"):
            continue
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError):
            raise InputError(
                f"device map: {name!r} → {device!r} is not a device (cpu, disk, cuda:N or N)", code="invalid_device_map"
            ) from None
        if (
            check_devices
            and resolved.type == "cuda"
            and (not torch.cuda.is_available() or (resolved.index or 0) >= torch.cuda.device_count())
        ):
            raise InputError(
                f"device map: {name!r} → {device!r}, but no such CUDA device is available", code="invalid_device_map"
            )
    return mapping


def check_placement(device_map, offload_folder: str | None, device) -> None:
    """Refuses combinations that cannot work, before any weights are read."""
    if device_map is None:
        if offload_folder is not None:
            raise InputError("an offload folder is only used with a device map", code="invalid_device_map")
        return
    _require("accelerate", "a device map")
    if device is not None:
        raise InputError(
            "give a device or a device map, not both (a device map places every module itself)",
            code="invalid_device_map",
        )
    if isinstance(device_map, dict) and "disk" in device_map.values() and not offload_folder:
        raise InputError('a device map with "disk" entries needs an offload folder', code="invalid_device_map")


def check_quantize(quantize: str | None) -> None:
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise InputError(
            f"quantize must be one of {', '.join(QUANTIZATIONS)}; got {quantize!r}", code="invalid_quantize"
        )
    if quantize is not None:
        _require("torchao", "quantize")


def check_tied(model: nn.Module) -> None:
    """A model that ties its output head to its input embeddings (one tensor) needs both on one device:
    split apart, the head's offload hook finds no weight of its own."""
    device_map = getattr(model, "hf_device_map", None)
    head, embeddings = model.get_output_embeddings(), model.get_input_embeddings()
    if not device_map or head is None or head.weight is not embeddings.weight:
        return
    names = {id(module): name for name, module in model.named_modules()}

    def placed(module: nn.Module):
        name = names[id(module)]
        key = max((k for k in device_map if k == "" or name == k or name.startswith(k + ".")), key=len)
        return device_map[key]

    if placed(head) != placed(embeddings):
        raise InputError(
            f"this model ties {names[id(head)]} to {names[id(embeddings)]} "
            "(one tensor): the device map must put both on one device",
            code="invalid_device_map",
        )


def linear_from_conv1d(conv: nn.Module) -> nn.Linear:
    """GPT-2's ``Conv1D`` (``x @ W + b`` with ``W`` ``[in, out]``) as the equal ``nn.Linear``."""
    fan_in, fan_out = conv.weight.shape
    linear = nn.Linear(fan_in, fan_out, bias=conv.bias is not None, device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.t())
        if conv.bias is not None:
            linear.bias.copy_(conv.bias)
    return linear


def quantize_model(model: nn.Module, quantize: str) -> None:
    """Quantizes ``model``'s linear layers in place (torchao int8 weight-only, per-row scales)."""
    check_quantize(quantize)
    if model.dtype not in QUANTIZABLE_DTYPES:
        raise InputError(
            f"quantize={quantize!r} needs a float32, bfloat16 or float16 "
            f"model (torchao's int8 kernels); this one is {model.dtype}",
            code="invalid_quantize",
        )
    if any(p.device.type == "meta" for p in model.parameters()):
        raise InputError(
            "quantize does not combine with offloaded weights (a device "
            "map with cpu/disk entries on a GPU machine, or disk)",
            code="invalid_quantize",
        )
    from torchao.quantization import Int8WeightOnlyConfig, quantize_
    from transformers.pytorch_utils import Conv1D

    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, Conv1D):
                setattr(parent, name, linear_from_conv1d(child))
    quantize_(model, Int8WeightOnlyConfig())
    model.heta_quantization = quantize  # read back by :func:`describe`


def is_offloaded(module: nn.Module) -> bool:
    hook = getattr(module, "_hf_hook", None)
    return bool(hook is not None and getattr(hook, "offload", False))


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """A quantized weight (a torchao tensor subclass) as the float tensor it stands for."""
    if type(tensor) in (torch.Tensor, nn.Parameter):
        return tensor
    return tensor.dequantize()


def stored_bytes(tensor: torch.Tensor) -> int:
    """Bytes a parameter takes as stored: a torchao int8 weight's int8 data and scales, not its float size."""
    if type(tensor) in (torch.Tensor, nn.Parameter):
        return tensor.numel() * tensor.element_size()
    return sum(
        getattr(tensor, part).numel() * getattr(tensor, part).element_size() for part in tensor.__tensor_flatten__()[0]
    )


def weight(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """``module.<name>`` as a plain tensor on the device the module computes on: loaded by the module's
    accelerate hook when its weights are offloaded (then released again: the returned tensor keeps the
    loaded copy alive only as long as the caller holds it), dequantized when quantized."""
    with _aligned(module):
        value = getattr(module, name)
        return None if value is None else plain(value).detach()


def _aligned(module: nn.Module):
    if not is_offloaded(module):
        return contextlib.nullcontext()
    from accelerate.utils import align_module_device

    return align_module_device(module)


def execution_device(module: nn.Module) -> torch.device:
    """The device ``module`` computes on: its accelerate hook's when it has one, else its weights'."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    return next(module.parameters()).device


@dataclass(frozen=True)
class Placement:
    """How a model is placed: its dtype, quantization and, for a model split by a device map, the
    modules per device (``disk``: offloaded to the offload folder)."""

    dtype: str
    quantization: str | None = None
    device_map: dict[str, int] = field(default_factory=dict)  # device → modules mapped there; empty: one device

    def to_dict(self) -> dict[str, Any]:
        return {"dtype": self.dtype, "quantization": self.quantization, "device_map": dict(self.device_map)}


def describe(model: nn.Module) -> Placement:
    counts: dict[str, int] = {}
    for device in (getattr(model, "hf_device_map", None) or {}).values():
        key = f"cuda:{device}" if isinstance(device, int) else str(device)
        counts[key] = counts.get(key, 0) + 1
    if len(counts) == 1 and next(iter(counts)) != "disk":
        counts = {}  # everything on one device: not split
    quantization = getattr(model, "heta_quantization", None)
    return Placement(str(model.dtype).removeprefix("torch."), quantization, counts)
