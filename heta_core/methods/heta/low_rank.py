"""``low_rank=k``: S_i from a randomized rank-k eigen-approximation of the whole curvature matrix.

A randomized range finder (Halko et al. 2011) from 2(k+o) full-sequence HVPs: Y = H Ω,
Q = qr(Y), B = Qᵀ H Q, keep the top-k eigenpairs U Λ Uᵀ; then S_i = (1/m) Σ_k ‖U_i Λ U_iᵀ r_k‖_1
with the same probes as the exact path (:func:`.hessian.probes`). Cost independent of the number of
tokens; exact when rank(H) ≤ k + o.
"""

from __future__ import annotations

import torch

from ...runtime.precision import accumulation_dtype
from ...runtime.prefix import StreamPool
from .hessian import Curvature, CurvatureOperator, probes

OVERSAMPLE = 8  # extra range-finder columns (Halko et al. recommend 5-10)


def low_rank_sensitivity(
    runner,
    embeds,
    source,
    targets,
    scored: int,
    samples: int,
    seed: int,
    curvature: Curvature,
    block,
    *,
    row_bytes,
    budget_bytes: int,
    streams: StreamPool | None = None,
) -> tuple[torch.Tensor, int]:
    """S_i from a randomized rank-k eigen-approximation of the whole curvature matrix.

    One graph, so one stream: the work runs on the pool's next stream when a pool is given.
    """
    if streams is not None:
        with streams.next():
            scores, count = low_rank_sensitivity(
                runner,
                embeds,
                source,
                targets,
                scored,
                samples,
                seed,
                curvature,
                block,
                row_bytes=row_bytes,
                budget_bytes=budget_bytes,
            )
        return streams.gather([scores]), count
    size, dim = source.shape
    rank = curvature.low_rank
    columns = min(rank + OVERSAMPLE, size * dim)
    count = targets.shape[0]
    leaf = source.detach().clone()[None].requires_grad_(True)
    operator = CurvatureOperator(
        lambda rows: runner.logits(0, rows, count),
        embeds[None],
        leaf,
        lambda h: leaf.to(h.dtype),
        targets,
        curvature.kind,
        block,
        curvature.foil,
    )
    # the vmapped second pass holds one full-sequence activation set per direction: group them
    group = max(1, min(columns, budget_bytes // max(1, row_bytes(size))))

    def apply(directions: torch.Tensor) -> torch.Tensor:  # [c, T·d] -> [c, T·d]
        shaped = directions.to(embeds.dtype).view(-1, 1, size, dim)
        out = [operator.apply(shaped[a : a + group]) for a in range(0, shaped.shape[0], group)]
        return torch.cat(out).reshape(directions.shape[0], -1).to(directions.dtype)

    work = accumulation_dtype(embeds.dtype)
    generator = torch.Generator().manual_seed(seed)
    omega = torch.randn(columns, size * dim, generator=generator, dtype=work).to(embeds.device)
    basis, _ = torch.linalg.qr(apply(omega).T)  # [T·d, c]
    projected = basis.T @ apply(basis.T).T  # Qᵀ H Q  [c, c]
    values, vectors = torch.linalg.eigh(0.5 * (projected + projected.T))
    keep = values.abs().argsort(descending=True)[:rank]
    factors = (basis @ vectors[:, keep]).view(size, dim, -1)  # U_i blocks  [T, d, k]
    eigen = values[keep]
    scores = torch.empty(scored, dtype=work, device=embeds.device)
    for i in range(scored):
        draws = probes(seed, i, samples, dim).to(embeds.device, work)  # [m, d]
        products = (draws @ factors[i]) * eigen @ factors[i].T  # U_i Λ U_iᵀ r
        scores[i] = products.abs().sum(-1).mean()
    return scores, 2 * columns
