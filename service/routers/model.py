"""``GET /v1/model``: what is being served."""

from __future__ import annotations

from fastapi import APIRouter

from ..dependencies import PredictorDep, SettingsDep
from ..schemas import Defaults, ErrorResponse, Limits, ModelInfo
from ..state import config_dict

router = APIRouter(prefix="/v1", tags=["model"])


@router.get("/model", response_model=ModelInfo, summary="The served model's identity, labels, config and metrics",
            responses={503: {"model": ErrorResponse, "description": "Not ready (not_ready)."}})
async def model_info(predictor: PredictorDep, settings: SettingsDep) -> ModelInfo:
    return ModelInfo(
        name=predictor.name, version=predictor.version, created=predictor.created, labels=list(predictor.labels),
        intents=list(predictor.intents) if predictor.intents is not None else None,
        config=config_dict(predictor), metrics=dict(predictor.metrics or {}), digest=predictor.digest,
        backend=getattr(predictor, "backend", None),
        decoder=getattr(predictor, "decoder", None), quantization=getattr(predictor, "quantization", None),
        limits=Limits(max_chars=settings.max_chars, max_tokens=settings.max_tokens,
                      max_batch_items=settings.max_batch_items, max_body_bytes=settings.max_body_bytes),
        defaults=Defaults(min_confidence=settings.min_confidence),
    )
