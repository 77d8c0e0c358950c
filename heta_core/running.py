"""Running prepared attributions: the method (alone, or several calls packed together), the
diagnostics, partial results and the result document — the ``Attributor``'s execution half
(:class:`Running`, mixed into :class:`heta_core.Attributor`)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import nn

from .config import HetaConfig
from .errors import NonFiniteResultError
from .inputs import targets
from .methods.registry import method
from .results import diagnostics
from .results.assemble import assemble
from .results.schema import AttributionResult, BudgetPlan
from .runtime.cost import budget_bytes
from .runtime.progress import BudgetSpent, Progress

if TYPE_CHECKING:
    import torch

    from .models.handle import ModelHandle


@contextlib.contextmanager
def _inputs_only(model: nn.Module) -> Iterator[None]:
    """Differentiate w.r.t. inputs only: parameters stop requiring grad for the duration."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for param, _ in flags:
        param.requires_grad_(False)
    try:
        yield
    finally:
        for param, flag in flags:
            param.requires_grad_(flag)


@dataclass(eq=False)
class _Call:
    """One attribution on its way through :meth:`Attributor._run`."""

    cfg: HetaConfig
    prepared: targets.Prepared
    progress: Callable[[float], None] | None
    on_partial: Callable[[AttributionResult], None] | None
    started: float
    outcome: Any = None  # the result or the exception, once known
    plan: BudgetPlan | None = None  # how budget_s chose the run
    planned: float = 0.0  # time.perf_counter() once the plan was made (a budget runs from here)
    request: targets.Request | None = None
    tracker: Progress | None = None
    parts: Any = None


class Running:
    """Executes :class:`_Call` s; needs the Attributor's model, tokenizer, name, revision and plans."""

    handle: ModelHandle
    tokenizer: Any
    name: str

    if TYPE_CHECKING:  # the Attributor's (and Planning's), declared for the type checker

        @property
        def device(self) -> torch.device: ...

        @property
        def model(self) -> nn.Module: ...

        @property
        def revision(self) -> str | None: ...

        def _plans(self, request, cfg: HetaConfig, budget: int) -> list: ...

    def _run(
        self, calls: list[_Call | Exception], packing: str, on_outcome: Callable | None = None
    ) -> list[AttributionResult | Exception]:
        """Runs prepared calls (generation, the method, diagnostics, assembly); outcomes in order, each
        also handed to ``on_outcome(index, outcome)`` as soon as it is known. An exception in ``calls``
        is the outcome of a call that failed before it could run."""

        def conclude(call: _Call | Exception) -> None:
            if isinstance(call, _Call) and call.parts is not None:
                self._finish(call)
            if on_outcome is not None:
                on_outcome(calls.index(call), call.outcome if isinstance(call, _Call) else call)

        runnable = []
        for call in calls:
            if not isinstance(call, _Call):
                conclude(call)
                continue
            try:
                call.request = request = targets.with_generation(self.handle, self.tokenizer, call.prepared)
                budget = budget_bytes(call.cfg.memory_budget_mb, self.device)
                total = sum(plan.chunks for plan in self._plans(request, call.cfg, budget)) if call.progress else 1
                # the budget runs from the plan on: a first budgeted call's speed measurement is not charged to it
                until = call.planned + call.cfg.budget_s if call.cfg.budget_s is not None else None
                call.tracker = Progress(call.progress, total, until)
                runnable.append(call)
            except Exception as error:  # noqa: BLE001 - this call's outcome
                call.outcome = error
                conclude(call)
        together = [call for call in runnable if method(call.cfg.method).run_many is not None]

        def ended(index: int, outcome) -> None:  # diagnostics and the document at once, not after the others
            call = together[index]
            call.parts, call.outcome = (outcome, None) if not isinstance(outcome, BaseException) else (None, outcome)
            conclude(call)

        with _inputs_only(self.model):
            run_many = method(together[0].cfg.method).run_many if together else None
            if run_many is not None:
                run_many(
                    self.handle, [(c.request, c.cfg, c.tracker, self._publisher(c)) for c in together], packing, ended
                )
            for call in runnable:
                if call in together:
                    continue
                try:
                    call.parts = method(call.cfg.method).run(
                        self.handle, call.request, call.cfg, call.tracker, self._publisher(call)
                    )
                except Exception as error:  # noqa: BLE001
                    call.outcome = error
                conclude(call)
        return [call.outcome if isinstance(call, _Call) else call for call in calls]

    def _publisher(self, call: _Call) -> Callable | None:
        """The pipeline's ``publish(stages, parts)`` for a call with ``on_partial``: the partial document."""
        on_partial = call.on_partial
        if on_partial is None:
            return None

        def publish(stages: tuple[str, ...], parts) -> None:
            if parts.complete and not call.cfg.diagnostics:
                return  # the final result follows at once
            try:
                document = self._assemble(call, parts, partial=True)
            except NonFiniteResultError:
                return  # the final result reports it
            on_partial(document)

        return publish

    def _finish(self, call: _Call) -> None:
        """Diagnostics (when asked) and the result document of a call whose method ran."""
        parts, faithfulness = call.parts, None
        try:
            if call.cfg.diagnostics and parts.stopped is None:
                budget = budget_bytes(call.cfg.memory_budget_mb, self.device)
                try:
                    # ranked by the result's own (float32) scores
                    scores = parts.values["score"].float()
                    faithfulness = diagnostics.diagnose(
                        self.handle, call.request, call.cfg, scores, budget, call.tracker
                    )
                except BudgetSpent:
                    parts.stopped = "budget"
            if call.tracker is not None:
                call.tracker.finish()
            call.outcome = self._assemble(call, parts, diagnostics=faithfulness)
        except Exception as error:  # noqa: BLE001
            call.outcome = error

    def _assemble(self, call: _Call, parts, *, partial: bool = False, diagnostics=None) -> AttributionResult:
        result = assemble(
            self.handle,
            self.tokenizer,
            self.name,
            self.revision,
            call.prepared,
            call.request,
            call.cfg,
            parts,
            0.0,
            diagnostics=diagnostics,
            partial=partial,
        )
        if call.plan is not None:
            result.meta.plan = call.plan.model_copy(update={"stopped": parts.stopped})
        result.meta.timings.compute_s = time.perf_counter() - call.started  # the whole call: the result's assembly too
        return result
