"""The application factory.

``create_app(settings)`` builds the app without touching the model; the model is loaded,
verified and warmed up in the lifespan (in a worker thread), so importing this module or
building an app is cheap and side-effect free. ``create_app_from_env`` is the uvicorn factory
(``uvicorn --factory service.app:create_app_from_env``) used by ``serve()``, so every worker
process builds its own app from the same environment.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Mount, Route

from slotfill import __version__
from slotfill.errors import ConfigError

from . import gc_tuning
from .batching import MicroBatcher, model_runner
from .docs import install_docs
from .errors import install_error_handlers
from .logs import configure_logging
from .memory import limit_malloc_arenas
from .metrics import Metrics
from .middleware import BodyLimitMiddleware, RequestContextMiddleware
from .routers import admin, health, metrics, model, tag, v2
from .routers import demo
from .settings import Settings, load_settings
from .state import Loader, ModelState, ModelWatch, PredictorLike, settings_loader

logger = logging.getLogger("slotfill.service")


def create_app(settings: Settings | None = None, *, predictor: PredictorLike | None = None,
               loader: Loader | None = None) -> FastAPI:
    """Build the app.

    ``predictor`` serves an already-loaded model (embedding, tests); otherwise the lifespan
    loads ``settings.model_dir`` with ``loader`` (default: verify + load + warm up the artifact).
    """
    settings = settings if settings is not None else load_settings()
    state = ModelState(model_dir=settings.model_dir, loader=loader or settings_loader(settings),
                       watch=ModelWatch(settings.health_failures, settings.health_stall_s))
    app_metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if predictor is not None:
            loaded = predictor
        elif state.model_dir is not None:
            # Off the event loop: loading verifies hashes and reads weights.
            loaded = await anyio.to_thread.run_sync(state.loader, state.model_dir)
        else:
            raise ConfigError("no model to serve: set SLOTFILL_MODEL_DIR or pass --model")
        app.state.reload_lock = anyio.Lock()
        if settings.batching:
            # Created here, on the serving event loop; it outlives reloads (batches are keyed by model).
            state.batcher = make_batcher(settings, app_metrics, state.watch)
        state.swap(loaded, state.model_dir)
        app_metrics.set_model(loaded.name, loaded.version, loaded.digest)
        logger.info("ready", extra={"model": loaded.name, "version": loaded.version,
                                    "backend": getattr(loaded, "backend", None), "batching": settings.batching,
                                    "batch_max_size": settings.batch_max_size,
                                    "batch_max_wait_ms": settings.batch_max_wait_ms})
        del loaded  # this frame lives as long as the app: it must not keep the first model alive past a reload
        if app.state.gc_freeze:
            gc_tuning.freeze("startup")
        try:
            yield
        finally:
            state.ready = False
            if state.batcher is not None:
                await state.batcher.aclose()  # runs what is queued, waits for running batches
            await gc_tuning.cancel_refreeze(app.state)

    app = FastAPI(
        title="slotfill",
        version=__version__,
        summary="Slot filling (and intent detection) for dialogue systems.",
        lifespan=lifespan,
        docs_url=None,  # service/docs.py serves /docs from the package's own files
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.model = state
    app.state.metrics = app_metrics
    app.state.gc_freeze = False  # process-wide: create_app_from_env (a serving process) turns it on

    install_error_handlers(app)
    routers = (tag.router, model.router, health.router, admin.router, metrics.router,
               v2.router)  # the Open Inference Protocol (KServe V2) beside /v1
    for router in routers:
        app.include_router(router)
    if settings.demo:
        app.include_router(demo.router)  # GET /demo; off, the path is a plain 404
    install_docs(app)
    # Every route's template, for the metrics of requests that routing did not label (answered before
    # routing, e.g. a 413, or by a plain Starlette route such as /openapi.json or the docs assets mount).
    route_patterns = [(route.path_regex, route.path) for route in app.routes if isinstance(route, (Route, Mount))]

    # add_middleware prepends: the last one added is the outermost.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes, metrics=app_metrics)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Content-Type", "Authorization", "X-Request-ID"],
                           expose_headers=["X-Request-ID"], max_age=600)
    app.add_middleware(RequestContextMiddleware, metrics=app_metrics, route_patterns=route_patterns)
    return app


def make_batcher(settings: Settings, app_metrics: Metrics, watch: ModelWatch) -> MicroBatcher:
    """The micro-batcher for ``/v1/tag`` and ``/v1/tag/batch`` items (``service/batching.py``); its batches
    run in a worker thread, or on the event loop with ``model_thread=false``, and ``watch`` hears how each ended."""
    micro_sizes = app_metrics.batch_size.labels(kind="micro")

    def observe(size: int, waited: float) -> None:
        micro_sizes.observe(size)
        app_metrics.batch_wait.observe(waited)

    return MicroBatcher(tag.respond, max_size=settings.batch_max_size, max_wait_s=settings.batch_max_wait_ms / 1000.0,
                        max_concurrency=settings.batch_max_concurrency or None, on_batch=observe,
                        idle_start=settings.batch_idle_start,
                        run_in_thread=model_runner(settings.model_thread),
                        on_done=functools.partial(watch.finished, None))


def configure_process(settings: Settings) -> None:
    """Process-wide setup for a serving process (not done by ``create_app``: tests build many apps)."""
    if not logging.getLogger("slotfill").handlers:  # run by plain `uvicorn --factory`, not serve()
        configure_logging(settings.log_format, settings.log_level)
    limit_malloc_arenas()  # service/memory.py: flat RSS under sustained load
    # Backend threads are set by the loader (service/state.py), once it knows which backend runs:
    # importing torch here would defeat the torch-free onnx backend.


def create_app_from_env() -> FastAPI:
    """Uvicorn factory (one call per worker process): settings from ``SLOTFILL_*`` and ``SLOTFILL_SETTINGS_FILE``."""
    settings = load_settings()
    configure_process(settings)
    app = create_app(settings)
    app.state.gc_freeze = True  # service/gc_tuning.py: keep full collections off the loaded model
    return app

