"""Parts of a run → the :class:`~heta_core.results.schema.AttributionResult` document.

Per-token values come from the method's :class:`~heta_core.methods.base.Parts`; aggregates sum
exactly the float32 values the tokens report (:mod:`heta_core.inputs.granularity`); non-finite
numbers become null.
"""

from __future__ import annotations

import math
import platform
from functools import lru_cache
from importlib import metadata

import torch

from ..errors import NonFiniteResultError
from ..inputs.document import Document, unknown_words
from ..inputs.granularity import aggregate, segments
from ..methods.registry import method
from .schema import (
    AttributionResult,
    FoilInfo,
    ResultMeta,
    ResultWarning,
    Segment,
    TargetInfo,
    Timings,
    TokenInfo,
    Versions,
)

# a response token below this probability under the served model was most likely chosen by another
# model or tokenizer (greedy or sampled text of the same model rarely goes below it)
UNLIKELY_LOGPROB = math.log(1e-4)


def _finite(value):
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value if value is None or math.isfinite(value) else None


def _columns(values: dict[str, torch.Tensor]) -> dict[str, list]:
    """Each value's per-token entries (the last axis first): one ``tolist`` per tensor, not per token."""
    return {name: tensor.movedim(-1, 0).tolist() for name, tensor in values.items()}


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def versions() -> Versions:
    return Versions(
        heta=_version("heta"),
        torch=torch.__version__,
        transformers=_version("transformers"),
        python=platform.python_version(),
    )


def _token_text(doc: Document, i: int, tokenizer) -> str | None:
    start, end = doc.offsets[i] if doc.offsets[i] is not None else (None, None)
    if doc.text is not None and start is not None and end > start:
        return doc.text[start:end]
    return tokenizer.decode([doc.ids[i]]) if tokenizer is not None else None


def _token(doc: Document, i: int, tokenizer, columns: dict[str, list]) -> dict:
    start, end = doc.offsets[i] if doc.offsets[i] is not None else (None, None)
    row = {
        "position": i,
        "id": doc.ids[i],
        "text": _token_text(doc, i, tokenizer),
        "start": start,
        "end": end,
        "role": doc.roles[i],
        "message": doc.messages[i],
        "template": doc.template[i],
        "special": doc.special[i],
    }
    row.update({name: _finite(column[i]) for name, column in columns.items()})
    return row


def _aggregates(doc: Document, n: int, values, kinds, spans, include_template) -> dict[str, list[Segment]]:
    found = {kind: segments(doc, n, kind, include_template=include_template) for kind in kinds}
    if spans is not None:
        found["span"] = segments(doc, n, "span", include_template=include_template, spans=spans)
    if doc.message_roles:
        found["message"] = segments(doc, n, "message", include_template=include_template)
    result = {}
    for kind, units in found.items():
        rows = aggregate(units, values)
        for row in rows:
            row.update({name: _finite(row[name]) for name in values})
            if kind == "message":
                row["role"] = doc.message_roles[row["index"]]
        result[kind] = [Segment(**row) for row in rows]
    return result


def _warnings(doc: Document, tokenizer) -> list[ResultWarning]:
    count, words = unknown_words(doc, tokenizer)
    if not count:
        return []
    return [
        ResultWarning(
            code="unknown_tokens",
            count=count,
            words=words,
            message=f"{count} token(s) are the tokenizer's unknown token: the model never saw these words "
            f"({', '.join(words[:10])}{', ...' if len(words) > 10 else ''}); their scores describe the unknown token",
        )
    ]


def _unlikely(doc: Document, n: int, logprobs: list[float], tokenizer) -> list[ResultWarning]:
    """``unlikely_response``: response_ids tokens with log p < ln(1e-4) (−∞ included)."""
    low = [j for j, logprob in enumerate(logprobs) if not logprob >= UNLIKELY_LOGPROB]
    if not low:
        return []
    positions = [n + j for j in low]
    texts = [_token_text(doc, p, tokenizer) or str(doc.ids[p]) for p in positions]
    return [
        ResultWarning(
            code="unlikely_response",
            count=len(low),
            words=texts,
            positions=positions,
            message=f"{len(low)} of {len(logprobs)} response token(s) have probability below 1e-4 under this "
            f"model (positions {', '.join(map(str, positions[:10]))}{', ...' if len(low) > 10 else ''}): the "
            "response was probably produced by a different model or tokenizer, so the attribution explains "
            "tokens this model would not choose",
        )
    ]


def _foil(tokenizer, foil: int | None, logprob: float | None) -> FoilInfo | None:
    if foil is None:
        return None
    return FoilInfo(id=foil, text=tokenizer.decode([foil]) if tokenizer is not None else None, logprob=_finite(logprob))


def assemble(
    handle,
    tokenizer,
    name: str,
    revision: str | None,
    prepared,
    request,
    cfg,
    parts,
    compute_s: float,
    diagnostics=None,
    partial: bool = False,
) -> AttributionResult:
    """``diagnostics``: (the :class:`~heta_core.results.schema.Diagnostics` document, its seconds) or None.
    ``partial``: a document published before the run's end; a run stopped early (``parts.stopped``)
    is partial too."""
    doc, n = request.doc, request.scored
    values = {name: value.float() for name, value in parts.values.items()}  # the document's precision
    if not bool(torch.isfinite(values["score"]).all()):
        raise NonFiniteResultError(
            f"{cfg.method}'s scores are not finite (a float32 overflow or an undefined value); with HETA, lower beta "
            "and gamma or use normalize='simplex'"
        )
    columns = _columns(values)
    tokens = [TokenInfo(**_token(doc, i, tokenizer, columns)) for i in range(n)]
    targets = [
        TargetInfo(
            position=n + j,
            id=doc.ids[n + j],
            text=_token_text(doc, n + j, tokenizer),
            logprob=_finite(logprob),
            start=(doc.offsets[n + j] or (None, None))[0],
            end=(doc.offsets[n + j] or (None, None))[1],
            foil=_foil(tokenizer, request.foil, parts.foil_logprob) if j == 0 else None,
        )
        for j, logprob in enumerate(parts.logprobs)
    ]
    warnings = _warnings(doc, tokenizer) + (_unlikely(doc, n, parts.logprobs, tokenizer) if prepared.response else [])
    entry = method(cfg.method)
    timings = Timings(
        compute_s=compute_s,
        **{f"{stage}_s": seconds for stage, seconds in parts.timings.items()},
        diagnostics_s=diagnostics[1] if diagnostics else None,
    )
    meta = ResultMeta(
        model=name,
        revision=revision,
        model_type=handle.config.model_type,
        dtype=str(handle.dtype).removeprefix("torch."),
        device=str(handle.device),
        config={field: getattr(cfg, field) for field in entry.fields},
        hvps=parts.hvps,
        versions=versions(),
        timings=timings,
    )
    stages = list(parts.stages) + (["diagnostics"] if diagnostics else [])
    return AttributionResult(
        method=cfg.method,
        target_mode=request.mode,
        partial=partial or parts.stopped is not None,
        stages_done=stages,
        text=doc.text,
        tokens=tokens,
        targets=targets,
        aggregates=_aggregates(doc, n, values, prepared.kinds, prepared.spans, prepared.include_template),
        warnings=warnings,
        diagnostics=diagnostics[0] if diagnostics else None,
        meta=meta,
    )
