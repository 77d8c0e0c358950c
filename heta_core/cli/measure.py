"""What the benchmark commands measure with: peak memory above a starting level (RSS sampled on
CPU, the allocator's peak on CUDA), a large matmul's GFLOP/s (the machine's practical ceiling, taken
in the same process as the run it is compared with), device synchronisation and relative error."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict]:
    """Yields a dict that holds ``peak_bytes`` above the starting level once the block exits."""
    box: dict = {}
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        yield box
        torch.cuda.synchronize(device)
        box["peak_bytes"] = torch.cuda.max_memory_allocated(device) - base
        return
    base = _rss()
    peak = [base]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.002):
            peak[0] = max(peak[0], _rss())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield box
    finally:
        stop.set()
        sampler.join()
        box["peak_bytes"] = max(peak[0], _rss()) - base


def matmul_gflops(
    device: torch.device, dtype: torch.dtype, size: int | None = None, repeats: int | None = None
) -> float:
    """Achieved GFLOP/s of a large square matmul: the machine's practical ceiling for this dtype.
    A GPU needs a larger product (and more of them) than a CPU to reach its dense peak."""
    size = size or (8192 if device.type == "cuda" else 2048)
    repeats = repeats or (20 if device.type == "cuda" else 5)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b  # warm-up
    sync(device)
    started = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - started) / 1e9


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    scale = b.abs().max().clamp_min(torch.finfo(torch.float32).tiny)
    return float((a - b).abs().max() / scale)
