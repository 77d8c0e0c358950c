"""Aggregation of token scores to words, sentences, chat messages and caller-given character spans.

Rule: a unit's score, and each of its components (flow, hessian, kl), is the **sum over its member
tokens**. Membership:

- word: a maximal run of non-whitespace characters; a token belongs to the word holding its first
  non-whitespace character (so GPT-2's " cat" belongs to "cat");
- sentence: text up to and including a run of ``.``, ``!`` or ``?`` followed by whitespace or the
  end, or up to a line break; membership as for words;
- span: a caller's ``(start, end)`` character range; a token belongs to every span its characters
  overlap;
- message: the chat message the token belongs to (see :mod:`heta_core.inputs`).

Tokens with no character span (ids input, special tokens) belong to no word, sentence or span.
Template and special tokens are left out of every unit unless ``include_template`` is set; words and
sentences left with no member token are dropped (caller spans and messages are always reported).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError
from .document import Document

GRANULARITIES = ("token", "word", "sentence")
_SENTENCE = re.compile(r"[^\n]*?(?:[.!?]+(?=\s|$)|\n|$)")


@dataclass(frozen=True)
class Unit:
    kind: str
    index: int
    text: str | None
    start: int | None
    end: int | None
    tokens: list[int]  # member token positions


def _first_char(text: str, offset) -> int | None:
    if offset is None:
        return None
    start, end = offset
    for position in range(start, min(end, len(text))):
        if not text[position].isspace():
            return position
    return None


def _units(text: str, pattern: re.Pattern) -> list[tuple[int, int]]:
    spans = []
    for match in pattern.finditer(text):
        chunk = match.group(0)
        stripped = chunk.strip()
        if stripped:
            start = match.start() + chunk.index(stripped)
            spans.append((start, start + len(stripped)))
    return spans


def _by_first_char(doc: Document, scored: int, units: list[tuple[int, int]], kind: str, eligible) -> list[Unit]:
    members: list[list[int]] = [[] for _ in units]
    for i in range(scored):
        first = _first_char(doc.text, doc.offsets[i]) if eligible(i) else None
        if first is None:
            continue
        for u, (a, b) in enumerate(units):
            if a <= first < b:
                members[u].append(i)
                break
    # a word or sentence made only of left-out tokens (chat scaffolding) is not a unit of the prompt
    kept = [((a, b), m) for (a, b), m in zip(units, members, strict=True) if m]
    return [Unit(kind, u, doc.text[a:b], a, b, m) for u, ((a, b), m) in enumerate(kept)]


def segments(doc: Document, scored: int, kind: str, *, include_template: bool = False, spans=None) -> list[Unit]:
    """The units of ``kind`` ("word", "sentence", "message", "span") over the first ``scored`` tokens."""

    def eligible(i: int) -> bool:
        return include_template or not (doc.template[i] or doc.special[i])

    if kind == "message":
        return [
            Unit("message", k, None, None, None, [i for i in range(scored) if doc.messages[i] == k and eligible(i)])
            for k in range(len(doc.message_roles))
        ]
    require_offsets(doc, scored, kind)
    prompt_end = max((o[1] for o in doc.offsets[:scored] if o is not None), default=0)
    prompt = doc.text[:prompt_end]
    if kind == "word":
        return _by_first_char(doc, scored, _units(prompt, re.compile(r"\S+")), "word", eligible)
    if kind == "sentence":
        return _by_first_char(doc, scored, _units(prompt, _SENTENCE), "sentence", eligible)
    if kind == "span":
        result = []
        for u, (a, b) in enumerate(spans):
            members = [
                i
                for i in range(scored)
                if eligible(i) and doc.offsets[i] is not None and doc.offsets[i][0] < b and a < doc.offsets[i][1]
            ]
            result.append(Unit("span", u, doc.text[a:b], a, b, members))
        return result
    raise InputError(f"granularity must be one of {', '.join(GRANULARITIES)}; got {kind!r}", code="invalid_granularity")


def require_offsets(doc: Document, scored: int, kind: str) -> None:
    """Words, sentences and spans are character units: they need text with token offsets."""
    if doc.text is None or all(o is None for o in doc.offsets[:scored]):
        raise InputError(f"{kind} granularity needs text with character offsets (a fast tokenizer)", code="no_offsets")


def check_spans(spans, text: str | None) -> list[tuple[int, int]]:
    """Validated caller spans: pairs of ints with 0 <= start < end <= len(text)."""
    if text is None:
        raise InputError("spans need text input", code="invalid_spans")
    checked = []
    for span in spans:
        if not (
            isinstance(span, (list, tuple))
            and len(span) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in span)
        ):
            raise InputError(f"span {span!r} must be a pair of integers [start, end]", code="invalid_spans")
        start, end = span
        if not 0 <= start < end <= len(text):
            raise InputError(
                f"span [{start}, {end}] is outside the text (0..{len(text)}) or empty", code="invalid_spans"
            )
        checked.append((start, end))
    return checked


def aggregate(units: list[Unit], values: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """Sum each value over each unit's member tokens; values are ``[n]`` or ``[k, n]`` (one row per target)."""
    if not units:
        return []
    size = next(iter(values.values())).shape[-1]
    membership = torch.zeros(len(units), size, dtype=torch.float64)
    for u, unit in enumerate(units):
        membership[u, unit.tokens] = 1.0
    sums = {name: (tensor.double() @ membership.T) for name, tensor in values.items()}  # [..., units]
    rows = []
    for u, unit in enumerate(units):
        row: dict[str, Any] = {
            "index": unit.index,
            "text": unit.text,
            "start": unit.start,
            "end": unit.end,
            "tokens": unit.tokens,
        }
        for name, tensor in sums.items():
            column = tensor[..., u]
            row[name] = column.tolist() if column.dim() else float(column)
        rows.append(row)
    return rows
