"""Running the batched work of several attributions together, each keeping its own fate.

A *lane* is one attribution's work in one stage: a list of :class:`Work` items (its chunks, in
order), a ``tick`` called before each of its items runs (progress, cancellation, deadlines: an
exception from it ends that lane only) and the outputs collected per item. The scheduler takes the
next item of every live lane in rounds; items that may share a batch (the same :meth:`Work.key`; with
``packing="length"`` also the same geometry, :mod:`heta_core.runtime.packing`) are packed greedily
until the memory budget of the padded batch is reached, and each batch runs on the stage's next
stream. A batch that raises is run again item by item, so a failure is charged to the lane whose
item fails alone; the other lanes go on.

With one lane this is exactly the solo run: every item in order, each alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch.profiler import record_function

from .prefix import StreamPool


class Work(Protocol):
    """One batched chunk of one attribution: ``count`` rows running ``length`` positions after a
    ``start``-position prefix."""

    slot: Hashable  # which output it contributes to (the lane's reduction groups outputs by slot)
    count: int
    start: int
    length: int

    def key(self) -> Hashable | None:
        """Items of equal keys may run in one batch; None: always alone."""

    def bytes_at(self, span: int, context: int) -> int:
        """Activation bytes of this item's rows padded to ``span`` suffix positions after a ``context`` prefix."""

    def run(self) -> torch.Tensor:
        """The item alone."""

    @staticmethod
    def run_together(items: Sequence[Work], packing: str) -> list[torch.Tensor]:
        """Several items of one key in one batch; one output per item, in order."""


class Opaque:
    """Work that never shares a batch (the literal reference loops, a low-rank factorisation)."""

    count, start, length = 1, 0, 0

    def __init__(self, slot: Hashable, compute: Callable[[], torch.Tensor]):
        self.slot, self.compute = slot, compute

    def key(self) -> None:
        return None

    def run(self) -> torch.Tensor:
        return self.compute()


@dataclass
class Lane:
    """One attribution's items in one stage."""

    items: list
    tick: Callable[[], None]
    budget: int  # bytes: a batch holding this lane's item stays within the smallest budget of its lanes
    pool: StreamPool | None = None  # the stage's streams (a batch runs on the pool of its lanes' stage)
    stage: str = ""
    owner: object = None  # the attribution the lane belongs to (for the ``done`` callback)
    outputs: list = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0  # this lane's share of its batches' time, by rows
    _next: int = 0

    @property
    def done(self) -> bool:
        return self.error is not None or self._next >= len(self.items)

    def by_slot(self) -> dict:
        """Outputs grouped by their items' slots, in order."""
        grouped: dict = {}
        for item, output in zip(self.items, self.outputs, strict=False):  # outputs stop where a lane stopped
            grouped.setdefault(item.slot, []).append(output)
        return grouped


def _fits(batch: list, candidate, budget: int) -> bool:
    items = [item for _, item in batch] + [candidate]
    span = max(item.length for item in items)
    context = max(item.start for item in items)
    return sum(item.bytes_at(span, context) for item in items) <= budget


def _batches(ready: list[tuple[Lane, object]], packing: str) -> list[list[tuple[Lane, object]]]:
    """Ready (lane, item) pairs grouped into batches: same key, packable, within the budget."""
    batches: list[list[tuple[Lane, object]]] = []
    for lane, item in ready:
        key = item.key()
        for batch in batches:
            first = batch[0][1]
            if key is None or first.key() != key:
                continue
            if packing == "length" and (first.start, first.length) != (item.start, item.length):
                continue
            if _fits(batch, item, min(lane.budget, *(member.budget for member, _ in batch))):
                batch.append((lane, item))
                break
        else:
            batches.append([(lane, item)])
    return batches


def run_lanes(
    lanes: list[Lane],
    packing: str = "pad",
    between: Callable[[], None] | None = None,
    done: Callable[[Lane], None] | None = None,
) -> None:
    """Run every lane's items (see the module docstring). ``between()`` runs on the host before each
    batch; ``done(lane)`` as soon as a lane has no item left (or failed) — it may append lanes to
    ``lanes`` (an attribution's next stage), which join the next round."""
    finished: set[int] = set()

    def close(lane: Lane) -> None:
        if id(lane) not in finished:
            finished.add(id(lane))
            if done is not None:
                done(lane)

    while True:
        ready = []
        for lane in list(lanes):
            if lane.done:
                close(lane)
                continue
            try:
                lane.tick()
            except Exception as error:  # noqa: BLE001 - this lane's cancellation, deadline or failure
                lane.error = error
                close(lane)
                continue
            ready.append((lane, lane.items[lane._next]))
        if not ready:
            if all(id(lane) in finished for lane in lanes):
                return
            continue
        for batch in _batches(ready, packing):
            if between is not None:
                between()
            _run_batch(batch, packing)
            for lane, _ in batch:
                if lane.done:
                    close(lane)


def _run_batch(batch: list[tuple[Lane, object]], packing: str) -> None:
    lane = batch[0][0]
    streams = lane.pool
    clock = time.perf_counter()
    try:
        # named host ranges: a profiler trace attributes each stage's kernels (`heta bench`'s overlap proof)
        with record_function(f"heta.{lane.stage}"), streams.next():
            if len(batch) == 1:
                outputs = [batch[0][1].run()]
            else:
                outputs = type(batch[0][1]).run_together([item for _, item in batch], packing)
    except Exception as error:  # noqa: BLE001
        if len(batch) == 1:
            batch[0][0].error = error
            batch[0][0]._next += 1
            return
        for member in batch:  # alone, so that the failure is charged to its own lane
            _run_batch([member], packing)
        return
    seconds = time.perf_counter() - clock
    total = sum(item.count for _, item in batch)
    for (lane, item), output in zip(batch, outputs, strict=True):
        lane.outputs.append(output)
        lane._next += 1
        lane.seconds += seconds * item.count / total
