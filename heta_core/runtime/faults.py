"""Injected faults: the CPU-testable seam of the service's out-of-memory path.

``HETA_FAULT_OOM_TIMES=N`` in a process's environment makes the first N batched chunks it starts
raise ``torch.cuda.OutOfMemoryError`` before allocating anything, exactly where a real CUDA
allocation failure surfaces. The worker's recovery (empty the cache, halve the memory budget,
retry, then fail the job with ``out_of_memory``) can so be proven on a machine without a GPU. Unset
(the default everywhere but tests), it costs one integer comparison per chunk.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

import torch

ENV = "HETA_FAULT_OOM_TIMES"
_lock = threading.Lock()
_remaining: int | None = None
_suspended = threading.local()


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """No injected failure inside (the engine's own measurements, e.g. ``Attributor.calibrate``: the
    injected failures are meant for the work a caller asks for)."""
    previous = getattr(_suspended, "on", False)
    _suspended.on = True
    try:
        yield
    finally:
        _suspended.on = previous


def allocation_point() -> None:
    """Called where a chunk's allocations begin; raises while injected failures remain."""
    global _remaining
    if _remaining == 0 or getattr(_suspended, "on", False):
        return
    with _lock:
        if _remaining is None:
            _remaining = max(0, int(os.environ.get(ENV, "0") or 0))
        if _remaining == 0:
            return
        _remaining -= 1
    raise torch.cuda.OutOfMemoryError(f"injected allocation failure ({ENV})")
