"""``POST /v1/admin/reload``: load another (or the same, rewritten) artifact without a restart.

Off unless ``SLOTFILL_ADMIN_TOKEN`` is set (403 ``admin_disabled``); then it needs
``Authorization: Bearer <token>`` (401 otherwise, compared in constant time).

The new artifact is verified, loaded and warmed up in a worker thread while the old model
keeps answering; then ``app.state.model.predictor`` is replaced in one assignment, so requests
already running finish on the old object. A reload that fails leaves the old model serving
and answers 422 ``artifact_invalid`` with the loader's message; a second reload while one runs
gets 409 ``reload_in_progress``. With ``workers > 1`` a reload would only reach the worker that
received it, so it is refused (409 ``reload_unsupported``): restart the service instead.
"""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Annotated

import anyio
import anyio.to_thread
from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from slotfill.errors import SlotfillError

from .. import gc_tuning
from ..dependencies import MetricsDep, ModelStateDep, SettingsDep
from ..errors import APIError
from ..json_route import JSONBodyRoute
from ..schemas import ErrorResponse, ModelSummary, ReloadRequest, ReloadResponse

logger = logging.getLogger("slotfill.service")

bearer = HTTPBearer(auto_error=False, scheme_name="AdminToken",
                    description="The value of SLOTFILL_ADMIN_TOKEN.")


def require_admin(settings: SettingsDep,
                  credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
    if settings.admin_token is None:
        raise APIError(403, "admin_disabled", "the admin API is disabled: set SLOTFILL_ADMIN_TOKEN to enable it")
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise APIError(401, "unauthorized", "missing bearer token (Authorization: Bearer <token>)", headers=challenge)
    expected = settings.admin_token.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(credentials.credentials.encode("utf-8"), expected):
        raise APIError(401, "unauthorized", "invalid bearer token", headers=challenge)


router = APIRouter(prefix="/v1/admin", tags=["admin"], route_class=JSONBodyRoute,
                   dependencies=[Depends(require_admin)])

RELOAD_RESPONSES: dict[int | str, dict] = {
    400: {"model": ErrorResponse, "description": "Body is not UTF-8 JSON."},
    401: {"model": ErrorResponse, "description": "Missing or wrong bearer token (unauthorized)."},
    403: {"model": ErrorResponse, "description": "No admin token configured (admin_disabled)."},
    409: {"model": ErrorResponse, "description": "A reload is running, or workers > 1."},
    413: {"model": ErrorResponse, "description": "Body too large."},
    415: {"model": ErrorResponse, "description": "Body is not application/json."},
    422: {"model": ErrorResponse, "description": "Bad body, or the artifact failed verification "
                                                 "(artifact_invalid; the old model keeps serving)."},
}


def _summary(predictor) -> ModelSummary:
    return ModelSummary(name=predictor.name, version=predictor.version, digest=predictor.digest)


@router.post("/reload", response_model=ReloadResponse, responses=RELOAD_RESPONSES,
             summary="Load a model from disk and swap it in atomically")
async def reload(request: Request, state: ModelStateDep, settings: SettingsDep, metrics: MetricsDep,
                 body: ReloadRequest | None = None) -> ReloadResponse:
    if settings.workers > 1:
        raise APIError(409, "reload_unsupported",
                       f"reload reaches only one of {settings.workers} worker processes; restart the service instead")
    lock: anyio.Lock | None = getattr(request.app.state, "reload_lock", None)
    if lock is None:  # no lifespan ran (app used without starting it)
        lock = request.app.state.reload_lock = anyio.Lock()
    if lock.locked():
        raise APIError(409, "reload_in_progress", "another reload is running")
    async with lock:
        target = Path(body.model_dir) if body is not None and body.model_dir else state.model_dir
        if target is None:
            raise APIError(422, "artifact_invalid", "no model_dir given and none configured", "model_dir")
        previous = state.predictor
        try:
            predictor = await anyio.to_thread.run_sync(state.loader, target)
        except (SlotfillError, OSError, ValueError) as exc:  # ValueError: e.g. a NUL in the path
            metrics.reloads.labels(outcome="failed").inc()
            logger.warning("reload failed; still serving the previous model",
                           extra={"model_dir": str(target), "error": str(exc)})
            raise APIError(422, "artifact_invalid", f"reload failed, still serving the previous model: {exc}",
                           "model_dir") from None
        state.swap(predictor, target)  # also closes the micro-batch pending for the old model
        if getattr(request.app.state, "gc_freeze", False):
            gc_tuning.schedule_refreeze(request.app.state, previous)
        metrics.set_model(predictor.name, predictor.version, predictor.digest)
        metrics.reloads.labels(outcome="ok").inc()
        logger.info("model reloaded", extra={"model_dir": str(target), "model": predictor.name,
                                             "version": predictor.version, "digest": predictor.digest})
    return ReloadResponse(previous=_summary(previous) if previous is not None else None,
                          current=_summary(predictor))
