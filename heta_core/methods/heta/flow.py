"""Semantic transition vector M_T — a causal gate over the context (HETA.md §1).

Notation: layers l = 1..L, heads h, positions 0..p (p = T-1 predicts the target).

Value norm (Kobayashi et al. 2020): v^{(l,h)}_j = ‖value^{(l,h)}_j · W_O^{(h)}‖_1, with the value
vector the model computed (kv head h // (H/KV) under GQA, bias included).

Every formula is evaluated for each predicting position p (one for a next token, one per target
token for a span); each row of the result sums to 1 over its own context 0..p.

``flow="heta"``::

    Â^{(l)} = rownorm(0.5 · mean_h A^{(l,h)} + 0.5 · I),   R^{(0)} = I,   R^{(l)} = Â^{(l)} R^{(l-1)}
    Φ^{(l,h)}(i) = Σ_j A^{(l,h)}[p, j] · v^{(l,h)}_j · R^{(l-1)}[j, i]
    M_T[i] = Σ_{l,h} Φ^{(l,h)}(i) / Z,     Σ_i M_T[i] = 1

The fast form sums heads first, w^{(l)} = Σ_h A^{(l,h)}[p,:] ⊙ v^{(l,h)}, and evaluates
Σ_l w^{(l)} R^{(l-1)} by Horner's rule, u ← u Â^{(l)} + w^{(l)} from the top layer down:
O(L·T²) instead of the O(L·T³) matrix chain.

``flow="official"`` (the authors' released code): per head a separate chain
R_h ← rownorm(0.5 · A^{(l,h)} + 0.5 · I) R_h, Φ^{(l,h)}(i) = R_h[p, i] after layer l, value norms
from the block's input residual stream (no layer norm, no bias) through W_V^{(h)} and W_O^{(h)};
M_T[i] ∝ Σ_{l,h} Φ^{(l,h)}(i) · v^{(l,h)}_i. Cost O(L·H·T³).
"""

from __future__ import annotations

import torch

from ...models.adapters import HeadLayout
from ...runtime.trace import Trace


