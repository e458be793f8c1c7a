"""``GET /health`` (the process is alive and its model works) and ``GET /ready`` (a model is loaded and
warmed up, and works).

``/health`` answers 503 only for what a restart fixes (``state.ModelWatch``): the model's calls failing
one after another (``model_failing``), or one stuck (``model_stalled``); the message says which and
why. A process without a model yet is alive: ``/health`` 200, ``/ready`` 503 ``not_ready``.
"""

from __future__ import annotations

from fastapi import APIRouter

from ..dependencies import ModelStateDep
from ..errors import APIError
from ..schemas import ErrorResponse, HealthResponse, ModelRef, ReadyResponse

router = APIRouter(tags=["health"])


def check_model_health(state: ModelStateDep) -> None:
    """503 with ``model_failing`` or ``model_stalled`` when the served model needs a restart."""
    problem = state.problem()
    if problem is not None:
        raise APIError(503, *problem)


# HEAD too (some load balancers probe with it); left out of the schema to keep one operation per path. The
# unlisted route takes GET as well and comes first: a wrong method gets the 405 of the first route whose path
# matches, and its Allow header must name both methods.
@router.get("/health", response_model=HealthResponse, summary="Liveness: the process answers and its model works",
            responses={503: {"model": ErrorResponse, "description": "The model needs a restart: its calls keep "
                                                                   "failing (model_failing) or one is stuck "
                                                                   "(model_stalled)."}})
@router.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
async def health(state: ModelStateDep) -> HealthResponse:
    check_model_health(state)
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, summary="Readiness: 200 only once the model is loaded and warm",
            responses={503: {"model": ErrorResponse, "description": "Not ready (not_ready), or the model needs a "
                                                                   "restart (model_failing, model_stalled)."}})
@router.api_route("/ready", methods=["GET", "HEAD"], include_in_schema=False)
async def ready(state: ModelStateDep) -> ReadyResponse:
    predictor = state.predictor
    if predictor is None or not state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})
    check_model_health(state)
    return ReadyResponse(model=ModelRef(name=predictor.name, version=predictor.version))
