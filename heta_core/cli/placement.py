"""The flags that say where a model is loaded and in what form, shared by ``heta attribute`` and ``heta eval``."""

from __future__ import annotations

from typing import Any

from ..models.placement import DEVICE_MAP_STRATEGIES, QUANTIZATIONS


def add_placement_flags(parser) -> None:
    """``--device``, ``--dtype``, ``--device-map``, ``--offload-folder``, ``--quantize``."""
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    parser.add_argument("--dtype", default=None, help="auto | float32 | float64 | bfloat16 | float16")
    parser.add_argument(
        "--device-map",
        default=None,
        metavar="MAP",
        help=f"split the model with accelerate: {' | '.join(DEVICE_MAP_STRATEGIES)}, a JSON object of module → "
        "cpu/disk/GPU, or @FILE (instead of --device)",
    )
    parser.add_argument(
        "--offload-folder", default=None, metavar="DIR", help='where a device map\'s "disk" modules are kept'
    )
    parser.add_argument("--quantize", default=None, choices=QUANTIZATIONS, help="weight-only quantization (torchao)")


def placement(args, **overrides) -> dict[str, Any]:
    """``Attributor.from_pretrained``'s placement arguments from the flags."""
    chosen = dict(
        device=args.device,
        dtype=args.dtype,
        device_map=args.device_map,
        offload_folder=args.offload_folder,
        quantize=args.quantize,
    )
    return {**chosen, **overrides}