def head_value_norms(values: torch.Tensor, out_weight: torch.Tensor, layout: HeadLayout) -> torch.Tensor:
    """v^{(h)}_j = ‖value_{kv(h), j} · W_O^{(h)}‖_1 for values ``[T, KV, hd]``, W_O ``[H, hd, d]`` -> ``[H, T]``.

    One head at a time keeps the intermediate at ``[T, d]`` rather than ``[H, T, d]``.
    """
    return torch.stack([(values[:, h // layout.group] @ out_weight[h]).abs().sum(-1) for h in range(layout.heads)])


def official_value_norms(
    block_input: torch.Tensor, value_weight: torch.Tensor, out_weight: torch.Tensor, layout: HeadLayout
) -> torch.Tensor:
    """The authors' value norms: residual stream ``[T, d]`` through W_V^{(h)} (no bias) and W_O^{(h)}."""
    values = torch.einsum("td,kde->tke", block_input, value_weight)
    return head_value_norms(values, out_weight, layout)


def rollout_step(attn: torch.Tensor) -> torch.Tensor:
    """rownorm(0.5 · A + 0.5 · I) for ``[..., T, T]``."""
    eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
    mixed = 0.5 * attn + 0.5 * eye
    return mixed / mixed.sum(-1, keepdim=True)


def _normalise(flow: torch.Tensor) -> torch.Tensor:
    """Each row (one per predicting position) to sum 1."""
    return flow / flow.sum(-1, keepdim=True)


def heta_flow(mean_attentions: list[torch.Tensor], rows: list[torch.Tensor], norms: list[torch.Tensor]) -> torch.Tensor:
    """Fast M_T ``[k, T]``: head-summed flow vectors combined by Horner's rule over the rollout.

    ``rows[l]`` ``[H, k, T]`` are the attention rows of the k predicting positions. Entries after a
    row's own position are zero (causal attention), so one pass serves every predicting position.
    """
    weights = [torch.einsum("hkt,ht->kt", row, norm) for row, norm in zip(rows, norms, strict=True)]
    flow = weights[-1]
    for layer in range(len(weights) - 2, -1, -1):
        flow = flow @ rollout_step(mean_attentions[layer]) + weights[layer]
    return _normalise(flow)


def heta_flow_reference(
    mean_attentions: list[torch.Tensor], rows: list[torch.Tensor], norms: list[torch.Tensor]
) -> torch.Tensor:
    """Literal M_T: Φ^{(l,h)}(i) summed over l, h, i one term at a time, for each predicting position."""
    heads, count, size = rows[0].shape
    flow = torch.zeros(count, size, dtype=rows[0].dtype, device=rows[0].device)
    for j in range(count):
        rollout = torch.eye(size, dtype=flow.dtype, device=flow.device)
        for mean_attention, row, norm in zip(mean_attentions, rows, norms, strict=True):
            for h in range(heads):
                for i in range(size):
                    flow[j, i] += (row[h, j, :] * norm[h] * rollout[:, i]).sum()
            rollout = rollout_step(mean_attention) @ rollout
    return _normalise(flow)


def official_flow(attentions: list[torch.Tensor], norms: list[torch.Tensor], predicting: int) -> torch.Tensor:
    """Fast official M_T ``[k, T]``: all per-head chains advanced together as one batched matmul."""
    heads, _, size = attentions[0].shape
    rows = torch.arange(size - predicting, size, device=attentions[0].device)
    chains = torch.eye(size, dtype=attentions[0].dtype, device=attentions[0].device).expand(heads, size, size)
    flow = torch.zeros(predicting, size, dtype=chains.dtype, device=chains.device)
    for attn, norm in zip(attentions, norms, strict=True):
        chains = rollout_step(attn) @ chains
        flow += torch.einsum("hkt,ht->kt", chains[:, rows, :], norm)
    return _normalise(flow)


def official_flow_reference(attentions: list[torch.Tensor], norms: list[torch.Tensor], predicting: int) -> torch.Tensor:
    """Literal official M_T: one chain per head, one term at a time."""
    heads, _, size = attentions[0].shape
    eye = torch.eye(size, dtype=attentions[0].dtype, device=attentions[0].device)
    chains = [eye.clone() for _ in range(heads)]
    flow = torch.zeros(predicting, size, dtype=eye.dtype, device=eye.device)
    for attn, norm in zip(attentions, norms, strict=True):
        for h in range(heads):
            chains[h] = rollout_step(attn[h]) @ chains[h]
            for j in range(predicting):
                p = size - predicting + j
                for i in range(size):
                    flow[j, i] += chains[h][p, i] * norm[h, i]
    return _normalise(flow)


def semantic_flow(trace: Trace, value_norms: list[torch.Tensor], *, mode: str, reference: bool) -> torch.Tensor:
    """M_T ``[k, T]``, one row per predicting position, from a trace and per-layer value norms ``[H, T]``."""
    dtype = value_norms[0].dtype
    if mode == "heta":
        means = [a.to(dtype) for a in trace.mean_attentions]
        rows = [r.to(dtype) for r in trace.attention_rows]
        return (heta_flow_reference if reference else heta_flow)(means, rows, value_norms)
    attentions = [a.to(dtype) for a in trace.attentions]
    predicting = trace.attention_rows[0].shape[1]
    return (official_flow_reference if reference else official_flow)(attentions, value_norms, predicting)


@torch.no_grad()
def layer_value_norms(attention_modules, adapter, layout: HeadLayout, trace: Trace, *, mode: str) -> list[torch.Tensor]:
    """Per block the ``[H, T]`` value norms that ``mode`` uses, in at least float32."""
    norms = []
    home = trace.mean_attentions[
        0
    ].device  # where the flow is combined (a split model: each block's W_O is on its device)
    for layer, attn in enumerate(attention_modules):
        out_weight = adapter.out_weight(attn, layout)
        if mode == "heta":
            norm = head_value_norms(trace.values[layer].to(out_weight.device), out_weight, layout)
        else:
            value_weight = adapter.value_weight(attn, layout)
            norm = official_value_norms(
                trace.block_inputs[layer].to(out_weight.device), value_weight, out_weight, layout
            )
        norms.append(norm.to(home, torch.promote_types(norm.dtype, torch.float32)))
    return norms
