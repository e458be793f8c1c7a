"""``GET /health`` (the process is alive) and ``GET /ready`` (a model is loaded and warmed up)."""

from __future__ import annotations

from fastapi import APIRouter

from ..dependencies import ModelStateDep
from ..errors import APIError
from ..schemas import ErrorResponse, HealthResponse, ModelRef, ReadyResponse

router = APIRouter(tags=["health"])


# HEAD too (some load balancers probe with it); left out of the schema to keep one operation per path. The
# unlisted route takes GET as well and comes first: a wrong method gets the 405 of the first route whose path
# matches, and its Allow header must name both methods.
@router.get("/health", response_model=HealthResponse, summary="Liveness: the process answers")
@router.api_route("/health", methods=["GET", "HEAD"], include_in_schema=False)
async def health() -> HealthResponse:
    return HealthResponse()


@router.get("/ready", response_model=ReadyResponse, summary="Readiness: 200 only once the model is loaded and warm",
            responses={503: {"model": ErrorResponse, "description": "Not ready (not_ready)."}})
@router.api_route("/ready", methods=["GET", "HEAD"], include_in_schema=False)
async def ready(state: ModelStateDep) -> ReadyResponse:
    predictor = state.predictor
    if predictor is None or not state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})
    return ReadyResponse(model=ModelRef(name=predictor.name, version=predictor.version))
