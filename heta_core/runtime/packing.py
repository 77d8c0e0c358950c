"""Rows of several contexts in one batched pass: the masked forwards and Hessian-vector chunks of
different attributions (different prompts, lengths and KV prefixes) share one forward.

A part is ``(runner, start, rows)``: ``rows`` ``[b, L, d]`` continue the context of ``runner`` (its
model and detached KV prefix) after its first ``start`` positions, as in
:meth:`~heta_core.runtime.prefix.SuffixRunner.logits`. Parts of one geometry (the same ``start``
and ``L``) are stacked as they are: every row is computed exactly as alone. Parts of different
geometries are padded on the left and masked (``packing="pad"``); with ``packing="length"`` only
parts of one geometry share a pass. The padded layout of row r (prefix length s, suffix length L),
with C = max s and S = max L over the parts::

    cache  [ pad × (C − s) | prefix 0 … s−1 ]      suffix  [ pad × (S − L) | positions s … s+L−1 ]

so the predicting positions are the last ones of every row. The additive 4-D mask lets a real
position see its own prefix and the real suffix positions up to itself, never a pad; a pad position
sees only itself (a row with no visible key would be 0/0 in the softmax). Masked keys get exactly
zero probability, so a padded row's numbers equal its unpadded ones up to the order of floating-point
sums (float64: ~1e-15). Positions are passed explicitly, so learned and rotary position embeddings
see each row's real positions.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import DynamicCache

from ..models.compat import with_cache

PACKINGS = ("pad", "length")

Part = tuple  # (SuffixRunner, start: int, rows: Tensor [b, L, d])


def packed_logits(parts: Sequence[Part], keep: int = 1) -> torch.Tensor:
    """Logits ``[Σb, keep, V]`` at the last ``keep`` positions of every part's rows, in part order."""
    pack = Pack([(runner, start, rows.shape[0], rows.shape[1]) for runner, start, rows in parts])
    return pack.logits(pack.place([rows for _, _, rows in parts]), keep)


class Pack:
    """The batch layout of parts given as ``(runner, start, rows count, suffix length)``: where each
    part's rows go (:meth:`place`, :attr:`pads`) and the forward over the placed rows (:meth:`logits`)."""

    def __init__(self, geometries: Sequence[tuple]):
        self.geometries = list(geometries)
        self.runner = geometries[0][0]
        self.context = max(start for _, start, _, _ in geometries)
        self.span = max(length for _, _, _, length in geometries)
        self.uniform = len({(start, length) for _, start, _, length in geometries}) == 1
        self.pads = [self.span - length for _, _, _, length in geometries]  # left padding of each part's suffix
        self.sizes = [count for _, _, count, _ in geometries]

    def place(self, rows: Sequence[torch.Tensor]) -> torch.Tensor:
        """The parts' rows ``[b, L, d]`` as one ``[Σb, S, d]`` batch (zeros in the pads)."""
        if self.uniform:
            return rows[0] if len(rows) == 1 else torch.cat(list(rows))
        reference = rows[0]
        placed = torch.zeros(
            sum(self.sizes), self.span, reference.shape[2], dtype=reference.dtype, device=reference.device
        )
        row = 0
        for part, pad in zip(rows, self.pads, strict=True):
            placed[row : row + part.shape[0], pad:] = part
            row += part.shape[0]
        return placed

    def logits(self, rows: torch.Tensor, keep: int = 1) -> torch.Tensor:
        """Logits ``[Σb, keep, V]`` of placed rows."""
        if len(self.geometries) == 1:
            _, start, _, _ = self.geometries[0]
            return self.runner.logits(start, rows, keep)
        if self.uniform:
            return _forward(self.runner, rows, self._stacked_prefix(), keep)
        mask, positions, prefix = self._padding(rows)
        return _forward(self.runner, rows, prefix, keep, attention_mask=mask, position_ids=positions)

    def _stacked_prefix(self):
        start = self.context
        if start == 0:
            return None
        return [
            tuple(
                torch.cat(
                    [
                        runner.kv[layer][which][:, :, :start].expand(count, -1, -1, -1)
                        for runner, _, count, _ in self.geometries
                    ]
                )
                for which in (0, 1)
            )
            for layer in range(len(self.runner.kv))
        ]

    def _padding(self, rows: torch.Tensor):
        """The additive 4-D mask, the position ids and the padded KV prefix of the layout."""
        dtype, device = rows.dtype, rows.device
        context, span, batch = self.context, self.span, rows.shape[0]
        positions = torch.zeros(batch, span, dtype=torch.long, device=device)
        visible = torch.zeros(batch, span, context + span, dtype=torch.bool, device=device)
        diagonal = torch.eye(span, dtype=torch.bool, device=device)
        causal = torch.ones(span, span, dtype=torch.bool, device=device).tril()
        prefix = [
            [torch.zeros(batch, kv.shape[1], context, kv.shape[3], dtype=kv.dtype, device=kv.device) for kv in pair]
            for pair in self.runner.kv
        ]
        row = 0
        for (runner, start, count, length), pad in zip(self.geometries, self.pads, strict=True):
            rows_of = slice(row, row + count)
            positions[rows_of, pad:] = torch.arange(start, start + length, device=device)
            real = torch.arange(span, device=device) >= pad
            # real queries see their prefix and the real suffix up to themselves; pad queries themselves
            suffix_keys = torch.where(real[:, None], causal & real[None, :], diagonal)
            prefix_keys = torch.zeros(span, context, dtype=torch.bool, device=device)
            prefix_keys[pad:, context - start :] = True
            visible[rows_of] = torch.cat([prefix_keys, suffix_keys], 1)
            if start:
                for layer, (keys, values) in enumerate(runner.kv):
                    prefix[layer][0][rows_of, :, context - start :] = keys[:, :, :start]
                    prefix[layer][1][rows_of, :, context - start :] = values[:, :, :start]
            row += count
        mask = torch.zeros(visible.shape, dtype=dtype, device=device).masked_fill_(~visible, torch.finfo(dtype).min)[
            :, None
        ]
        return mask, positions, ([tuple(pair) for pair in prefix] if context > 0 else None)


def _forward(runner, rows: torch.Tensor, prefix, keep: int, **extra) -> torch.Tensor:
    model = runner.model
    cache = DynamicCache(ddp_cache_data=prefix, config=model.config)
    with runner._equivalents:
        out = model(inputs_embeds=rows, **with_cache(model, cache), use_cache=True, logits_to_keep=keep, **extra)
    return out.logits[:, -keep:]
