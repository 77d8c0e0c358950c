"""How long an attribution will take, and what a time budget lets it run: the ``Attributor``'s
planning half (:class:`Planning`, mixed into :class:`heta_core.Attributor`).

The time model (:mod:`heta_core.runtime.cost`) prices each stage's planned work (units and chunks,
from the same chunk planner the run uses) at this model's measured speed; ``budget_s`` walks the
presets from the most exact down (:data:`LADDER`) and runs the first whose estimate fits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from .config import HetaConfig
from .errors import BudgetError
from .inputs import targets
from .methods.registry import method
from .results import diagnostics
from .results.schema import AttributionResult, BudgetPlan, Estimate
from .runtime import faults
from .runtime.cost import Speed, assumed_speed, budget_bytes, fit_speed

if TYPE_CHECKING:
    from .models.handle import ModelHandle

# the presets a time budget tries, most exact first
LADDER = ("exact", "balanced", "fast")


class Planning:
    """Calibration, estimates and time budgets; needs the Attributor's model, tokenizer and config."""

    handle: ModelHandle
    tokenizer: Any
    name: str
    config: HetaConfig
    speed: Speed | None

    if TYPE_CHECKING:  # the Attributor's, declared for the type checker

        @property
        def device(self) -> torch.device: ...

        @property
        def _weight_bytes(self) -> int: ...

        def attribute(self, *args: Any, **kwargs: Any) -> AttributionResult: ...

    def calibrate(self) -> Speed:
        """Measures this model's speed on its device for the time model (:mod:`heta_core.runtime.cost`):
        after a warm-up, small HETA attributions of random tokens at two lengths and two probe counts,
        each run twice (the faster run counts: a busy machine only ever slows a run down), about 0.5 s
        on heta-demo and a few seconds for a GPT-2-small on CPU. Their per-stage seconds against their
        planned work give the seconds per unit and per chunk. Kept in :attr:`speed`; ``estimate`` and
        ``budget_s`` use it."""
        positions = self.handle.max_positions or 4096
        generator = torch.Generator().manual_seed(0)
        samples = []
        shapes = [(min(12, positions), 2)] + [
            (min(length, positions), probes) for length in (8, 24) for probes in (1, 6)
        ]
        for index, (length, probes) in enumerate(shapes):
            ids = torch.randint(0, self.handle.vocab_size, (max(2, length),), generator=generator).tolist()
            cfg = HetaConfig(
                num_hvp_samples=probes,
                dtype=self.config.dtype,
                cuda_streams=self.config.cuda_streams,
                memory_budget_mb=self.config.memory_budget_mb,
            )
            with faults.suspended():
                runs = [self.attribute(input_ids=ids, config=cfg).timings for _ in range(1 if index == 0 else 2)]
            if index == 0:
                continue  # the warm-up: first kernels, allocator, lazy imports
            prepared = targets.prepare(self.handle, self.tokenizer, self.name, cfg, input_ids=ids)
            work = self._work(prepared.request, cfg)
            seconds = {stage: min(getattr(t, f"{stage}_s") or 0.0 for t in runs) for stage in work}
            samples.append((work, seconds, min(t.compute_s for t in runs)))
        self.speed = fit_speed(samples)
        return self.speed

    def _speed(self, measure: bool) -> Speed:
        """The measured speed; measured now when ``measure`` and there are weights, else assumed from the
        model's size."""
        if self.speed is None and measure and self.device.type != "meta":
            self.calibrate()
        return self.speed or assumed_speed(self.handle.config, self.device)

    def _work(self, request, cfg: HetaConfig) -> dict[str, tuple[int, int]]:
        """Units and chunks per stage of the method (and diagnostics) for the time model."""
        work: dict[str, tuple[int, int]] = {}
        for plan in self._plans(request, cfg, budget_bytes(cfg.memory_budget_mb, self.device)):
            for stage, (units, chunks) in plan.work.items():
                work[stage] = (work.get(stage, (0, 0))[0] + units, work.get(stage, (0, 0))[1] + chunks)
        return work

    def _budgeted(self, cfg: HetaConfig, prepared, generate, measure: bool) -> tuple[HetaConfig, BudgetPlan]:
        """The most exact preset (from ``cfg.preset`` down) whose estimate fits ``cfg.budget_s``; when none
        does but the flow alone does, the cheapest, which then ends with the stages it has when the
        budget runs out. Not even the flow: :class:`BudgetError` with the cheapest plan's estimate."""
        budget_s = cfg.budget_s
        if budget_s is None:
            raise ValueError("_budgeted needs config.budget_s")
        speed = self._speed(measure)
        request = prepared.request
        estimates: dict[str, float] = {}
        chosen = None
        for preset in LADDER[LADDER.index(cfg.preset) :]:
            candidate = cfg.replace(preset=preset)
            work = self._work(request, candidate)
            estimates[preset] = speed.seconds(work)
            if chosen is None and estimates[preset] <= budget_s:
                chosen = candidate
                break
        cheapest = cfg.replace(preset=LADDER[-1])
        estimates["flow"] = speed.seconds({"flow": self._work(request, cheapest)["flow"]})
        if chosen is None:
            if estimates["flow"] > budget_s:
                estimate = self._estimate(cheapest, request, generate, speed)
                raise BudgetError(
                    f"not even HETA's first stage fits budget_s={budget_s:g}: the flow alone is estimated at "
                    f"{estimates['flow']:.3g} s and the cheapest preset ({LADDER[-1]}) at "
                    f"{estimates[LADDER[-1]]:.3g} s",
                    field="budget_s",
                    details={"estimate": estimate.to_dict()},
                )
            chosen = cheapest
        plan = BudgetPlan(
            budget_s=budget_s,
            preset=chosen.preset,
            estimated_s=estimates[chosen.preset],
            estimates=estimates,
            speed=speed.source,
        )
        return chosen, plan

    def _estimate(self, cfg: HetaConfig, request, generate, speed: Speed, plan: BudgetPlan | None = None) -> Estimate:
        plans = self._plans(request, cfg, budget_bytes(cfg.memory_budget_mb, self.device))
        tokens = sum(p.forward_tokens for p in plans) + (
            request.targets if generate is not None else 0
        )  # + the generation
        return Estimate(
            prompt_tokens=request.scored,
            target_tokens=request.targets,
            hvps=sum(p.hvps for p in plans),
            forward_tokens=tokens,
            peak_bytes=self._weight_bytes + max(p.peak_bytes for p in plans),  # the passes run one after another
            seconds=speed.seconds(self._work(request, cfg)),
            plan=plan,
        )

    def _plans(self, request, cfg: HetaConfig, budget: int) -> list:
        """The method's plan and, with ``cfg.diagnostics``, the diagnostics' forwards after it."""
        plans = [method(cfg.method).plan(self.handle, request, cfg, budget)]
        if cfg.diagnostics:
            plans.append(diagnostics.plan(self.handle, request, cfg, budget))
        return plans
