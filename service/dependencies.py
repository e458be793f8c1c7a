"""Typed dependencies: declare ``predictor: PredictorDep`` in a path operation to get the model."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .errors import APIError
from .metrics import Metrics
from .settings import Settings
from .state import ModelState, PredictorLike


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_model_state(request: Request) -> ModelState:
    return request.app.state.model


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_predictor(request: Request) -> PredictorLike:
    """The model being served, fetched once per request: a reload that lands mid-request
    does not change the object this request uses."""
    state: ModelState = request.app.state.model
    predictor = state.predictor
    if predictor is None or not state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet", headers={"Retry-After": "1"})
    return predictor


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelStateDep = Annotated[ModelState, Depends(get_model_state)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
PredictorDep = Annotated[PredictorLike, Depends(get_predictor)]
