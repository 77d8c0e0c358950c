"""GET /models: what is served, with which limits, and the attribution methods."""

from __future__ import annotations

from fastapi import APIRouter

from heta_core import METHODS, method_details

from ..admission import max_tokens
from ..deps import CallerDep, ServicesDep
from ..problems import problem_responses
from ..registry import live_workers_async, serving
from ..schemas import GraphCounts, ModelPlacement, ModelsResponse, ServedModel

router = APIRouter(tags=["models"])


def placement(settings, planner, loaded: list[dict]) -> ModelPlacement:
    """A live worker's report of how it placed the model; before one has loaded it, what the settings ask."""
    reported = next((m["placement"] for m in loaded if m.get("placement")), None)
    known = reported or {
        "dtype": planner.dtype,
        "quantization": settings.quantize,
        "device_map": {},
    }
    return ModelPlacement(
        **known,
        requested_device_map=settings.device_map,
        gpus_per_worker=settings.gpus_per_worker,
        loaded=reported is not None,
    )


def graph_counts(loaded: list[dict]) -> GraphCounts:
    """The workers' CUDA-graph counts for a model, summed (a worker of an older release reports none)."""
    reports = [m["cuda_graphs"] for m in loaded if m.get("cuda_graphs")]
    return GraphCounts(**{name: sum(r.get(name, 0) for r in reports) for name in GraphCounts.model_fields})


@router.get(
    "/models",
    summary="Served models with dtype, device and limits; the attribution methods",
    response_model=ModelsResponse,
    responses=problem_responses(401, 403, 429, 503),
)
async def models(owner: CallerDep, svc: ServicesDep) -> ModelsResponse:
    settings, planners = svc.settings, svc.planners
    workers = await live_workers_async(svc.redis)
    served = []
    for name in settings.models:
        planner = planners[name]
        loaded = [w["models"][name] for w in serving(workers, name, draining=True)]
        served.append(
            ServedModel(
                name=name,
                model_type=planner.model_type,
                dtype=loaded[0]["dtype"] if loaded else planner.dtype,
                devices=sorted({m["device"] for m in loaded}),
                workers=len(loaded),
                max_tokens=max_tokens(settings, planner),
                placement=placement(settings, planner, loaded),
                cuda_graphs=graph_counts(loaded) if settings.cuda_graphs else None,
            )
        )
    return ModelsResponse(
        models=served,
        default=settings.models[0] if settings.models else None,
        methods=list(METHODS),
        method_details=method_details(),
        default_method=settings.default_method,
    )
