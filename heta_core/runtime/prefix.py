"""Batched suffix passes over one context, with a reused KV prefix.

Both the HVPs (one per token i and probe) and the masked forwards (one per token i) run the model on
variants of the same context that differ only from position i on. Positions before i are
identical in every variant and independent of x_i, so their keys and values are taken once from the
unmasked forward (a detached prefix) and each batched chunk runs only positions ``start .. p``,
where ``start`` is the first position of the chunk. Only the logits at p are computed.

Chunks are contiguous in position order and sized so that (a) the activations fit the memory budget
and (b) a chunk spans at most a quarter of the remaining suffix — rows for later positions in the
chunk recompute ``start .. i-1`` (nothing there depends on the differentiated x_i), and bounding
the span bounds that waste. (b) gives way while a chunk holds less than half the budget: a large
budget (a GPU's) is then filled with rows, because a device running small batches idles for longer
than the recomputation costs.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache

from ..models.adapters import fast_equivalents
from ..models.compat import with_cache
from .faults import allocation_point

SPAN_FRACTION = 0.25
FILL_FRACTION = 0.5  # the span bound applies only once a chunk holds this share of the budget


def plan_chunks(
    positions: list[int], seq_len: int, row_bytes: Callable[..., int], budget_bytes: int
) -> list[tuple[int, int]]:
    """Split items (sorted ``positions``, one per batch row) into ``[lo, hi)`` chunks.

    ``row_bytes(n, seq_len)`` estimates the memory of one batch row running the last n of
    ``seq_len`` positions (:func:`heta_core.runtime.cost.row_bytes_fn`). A single row is
    always allowed, whatever the budget says, so every request makes progress.
    """
    chunks = []
    lo = 0
    while lo < len(positions):
        start = positions[lo]
        rows_tokens = seq_len - start
        per_row = row_bytes(rows_tokens, seq_len)
        span_end = start + max(1, math.ceil(SPAN_FRACTION * rows_tokens))
        hi = lo + 1
        while (
            hi < len(positions)
            and (positions[hi] < span_end or (hi - lo) * per_row < FILL_FRACTION * budget_bytes)
            and (hi + 1 - lo) * per_row <= budget_bytes
        ):
            hi += 1
        chunks.append((lo, hi))
        lo = hi
    return chunks


@dataclass
class SuffixRunner:
    """Runs ``[B, T - start, d]`` suffix embeddings after the shared context prefix ``[0, start)``."""

    model: nn.Module
    kv: list[tuple[torch.Tensor, torch.Tensor]]  # per block, keys/values of the whole context

    def __post_init__(self) -> None:
        self._equivalents = fast_equivalents(self.model)  # found once, entered per chunk

    def logits(self, start: int, suffix: torch.Tensor, keep: int | torch.Tensor = 1) -> torch.Tensor:
        """Logits ``[B, keep, V]`` at the last ``keep`` positions of suffix rows that continue the
        unmasked prefix of length ``start``; or, for a tensor ``keep``, at those positions (a fixed
        shape whatever the values: :mod:`heta_core.runtime.graphs`)."""
        batch = suffix.shape[0]
        # a cache even at start 0 (an empty one): without any, transformers inspects the position ids
        # for packed sequences with a host-side `.all()`, a GPU synchronisation in every chunk
        prefix = [
            (k[:, :, :start].expand(batch, -1, -1, -1), v[:, :, :start].expand(batch, -1, -1, -1)) for k, v in self.kv
        ]
        cache = DynamicCache(ddp_cache_data=prefix if start > 0 else None, config=self.model.config)
        with self._equivalents:
            out = self.model(inputs_embeds=suffix, **with_cache(self.model, cache), use_cache=True, logits_to_keep=keep)
        return out.logits if isinstance(keep, torch.Tensor) else out.logits[:, -keep:]


class StreamPool:
    """Independent chunks and stages on separate CUDA streams; a no-op on other devices.

    Work is issued from one host thread: kernels queued on different streams overlap on the GPU,
    and a stage's pool does not wait for another stage's. Outputs are read only after
    :meth:`join`, which makes the current stream wait for every side stream. :attr:`seconds` is
    the stage's time: device time from CUDA events on a GPU, host time elsewhere.
    """

    def __init__(self, device: torch.device, count: int, on_chunk: Callable[[], None] | None = None):
        self.device = device
        self.on_chunk = on_chunk  # called on the host before each chunk is issued (progress, cancellation)
        self.streams = [torch.cuda.Stream(device) for _ in range(count)] if device.type == "cuda" else []
        self._next = 0
        self._host_start: float | None = None  # set at first use: pools are created before either stage runs
        self._host_seconds = 0.0
        self._events: tuple | None = None
        if self.streams:
            main = torch.cuda.current_stream(device)
            start = torch.cuda.Event(enable_timing=True)
            start.record(main)
            self._events = (start, [])
            for stream in self.streams:
                stream.wait_stream(main)  # inputs prepared on the main stream are ready

    @contextlib.contextmanager
    def next(self) -> Iterator[None]:
        if self._host_start is None:
            self._host_start = time.perf_counter()
        if self.on_chunk is not None:
            self.on_chunk()
        allocation_point()
        if not self.streams:
            yield
            return
        stream = self.streams[self._next % len(self.streams)]
        self._next += 1
        with torch.cuda.stream(stream):
            yield

    def gather(
        self, parts: list[torch.Tensor], reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
    ) -> torch.Tensor:
        """``reduce(cat(parts))`` computed on a side stream once every chunk is done, then :meth:`finish`."""
        if not self.streams:
            result = reduce(torch.cat(parts))
        else:
            first = self.streams[0]
            for stream in self.streams[1:]:
                first.wait_stream(stream)
            with torch.cuda.stream(first):
                result = reduce(torch.cat(parts))
        self.finish()
        return result

    def finish(self) -> None:
        """Mark the end of the stage's work (it may still be running on the device)."""
        if self._host_start is not None:
            self._host_seconds = time.perf_counter() - self._host_start
        if self._events is not None:
            for stream in self.streams:
                end = torch.cuda.Event(enable_timing=True)
                end.record(stream)
                self._events[1].append(end)

    def join(self) -> None:
        if self.streams:
            main = torch.cuda.current_stream(self.device)
            for stream in self.streams:
                main.wait_stream(stream)

    @property
    def seconds(self) -> float:
        if self._events is None:
            return self._host_seconds
        start, ends = self._events
        for end in ends:
            end.synchronize()
        return max(start.elapsed_time(end) for end in ends) / 1000.0


def to_host(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """Copies results to the CPU: on CUDA into pinned buffers, all queued without blocking and then
    one synchronisation, instead of one blocking pageable copy per tensor. Call after ``join``."""
    out, waits = [], set()
    for tensor in tensors:
        if tensor.device.type != "cuda":
            out.append(tensor.cpu())
            continue
        buffer = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        buffer.copy_(tensor, non_blocking=True)
        out.append(buffer)
        waits.add(tensor.device)
    for device in waits:
        torch.cuda.current_stream(device).synchronize()
    return out
