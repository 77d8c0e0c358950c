"""The foil of a contrastive request ("why *Paris* rather than *Lyon*?"): checked before the run.

A foil is one token id contrasted with the target token: the methods then explain
log p(target) − log p(foil) at the target's predicting position (docs/engine.md "Contrastive
targets"). Rules, all refused with ``InputError(code="invalid_foil")``:

- at most one of ``foil_text`` (must encode, without special tokens, to exactly one token) and
  ``foil_id`` (an integer in the vocabulary);
- the target is exactly one token known before the run: the next token, ``target_position``, a
  one-token ``target_text`` or one ``response_ids`` entry — not ``generate`` (whose token is not
  known when the request is admitted) and not a multi-token span (a contrast of spans would need a
  foil span aligned with it; not supported);
- the foil differs from the target token;
- the method explains an objective: ``attention_rollout`` has none, and HETA's
  ``curvature="ggn"`` is zero for a contrast (the Gauss–Newton matrix of a function linear in the
  logits vanishes).
"""

from __future__ import annotations

import numbers

from ..errors import InputError
from ..methods.registry import method
from .document import encode_piece


def _foil_id(tokenizer, vocab: int, foil_text, foil_id) -> int:
    if foil_text is not None:
        ids, _ = encode_piece(tokenizer, foil_text, "foil_text", "invalid_foil")
        if len(ids) != 1:
            raise InputError(
                f"foil_text must encode to exactly one token (the foil is an alternative to one target token); "
                f"{foil_text!r} encodes to {len(ids)}",
                code="invalid_foil",
            )
        return int(ids[0])
    if isinstance(foil_id, bool) or not isinstance(foil_id, numbers.Integral):
        raise InputError(f"foil_id must be an integer, got {foil_id!r}", code="invalid_foil")
    if not 0 <= int(foil_id) < vocab:
        raise InputError(f"foil_id {foil_id} is outside the vocabulary [0, {vocab})", code="invalid_foil")
    return int(foil_id)


def resolve_foil(tokenizer, vocab: int, cfg, request, foil_text, foil_id, generate) -> int | None:
    """The foil's token id (None without a foil), after every check the module lists."""
    if foil_text is None and foil_id is None:
        return None
    if foil_text is not None and foil_id is not None:
        raise InputError("pass at most one of foil_text and foil_id", code="invalid_foil")
    if generate is not None:
        raise InputError(
            "a foil needs a target known before the run: use target_text or response_ids, not generate",
            code="invalid_foil",
        )
    if request.targets != 1:
        raise InputError(
            f"a foil contrasts one target token; the target has {request.targets} tokens (explain one token: a "
            "one-token target_text or response_ids, target_position, or the next token)",
            code="invalid_foil",
        )
    if not method(cfg.method).objective:
        raise InputError(
            f"{cfg.method} explains no objective, so it has no contrastive form; use another method",
            code="invalid_foil",
        )
    if cfg.method == "heta" and cfg.curvature == "ggn":
        raise InputError(
            "curvature='ggn' has no contrastive form: log p(target) − log p(foil) is linear in the logits, so its "
            "Gauss–Newton matrix is zero; use curvature='exact'",
            code="invalid_foil",
        )
    foil = _foil_id(tokenizer, vocab, foil_text, foil_id)
    if foil == request.doc.ids[-1]:
        raise InputError(f"the foil is the target token itself (id {foil}): nothing to contrast", code="invalid_foil")
    return foil
