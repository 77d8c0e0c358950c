"""Dtype policy.

The model computes in its own dtype (or an explicit upcast); softmaxes over the vocabulary, KL
divergences and score accumulators use at least float32, because bfloat16/float16 have too few
mantissa bits for sums over 10^4-10^5 vocabulary entries.
"""

from __future__ import annotations

import torch

from ..errors import ConfigError

_NAMED = {"float32": torch.float32, "float64": torch.float64}


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; everything narrower accumulates in float32."""
    return torch.promote_types(dtype, torch.float32)


def compute_dtype(policy: str, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype the engine runs the model in, given ``HetaConfig.dtype``; never a downcast."""
    if policy == "model":
        return model_dtype
    wanted = _NAMED[policy]
    if torch.finfo(wanted).bits < torch.finfo(model_dtype).bits:
        raise ConfigError(
            f"dtype={policy!r} would downcast a {model_dtype} model; load the model in that dtype instead",
            field="dtype",
        )
    return wanted
