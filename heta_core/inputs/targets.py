"""What is explained: the request resolved to a token document, n scored prompt tokens and a mode.

Targets: the next token (default: the last token of the input, or ``target_position``), a given
continuation (``target_text``), a response produced elsewhere as token ids (``response_ids``,
appended exactly as given) or a greedy generation (``generate=N``); a span is attributed as one
("sum") or per token ("each", a target × prompt matrix), as HETA.md "Targets" defines. A single
target token is a span of one. A foil (``foil_text`` / ``foil_id``) makes the target contrastive:
:mod:`.foil`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import get_args

import torch

from ..errors import ConfigError, InputError
from ..models.compat import cache_of, with_cache
from ..runtime.precision import compute_dtype
from .document import Document, encode_piece, from_messages, from_text
from .encodings import unpack
from .foil import resolve_foil
from .granularity import GRANULARITIES, check_spans, require_offsets
from .request import TargetMode

TARGET_MODES = get_args(TargetMode)


@dataclass
class Request:
    """A resolved request: the token document (prompt + targets), n scored prompt tokens, the mode
    and the foil (a token id contrasted with the single target token, or None)."""

    doc: Document
    scored: int
    mode: str  # "sum" | "each"
    foil: int | None = None

    @property
    def targets(self) -> int:
        return len(self.doc.ids) - self.scored


@dataclass
class Prepared:
    """A request checked against the model, ready to plan or run (generation not yet done)."""

    request: Request
    prompt: Document  # the caller's input as given (before any target span)
    kinds: list[str]  # aggregate granularities beyond tokens
    spans: list[tuple[int, int]] | None
    include_template: bool
    generate: int | None
    response: bool = False  # the targets are the caller's response_ids (checked for likelihood after the run)


def document(tokenizer, vocab: int, text, input_ids, messages, attention_mask=None) -> Document:
    text, input_ids = unpack(text, input_ids, attention_mask)
    given = [
        name for name, value in (("text", text), ("input_ids", input_ids), ("messages", messages)) if value is not None
    ]
    if len(given) != 1:
        raise InputError("pass exactly one of text, input_ids or messages", code="invalid_input")
    if text is not None:
        return from_text(tokenizer, text)
    if messages is not None:
        return from_messages(tokenizer, messages)
    ids = check_ids(input_ids, vocab)
    return Document(ids, [None] * len(ids))


def check_ids(ids: list, vocab: int, what: str = "input_ids") -> list[int]:
    """``ids`` as :func:`.encodings.unpack` leaves them: every one an integer in the vocabulary."""
    if not all(isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in ids):
        raise InputError(f"{what} must be a sequence of integers", code="invalid_input_ids")
    ids = [int(i) for i in ids]
    bad = [i for i in ids if not 0 <= i < vocab]
    if bad:
        raise InputError(f"{what}: token id {bad[0]} is outside the vocabulary [0, {vocab})", code="invalid_input_ids")
    return ids


def resolve_target(length: int, target_position: int | None) -> int:
    """The target index t (default: the last token); negative values count from the end."""
    if target_position is None:
        return length - 1
    if isinstance(target_position, bool) or not isinstance(target_position, numbers.Integral):
        raise InputError(f"target_position must be an integer, got {target_position!r}", code="target_out_of_range")
    target_position = int(target_position)
    position = target_position + length if target_position < 0 else target_position
    if not 1 <= position < length:
        raise InputError(
            f"target_position {target_position} is out of range: the input has {length} tokens and the target "
            f"needs at least one token before it (valid: 1..{length - 1} or -{length - 1}..-1)",
            code="target_out_of_range",
        )
    return position


def resolve(
    tokenizer, doc: Document, target_position, target_text, target_mode, generate, response_ids=None, vocab: int = 0
) -> Request:
    """The request with its targets; a generation is represented by ``generate`` placeholder tokens
    (what the planner assumes: every token is generated) until :func:`with_generation` runs it."""
    forms = (
        ("target_position", target_position),
        ("target_text", target_text),
        ("generate", generate),
        ("response_ids", response_ids),
    )
    choices = [n for n, v in forms if v is not None]
    if len(choices) > 1:
        raise InputError(f"pass at most one of {', '.join(choices)}", code="invalid_target")
    if target_mode not in TARGET_MODES:
        raise InputError(
            f"target_mode must be one of {', '.join(TARGET_MODES)}; got {target_mode!r}", code="invalid_target"
        )
    if target_text is None and generate is None and response_ids is None:
        if len(doc.ids) < 2:
            raise InputError(f"need at least 2 tokens (a context and a target), got {len(doc.ids)}", code="too_short")
        t = resolve_target(len(doc.ids), target_position)
        return Request(doc.truncated(t + 1), t, target_mode)
    if not doc.ids:
        raise InputError("the prompt has no tokens", code="too_short")
    if target_text is not None:
        shift = len(doc.text) if doc.text is not None else 0
        ids, offsets = encode_piece(tokenizer, target_text, "target_text", "empty_input", shift)
        if not ids:
            raise InputError("target_text encodes to no tokens", code="empty_input")
        return Request(doc.extended(ids, target_text, offsets), len(doc.ids), target_mode)
    if response_ids is not None:
        given = response_ids.tolist() if hasattr(response_ids, "tolist") else response_ids  # a tensor or an array
        if not isinstance(given, (list, tuple)):
            raise InputError("response_ids must be a sequence of integers", code="invalid_input_ids")
        ids = check_ids(given, vocab, "response_ids")
        if not ids:
            raise InputError("response_ids is empty", code="empty_input")
        return Request(doc.extended(ids, *decoded(tokenizer, doc, ids)), len(doc.ids), target_mode)
    if isinstance(generate, bool) or not isinstance(generate, numbers.Integral) or generate < 1:
        raise InputError(f"generate must be an integer >= 1, got {generate!r}", code="invalid_target")
    count = int(generate)
    return Request(doc.extended([0] * count, None, [None] * count), len(doc.ids), target_mode)


def granularities(granularity) -> list[str]:
    """The aggregate kinds to report beyond tokens."""
    if granularity is None:
        return []
    kinds = [granularity] if isinstance(granularity, str) else list(granularity)
    for kind in kinds:
        if kind not in GRANULARITIES:
            raise InputError(
                f"granularity must be one of {', '.join(GRANULARITIES)}; got {kind!r}", code="invalid_granularity"
            )
    return [k for k in kinds if k != "token"]


def check_fits(handle, name: str, cfg, request: Request) -> None:
    """Everything about ``cfg`` and the request's size that depends on the model."""
    if compute_dtype(cfg.dtype, handle.dtype) != handle.dtype:
        raise ConfigError(
            f"dtype={cfg.dtype!r} differs from the loaded model's {handle.dtype}; set it when creating the Attributor",
            field="dtype",
        )
    if cfg.mask_token_id is not None and cfg.mask_token_id >= handle.vocab_size:
        raise ConfigError(
            f"mask token id {cfg.mask_token_id} is outside the vocabulary [0, {handle.vocab_size})", field="mask"
        )
    if cfg.curvature_layers is not None and cfg.curvature_layers > handle.num_layers:
        raise ConfigError(
            f"curvature_layers={cfg.curvature_layers} exceeds the model's {handle.num_layers} blocks",
            field="curvature_layers",
        )
    fed = len(request.doc.ids) - 1
    if handle.max_positions is not None and fed > handle.max_positions:
        raise InputError(
            f"the input has {fed} positions; {name} reads at most {handle.max_positions}", code="too_many_tokens"
        )


