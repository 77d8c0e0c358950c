"""Progress of one attribution, counted in batched chunks against the method's plan, and the end
of its time budget."""

from __future__ import annotations

import time
from collections.abc import Callable


class BudgetSpent(Exception):
    """The attribution's time budget (``HetaConfig.budget_s``) ran out: it ends with the stages it has."""


class Progress:
    """Counts chunks against the plan and reports the fraction done to the caller's callback.

    The callback runs on the host between chunks; an exception it raises (e.g. a cancellation)
    aborts the attribution, and the model's settings are restored on the way out.
    """

    def __init__(self, callback: Callable[[float], None] | None, total: int, until: float | None = None):
        self.callback, self.total, self.done = callback, max(1, total), 0
        self.until = until  # time.perf_counter() at which the budget runs out, or None

    def tick(self) -> None:
        if self.until is not None and time.perf_counter() > self.until:
            raise BudgetSpent
        if self.callback is not None:
            self.callback(min(self.done / self.total, 1.0))
        self.done += 1

    def finish(self) -> None:
        if self.callback is not None:
            self.callback(1.0)
