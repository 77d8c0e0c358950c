"""A batch of prompts, as ``Attributor.attribute_batch`` takes it, split into one call per prompt.

Accepted: a list of strings (texts), of message lists (chats), of dicts (``attribute``'s keyword
arguments, one call each, with an optional per-item ``config``), of id rows; or what a tokenizer
returns for several prompts (a ``[B, T]`` tensor, array or nested list, or a ``BatchEncoding``),
whose ``attention_mask`` rows drop each prompt's padding as :mod:`.encodings` does for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..config import HetaConfig
from ..errors import InputError
from .encodings import as_lists
from .request import REQUEST_FIELDS

ITEM_FIELDS = (*REQUEST_FIELDS, "config")
INPUT_FIELDS = ("text", "input_ids", "attention_mask", "messages")


def items(inputs: Any, attention_mask: Any = None) -> list[dict[str, Any]]:
    """One ``attribute`` keyword dict per prompt (``config`` a HetaConfig or absent)."""
    if isinstance(inputs, Mapping):  # BatchEncoding
        if "input_ids" not in inputs:
            raise InputError("the encoding has no input_ids", code="invalid_input_ids")
        attention_mask = inputs.get("attention_mask") if attention_mask is None else attention_mask
        inputs = inputs["input_ids"]
    inputs = as_lists(inputs, "input_ids", "invalid_input_ids")
    if isinstance(inputs, (str, bytes)) or not isinstance(inputs, (list, tuple)):
        raise InputError("a batch is a list of prompts (for one prompt, use attribute)", code="invalid_input")
    if not inputs:
        raise InputError("the batch is empty", code="invalid_input")
    masks = [None] * len(inputs)
    if attention_mask is not None:
        masks = as_lists(attention_mask, "attention_mask", "invalid_attention_mask")
        if not isinstance(masks, (list, tuple)) or len(masks) != len(inputs):
            raise InputError(
                f"attention_mask must have one row per prompt ({len(inputs)})", code="invalid_attention_mask"
            )
    return [_item(row, mask, index) for index, (row, mask) in enumerate(zip(inputs, masks, strict=True))]


def _item(row: Any, mask: Any, index: int) -> dict[str, Any]:
    if isinstance(row, str):
        item: dict[str, Any] = {"text": row}
    elif isinstance(row, Mapping):
        unknown = sorted(set(row) - set(ITEM_FIELDS))
        if unknown:
            raise InputError(
                f"batch item {index}: unknown field(s) {', '.join(unknown)}; known: {', '.join(ITEM_FIELDS)}"
            )
        item = dict(row)
        if isinstance(item.get("config"), Mapping):
            item["config"] = HetaConfig.from_dict(item["config"])
        elif item.get("config") is not None and not isinstance(item["config"], HetaConfig):
            raise InputError(f"batch item {index}: config must be a HetaConfig or a dict", code="invalid_config")
    elif isinstance(row, (list, tuple)) and row and all(isinstance(message, Mapping) for message in row):
        item = {"messages": list(row)}
    else:
        item = {"input_ids": row}
    if mask is not None:
        if "input_ids" not in item:
            raise InputError(f"batch item {index}: attention_mask goes with input_ids", code="invalid_attention_mask")
        item["attention_mask"] = mask
    return item
