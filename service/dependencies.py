"""Typed dependencies: declare ``predictor: PredictorDep`` in a path operation to get the model.

They are ``async def`` on purpose: FastAPI runs a plain ``def`` dependency in the thread pool,
one thread hop per dependency per request, for what is an attribute read. The hot path
(``/v1/tag``, ``/v1/tag/batch``) uses :func:`tag_context` directly instead: FastAPI's dependency
resolution costs more per request than everything else those handlers do outside the model.
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from .errors import APIError
from .metrics import Metrics
from .settings import Settings
from .state import ModelState, PredictorLike


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_model_state(request: Request) -> ModelState:
    return request.app.state.model


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def current_predictor(state: ModelState) -> PredictorLike:
    """The model being served, or a 503 ``not_ready``."""
    predictor = state.predictor
    if predictor is None or not state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})
    return predictor


async def get_predictor(request: Request) -> PredictorLike:
    """The model being served, fetched once per request: a reload that lands mid-request
    does not change the object this request uses."""
    return current_predictor(request.app.state.model)


class TagContext(NamedTuple):
    predictor: PredictorLike  # fetched once: a reload mid-request does not change it
    settings: Settings
    metrics: Metrics
    state: ModelState  # its batcher (None: batching off, or no lifespan ran) and its watch


def tag_context(request: Request) -> TagContext:
    """Everything a tag request needs, read from the app state in one go (no dependency resolution)."""
    app_state = request.app.state
    state: ModelState = app_state.model
    return TagContext(current_predictor(state), app_state.settings, app_state.metrics, state)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelStateDep = Annotated[ModelState, Depends(get_model_state)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[PredictorLike, Depends(get_predictor)]
