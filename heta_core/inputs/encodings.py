"""What a tokenizer returns, taken as it is: ``attribute(**tokenizer(text, return_tensors="pt"))``.

``input_ids`` may be a list, a 1-D or ``[1, T]`` tensor, a numpy array or a ``BatchEncoding`` (also
passed as the first argument); an ``attention_mask`` beside it keeps the tokens it marks. Padding on
either side is dropped; a mask with holes (zeros between ones) is refused, because the prompt it
describes has no single meaning for a decoder without a matching position layout.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import InputError


def unpack(text, input_ids, attention_mask) -> tuple[object, object]:
    """(text, input_ids) with any encoding opened and the mask applied: ids become a plain list."""
    if isinstance(text, Mapping):  # attribute(tokenizer(text))
        if input_ids is not None:
            raise InputError("pass exactly one of text, input_ids or messages", code="invalid_input")
        text, input_ids = None, text
    if isinstance(input_ids, Mapping):
        if "input_ids" not in input_ids:
            raise InputError("the encoding has no input_ids", code="invalid_input_ids")
        attention_mask = input_ids.get("attention_mask") if attention_mask is None else attention_mask
        input_ids = input_ids["input_ids"]
    if input_ids is None:
        if attention_mask is not None:
            raise InputError("attention_mask goes with input_ids", code="invalid_attention_mask")
        return text, None
    ids = one_row(input_ids, "input_ids", "invalid_input_ids")
    if attention_mask is None:
        return text, ids
    mask = one_row(attention_mask, "attention_mask", "invalid_attention_mask")
    if len(mask) != len(ids):
        raise InputError(
            f"attention_mask has {len(mask)} entries for {len(ids)} input_ids", code="invalid_attention_mask"
        )
    if any(m not in (0, 1) for m in mask):
        raise InputError("attention_mask must hold only 0 and 1", code="invalid_attention_mask")
    kept = [i for i, m in enumerate(mask) if m == 1]
    if not kept:
        raise InputError("attention_mask keeps no token", code="invalid_attention_mask")
    if kept[-1] - kept[0] + 1 != len(kept):
        raise InputError(
            "attention_mask has holes (zeros between ones); only padding on the left or right can be dropped",
            code="invalid_attention_mask",
        )
    return text, ids[kept[0] : kept[-1] + 1]


def as_lists(value, name: str, code: str):
    """A tensor or array of integers as (nested) lists; anything else as it is."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_floating_point or value.dtype.is_complex:
            raise InputError(f"{name} must hold integers, got a {value.dtype} tensor", code=code)
        return value.tolist()
    if hasattr(value, "tolist") and hasattr(value, "shape"):  # numpy, without importing it
        if getattr(getattr(value, "dtype", None), "kind", "i") not in "iub":
            raise InputError(f"{name} must hold integers, got an array of {value.dtype}", code=code)
        return value.tolist()
    return value


def one_row(value, name: str, code: str) -> list:
    """A flat list from a list, tensor or array of shape [T] or [1, T]; [B, T] with B > 1 is a batch."""
    value = as_lists(value, name, code)
    if isinstance(value, (list, tuple)) and value and all(isinstance(row, (list, tuple)) for row in value):
        if len(value) != 1:
            raise InputError(f"{name} holds {len(value)} prompts; attribute takes one", code=code)
        value = value[0]
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
        raise InputError(f"{name} must be a sequence of integers", code=code)
    if any(isinstance(v, (list, tuple)) for v in value):
        raise InputError(f"{name} must be one row of integers ([T] or [1, T])", code=code)
    return list(value)
