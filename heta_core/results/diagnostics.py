"""How faithful one attribution is, measured on the model that produced it (``config.diagnostics``).

ERASER's hard top-k metrics (DeYoung et al. 2020), for k = 1, 3, 5 tokens and the top 10 % of the
prompt (k = ⌈0.1·n⌉), each k clipped to the n prompt tokens:

    comprehensiveness@k = p(X) − p(X without its top-k tokens)      higher = the top-k carry the prediction
    sufficiency@k       = p(X) − p(only the top-k tokens kept)       lower  = the top-k suffice

p is the probability of what the attribution explains: P(y | prompt) for one token; for a ``sum``
span the product Π_j P(y_j | prompt, y_<j) (its total log-probability, which a ``sum`` attribution
explains); for row j of an ``each`` attribution P(y_j | prompt, y_<j), ranked by that row's scores.
Rankings follow the result's float32 scores (ties: earlier position first; a null score ranks last).
A token is removed as the method's own config removes it: its input embedding is replaced by the
``mask`` vector (:func:`heta_core.runtime.masking.mask_vector`); only prompt tokens are removed.

Every variant (the unmasked prompt once, then per row and distinct k: top-k removed, top-k kept) is
a full-length forward, batched in chunks within the memory budget by the chunk planner the masked
forwards of the KL term use. Unlike those, no KV prefix is reused: where the first removed token
lies depends on the scores, and a cost that depends on the run's own result could not be
estimated exactly before the run (:func:`plan` is exact).
"""

from __future__ import annotations

import math
import time

import torch

from ..evaluation.metrics import ranking
from ..methods.base import Plan
from ..runtime.cost import row_bytes_fn
from ..runtime.masking import kept_logprobs, mask_vector
from ..runtime.prefix import StreamPool, plan_chunks
from .schema import DiagnosticRow, Diagnostics, FaithfulnessPoint

# (fixed k, fraction of the prompt): the reported points, in order
POINTS = ((1, None), (3, None), (5, None), (None, 0.1))


def point_sizes(n: int) -> list[tuple[int, float | None]]:
    """(k, fraction) of each reported point for an n-token prompt."""
    return [(min(k, n) if k is not None else max(1, math.ceil(fraction * n)), fraction) for k, fraction in POINTS]


def _sizes(n: int) -> list[int]:
    """The distinct k: each is run once even when two points coincide (short prompts)."""
    return sorted({k for k, _ in point_sizes(n)})


def _variants(n: int, rows: int) -> int:
    return 1 + rows * 2 * len(_sizes(n))


def _rows(request) -> int:
    return request.targets if request.mode == "each" else 1


def plan(handle, request, cfg, budget: int) -> Plan:
    """The diagnostics' work: full-length forwards of the n + k − 1 fed positions, in :func:`diagnose`'s chunks."""
    fed = request.scored + request.targets - 1
    row_bytes = row_bytes_fn(handle.config, handle.layout, handle.dtype)
    count = _variants(request.scored, _rows(request))
    chunks = plan_chunks([0] * count, fed, row_bytes, budget)
    peak = max((hi - lo) * row_bytes(fed) for lo, hi in chunks)
    return Plan(
        hvps=0,
        forward_tokens=count * fed,
        chunks=len(chunks),
        peak_bytes=peak,
        work={"diagnostics": (count * fed, len(chunks))},
    )


def _keep_masks(rows: torch.Tensor, n: int) -> tuple[torch.Tensor, list[list[int]]]:
    """Keep-masks ``[variants, n]`` (the full prompt, then per row and k: removed, kept) and each row's ranking."""
    keeps, orders = [torch.ones(n, dtype=torch.bool)], []
    for scores in rows:
        order = ranking(torch.nan_to_num(scores.double(), nan=-math.inf))
        orders.append(order)
        for size in _sizes(n):
            kept = torch.zeros(n, dtype=torch.bool)
            kept[order[:size]] = True
            keeps += [~kept, kept]
    return torch.stack(keeps), orders


def _probability(logprob: float) -> float | None:
    value = math.exp(logprob)
    return value if math.isfinite(value) else None


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def diagnose(handle, request, cfg, scores: torch.Tensor, budget: int, progress) -> tuple[Diagnostics, float]:
    """The diagnostics of ``scores`` (the result's ``[n]`` or ``[k, n]`` float32 scores) and their seconds."""
    clock = time.perf_counter()
    ids, n = request.doc.ids, request.scored
    embeds = handle.embed(ids[:-1])
    targets = torch.tensor(ids[n:], device=handle.device)
    fill = mask_vector(embeds[:n], cfg.mask, handle.model.get_input_embeddings())
    each = request.mode == "each"
    rows = scores if each else scores[None]
    keep, orders = _keep_masks(rows, n)
    chunks = plan_chunks(
        [0] * keep.shape[0], embeds.shape[0], row_bytes_fn(handle.config, handle.layout, embeds.dtype), budget
    )
    streams = StreamPool(handle.device, cfg.cuda_streams, progress.tick)
    logprobs = kept_logprobs(handle.model, embeds, n, keep, fill, targets, chunks, streams)
    sizes = _sizes(n)
    found = []
    for r, order in enumerate(orders):
        # "sum": the span's joint probability; "each": row r's own target token
        def p(variant: int) -> float | None:
            return _probability(float(logprobs[variant, r] if each else logprobs[variant].sum()))  # noqa: B023 - called in this iteration

        full = p(0)
        points = []
        for k, fraction in point_sizes(n):
            removed_at = 1 + 2 * (r * len(sizes) + sizes.index(k))
            removed, kept = p(removed_at), p(removed_at + 1)
            points.append(
                FaithfulnessPoint(
                    k=k,
                    fraction=fraction,
                    tokens=order[:k],
                    removed=removed,
                    kept=kept,
                    comprehensiveness=_difference(full, removed),
                    sufficiency=_difference(full, kept),
                )
            )
        found.append(
            DiagnosticRow(targets=[r] if each else list(range(request.targets)), probability=full, points=points)
        )
    return Diagnostics(mask=cfg.mask, rows=found), time.perf_counter() - clock


def target_text(result, indices: list[int]) -> str:
    """What row ``indices`` of the targets say, as in the text (spaces included) when offsets are known."""
    targets = [result.targets[i] for i in indices]
    if result.text is not None and targets[0].start is not None and targets[-1].end is not None:
        return result.text[targets[0].start : targets[-1].end]
    return " ".join(t.text or str(t.id) for t in targets)


def describe(result) -> list[str]:
    """Each diagnostics row's k = 3 point in plain words (the CLI's table prints them)."""
    lines = []
    for row in result.diagnostics.rows:
        point = row.points[1]
        if row.probability is None or point.removed is None or point.kept is None:
            continue
        before, after = _distinct(row.probability, point.removed)
        lines.append(
            f"removing the {point.k} top token{'s' * (point.k != 1)} changes "
            f'p("{target_text(result, row.targets)}") from '
            f"{before} to {after}; keeping only them gives {point.kept:.3g}"
        )
    return lines


def _distinct(a: float, b: float) -> tuple[str, str]:
    """The two probabilities with the fewest significant digits (3 to 8) that tell them apart:
    "from 1 to 1" says nothing when removing the tokens moved p by 3e-4."""
    for digits in range(3, 9):
        if f"{a:.{digits}g}" != f"{b:.{digits}g}":
            return f"{a:.{digits}g}", f"{b:.{digits}g}"
    return f"{a:.3g}", f"{b:.3g}"
