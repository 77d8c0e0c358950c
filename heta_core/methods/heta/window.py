"""The work of HETA's three terms over one context (:class:`Window`): the trace and M_T, the masked
forwards of I, and the Hessian-vector chunks of S, as items for the shared scheduler
(:mod:`heta_core.runtime.schedule`). A request is one window, or with ``window`` several of the
authors' overlapping windows (:func:`window_starts`); :mod:`.pipeline` runs and merges them."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ...models.adapters import eager_attention
from ...runtime.cost import row_bytes_fn
from ...runtime.masking import mask_vector, masked_chunks
from ...runtime.prefix import SuffixRunner
from ...runtime.schedule import Opaque
from ...runtime.trace import run_trace
from ..base import foil_logprob
from .flow import layer_value_norms, semantic_flow
from .hessian import Curvature, sensitivity_reference
from .hessian_chunks import hvp_chunks
from .kl import impact, information_reference
from .low_rank import OVERSAMPLE, low_rank_sensitivity


def window_starts(n: int, cfg) -> list[int]:
    """Start positions of the authors' windows of ``cfg.window`` tokens over n > window prompt tokens."""
    stride = max(1, round(cfg.window * (1 - cfg.overlap)))
    return sorted(set(list(range(0, n - cfg.window, stride)) + [n - cfg.window]))


def eagerly(model, compute: Callable[[], torch.Tensor]) -> Callable[[], torch.Tensor]:
    """``compute`` under eager attention (second derivatives need materialised probabilities)."""

    def run() -> torch.Tensor:
        with eager_attention(model):
            return compute()

    return run


class Window:
    """One context the three terms are computed over: the prompt ``ids[:n]`` and the targets ``ids[n:]``
    (the whole request, or one of the authors' windows starting at prompt position ``offset``)."""

    def __init__(self, handle, ids: list[int], n: int, mode: str, cfg, foil: int | None, offset: int = 0):
        self.handle, self.ids, self.n, self.mode, self.cfg, self.foil, self.offset = (
            handle,
            ids,
            n,
            mode,
            cfg,
            foil,
            offset,
        )
        self.count = len(ids) - n
        self.targets = torch.tensor(ids[n:], device=handle.device)
        self.embeds = handle.embed(ids[:-1])
        layer = handle.num_layers - cfg.curvature_layers if cfg.curvature_layers is not None else None
        self.curvature = Curvature(kind=cfg.curvature, layer=layer, low_rank=cfg.low_rank, foil=foil)
        self.block = handle.blocks()[layer] if layer is not None else None
        # "each": row j is an independent attribution of y_j from the prompt and y_<j
        self.rows = (
            [(len(ids) - 1, self.targets)]
            if mode != "each"
            else [(n + j, self.targets[j : j + 1]) for j in range(self.count)]
        )

    def flow(self) -> torch.Tensor:
        """Runs the trace and returns M_T ``[k, n]`` (float64 CPU)."""
        handle, cfg, model = self.handle, self.cfg, self.handle.model
        reference = cfg.strategy == "reference"
        with eager_attention(model):
            self.trace = run_trace(
                model,
                handle.adapter,
                handle.layout,
                self.embeds,
                predicting=self.count,
                keep_cache=True,
                full_logits=reference,
                full_attention=cfg.flow == "official",
                block_input_layers=(self.curvature.layer,) if self.curvature.layer is not None else (),
            )
            blocks = [handle.adapter.attention(b) for b in handle.blocks()]
            norms = layer_value_norms(blocks, handle.adapter, handle.layout, self.trace, mode=cfg.flow)
            flow = semantic_flow(self.trace, norms, mode=cfg.flow, reference=reference)[:, : self.n].cpu()
        self.runner = SuffixRunner(model, self.trace.kv)
        self.fill = mask_vector(self.embeds[: self.n], cfg.mask, model.get_input_embeddings())
        self.logprobs = [float(self.trace.logprobs[j, self.ids[self.n + j]]) for j in range(self.count)]
        self.foil_logprob = foil_logprob(self.trace.logprobs, self.foil)
        return flow.double()

    def kl_work(self, budget: int, slot) -> list:
        readout = impact(self.targets, self.foil)
        if self.cfg.strategy == "reference":
            model, trace = self.handle.model, self.trace
            return [
                Opaque(
                    slot, lambda: information_reference(model, self.embeds, trace.logprobs, self.fill, self.n, readout)
                )
            ]
        row = row_bytes_fn(self.handle.config, self.handle.layout, self.embeds.dtype)
        return masked_chunks(
            self.runner,
            self.embeds,
            self.trace.logprobs,
            self.fill,
            self.n,
            readout,
            row_bytes=row,
            budget_bytes=budget,
            slot=slot,
        )

    def hessian_work(self, budget: int, slot) -> list:
        """Per attribution row, its chunks; slots ``(slot, row)``."""
        cfg, handle = self.cfg, self.handle
        source = self.embeds if self.curvature.layer is None else self.trace.block_inputs[self.curvature.layer]
        work = []
        for index, (length, targets) in enumerate(self.rows):
            embeds, rows_source, place = self.embeds[:length], source[:length], (slot, index)
            if self.curvature.low_rank is not None:
                full_row = row_bytes_fn(handle.config, handle.layout, self.embeds.dtype, probes=1)
                work.append(
                    Opaque(
                        place,
                        eagerly(
                            handle.model,
                            lambda e=embeds, s=rows_source, t=targets, row=full_row: low_rank_sensitivity(
                                self.runner,
                                e,
                                s,
                                t,
                                self.n,
                                cfg.num_hvp_samples,
                                cfg.seed,
                                self.curvature,
                                self.block,
                                row_bytes=row,
                                budget_bytes=budget,
                            )[0],
                        ),
                    )
                )
            elif cfg.strategy == "reference":
                work.append(
                    Opaque(
                        place,
                        eagerly(
                            handle.model,
                            lambda e=embeds, s=rows_source, t=targets: sensitivity_reference(
                                handle.model, e, s, t, self.n, cfg.num_hvp_samples, cfg.seed, self.curvature, self.block
                            ),
                        ),
                    )
                )
            else:
                row = row_bytes_fn(handle.config, handle.layout, self.embeds.dtype, probes=cfg.num_hvp_samples)
                work += hvp_chunks(
                    self.runner,
                    embeds,
                    rows_source,
                    targets,
                    self.n,
                    cfg.num_hvp_samples,
                    cfg.seed,
                    self.curvature,
                    self.block,
                    row_bytes=row,
                    budget_bytes=budget,
                    slot=place,
                    static=cfg.cuda_graphs,
                    max_positions=handle.max_positions,
                )
        return work

    def hvps(self, item) -> int:
        """HVPs one finished item of :meth:`hessian_work` computed."""
        if self.curvature.low_rank is not None:  # 2(k + o) full-sequence products
            length = self.rows[item.slot[1]][0]
            return 2 * min(self.curvature.low_rank + OVERSAMPLE, length * self.embeds.shape[1])
        if isinstance(item, Opaque):
            return self.n * self.cfg.num_hvp_samples
        return item.positions.shape[0] * self.cfg.num_hvp_samples