def prepare(
    handle,
    tokenizer,
    name: str,
    cfg,
    *,
    text=None,
    input_ids=None,
    attention_mask=None,
    messages=None,
    target_position=None,
    target_text=None,
    target_mode="sum",
    generate=None,
    granularity=None,
    spans=None,
    include_template=False,
    response_ids=None,
    foil_text=None,
    foil_id=None,
) -> Prepared:
    """Every check that needs no computation: what ``estimate`` validates is what ``attribute`` runs."""
    doc = document(tokenizer, handle.vocab_size, text, input_ids, messages, attention_mask)
    kinds = granularities(granularity)
    request = resolve(
        tokenizer, doc, target_position, target_text, target_mode, generate, response_ids, handle.vocab_size
    )
    request.foil = resolve_foil(tokenizer, handle.vocab_size, cfg, request, foil_text, foil_id, generate)
    check_fits(handle, name, cfg, request)
    for kind in kinds:
        require_offsets(doc, request.scored, kind)  # the prompt: a generation's text is not known yet
    checked = check_spans(spans, doc.text) if spans is not None else None
    if not isinstance(include_template, bool):
        raise InputError(f"include_template must be true or false, got {include_template!r}", code="invalid_input")
    generated = int(generate) if generate is not None else None
    return Prepared(request, doc, kinds, checked, include_template, generated, response=response_ids is not None)


@torch.no_grad()
def generate_tokens(handle, prompt: list[int], count: int) -> list[int]:
    """Greedy decoding of up to ``count`` tokens; stops after an end-of-sequence token (kept)."""
    model, device = handle.model, handle.device
    eos = model.generation_config.eos_token_id if getattr(model, "generation_config", None) else None
    eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    out = model(input_ids=torch.tensor([prompt], device=device), use_cache=True, logits_to_keep=1)
    generated = []
    for _ in range(count):
        token = int(out.logits[0, -1].argmax())
        generated.append(token)
        if token in eos:
            break
        out = model(
            input_ids=torch.tensor([[token]], device=device),
            **with_cache(model, cache_of(out)),
            use_cache=True,
            logits_to_keep=1,
        )
    return generated


def with_generation(handle, tokenizer, prepared: Prepared) -> Request:
    """The request with its placeholder targets replaced by the model's greedy generation."""
    request, doc = prepared.request, prepared.prompt
    if prepared.generate is None:
        return request
    ids = generate_tokens(handle, doc.ids, prepared.generate)
    return Request(doc.extended(ids, *decoded(tokenizer, doc, ids)), request.scored, request.mode, request.foil)


def decoded(tokenizer, doc: Document, ids: list[int]) -> tuple[str | None, list[tuple[int, int] | None]]:
    """(text, character offsets) of tokens appended to ``doc`` as given (a generation, a response):
    each token's offsets are what decoding it after the previous ones adds. None without a tokenizer
    or without a prompt text (ids input) to index into.

    Decoded after the prompt where that extends the prompt's own decoding: tokenizers that mark a
    word's leading space in the token (SentencePiece's "▁", word-level vocabularies) drop that space
    when a span is decoded on its own, which would glue the response to the prompt."""
    if tokenizer is None or doc.text is None:
        return None, [None] * len(ids)
    head = tokenizer.decode(doc.ids)
    in_context = tokenizer.decode(doc.ids + ids).startswith(head)

    def text_of(count: int) -> str:
        return tokenizer.decode(doc.ids + ids[:count])[len(head) :] if in_context else tokenizer.decode(ids[:count])

    base, offsets, previous = len(doc.text), [], 0
    for j in range(len(ids)):
        length = len(text_of(j + 1))
        offsets.append((base + previous, base + length))
        previous = length
    return text_of(len(ids)), offsets
