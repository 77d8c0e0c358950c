"""Static shapes and CUDA graphs: one captured launch per chunk instead of thousands of kernels.

On a GPU a chunk of HVPs on a small or medium model is launch-bound: the host issues every kernel of
a forward, a backward and a batched second backward (~12 µs each; 634,000 of them for a GPT-2-small
shape at 256 tokens), and the device waits. A CUDA graph records a computation's kernels once and
replays them with one launch — but only for fixed shapes, reading and writing fixed memory. So a
computation that wants to be replayed is written for *buckets* (:func:`bucket`,
:func:`bucket_length`: its inputs padded to one of a few sizes) and run through :class:`StaticGraphs`,
which keeps one captured graph per shape key:

- the first :data:`WARMUP` calls of a key run eagerly (their results are used; the warm-up CUDA
  graphs need: lazy initialisation, autotuning, autograd's stream bookkeeping);
- the next call captures the computation on static copies of its inputs (one memory pool shared by
  every graph of the cache), then every call copies its inputs into those buffers, replays, and
  clones the outputs out before the next replay may overwrite them. Replays are ordered one after
  the other (an event), so graphs sharing the pool never run at once;
- a capture that fails (an operation that synchronises with the host, an unsupported kernel) is
  logged, and that key runs eagerly from then on: a graph is an optimisation, never a new failure.

On a CPU there is nothing to capture: every call runs eagerly on the same padded inputs, which is how
the tests check the bucketed computation's numbers against the unpadded one.
"""

from __future__ import annotations

import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import torch

log = logging.getLogger(__name__)

WARMUP = 2  # eager calls of a shape before it is captured
CAPACITY = 8  # captured shapes kept per model (least recently used dropped): each holds its static buffers
MIN_LENGTH = 16


def ladder(smallest: int = 1):
    """The bucket sizes from ``smallest`` (a power of two) on: every 2^k and 1.5·2^k — a padded size
    is under 1.5× the real one, with two shapes per doubling."""
    size = smallest
    while True:
        yield size
        size = size + 1 if size < 4 else size * 3 // 2 if size & (size - 1) == 0 else size * 4 // 3


def bucket(count: int, smallest: int = 1) -> int:
    """The least bucket size (:func:`ladder`) that holds ``count``."""
    return next(size for size in ladder(smallest) if size >= count)


def bucket_length(length: int, limit: int | None = None) -> int:
    """The padded sequence length for ``length`` tokens (at least 16), capped at the model's ``limit``
    of positions (which ``length`` never exceeds)."""
    size = bucket(length, MIN_LENGTH)
    return size if limit is None else max(length, min(size, limit))


@dataclass
class _Captured:
    graph: object
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor


@dataclass
class StaticGraphs:
    """The captured graphs of one model, by shape key (see the module docstring)."""

    capacity: int = CAPACITY
    calls: dict[Hashable, int] = field(default_factory=dict)
    graphs: OrderedDict = field(default_factory=OrderedDict)
    failed: dict[Hashable, str] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=lambda: {"eager": 0, "captured": 0, "replayed": 0, "failed": 0})
    _pool: object = None
    _last: object = None  # the event recorded after the latest replay

    def run(
        self, key: Hashable, inputs: dict[str, torch.Tensor], compute: Callable[[dict[str, torch.Tensor]], torch.Tensor]
    ) -> torch.Tensor:
        """``compute(inputs)``: eagerly, or replayed from a graph captured for ``key``. ``compute`` must
        read its data only from ``inputs`` (tensors of fixed shapes for a key) and return one tensor;
        an input that requires grad is a leaf the computation differentiates with respect to."""
        device = next(iter(inputs.values())).device
        if device.type != "cuda" or key in self.failed:
            return self._eager(inputs, compute)
        if key in self.graphs:
            return self._replay(key, inputs)
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] <= WARMUP:
            return self._eager(inputs, compute)
        try:
            self._capture(key, inputs, compute)
        except Exception as error:  # noqa: BLE001 - a graph is an optimisation: this shape runs eagerly instead
            self.failed[key] = f"{type(error).__name__}: {error}"
            self.stats["failed"] += 1
            log.warning("cannot capture a CUDA graph for %s; it runs eagerly: %s", key, self.failed[key])
            return self._eager(inputs, compute)
        return self._replay(key, inputs)

    def _eager(self, inputs, compute) -> torch.Tensor:
        self.stats["eager"] += 1
        return compute(inputs)

    def _capture(self, key, inputs, compute) -> None:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static = {name: _static_copy(tensor) for name, tensor in inputs.items()}
        graph = torch.cuda.CUDAGraph()
        torch.cuda.current_stream().synchronize()
        with torch.cuda.graph(graph, pool=self._pool):
            output = compute(static)
        self.graphs[key] = _Captured(graph, static, output)
        self.stats["captured"] += 1
        while len(self.graphs) > self.capacity:
            self.graphs.popitem(last=False)

    def _replay(self, key, inputs) -> torch.Tensor:
        captured = self.graphs[key]
        self.graphs.move_to_end(key)
        stream = torch.cuda.current_stream()
        if self._last is not None:  # the previous replay (maybe on another stream) has finished with the pool
            stream.wait_event(self._last)
        with torch.no_grad():
            for name, tensor in inputs.items():
                captured.inputs[name].copy_(tensor)
        captured.graph.replay()
        output = captured.output.clone()
        self._last = torch.cuda.Event()
        self._last.record(stream)
        self.stats["replayed"] += 1
        return output


def _static_copy(tensor: torch.Tensor) -> torch.Tensor:
    copy = tensor.detach().clone()
    return copy.requires_grad_(True) if tensor.requires_grad else copy


_CACHES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def graphs_for(model: torch.nn.Module) -> StaticGraphs:
    """The model's graph cache (created at first use; it goes with the model)."""
    if model not in _CACHES:
        _CACHES[model] = StaticGraphs()
    return _CACHES[model]
