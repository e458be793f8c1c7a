"""The served model: what the service needs from a predictor, and how it is loaded and swapped.

The service types against :class:`PredictorLike` (structural) rather than importing
``slotfill.inference.predictor`` at import time, so importing ``service`` does not import torch and
tests can hand ``create_app`` any object with this shape.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from slotfill.errors import ArtifactError, SlotfillError
from slotfill.inference.predictions import Prediction

from .batching import MicroBatcher

logger = logging.getLogger("slotfill.service")


@runtime_checkable
class PredictorLike(Protocol):
    name: str
    version: str
    created: str
    labels: list[str]
    intents: list[str] | None
    metrics: dict
    digest: str

    @property
    def config(self) -> Any: ...

    def tokenize(self, text: str) -> list[Any]: ...

    # ``intent_top_k`` is passed only when a request asks for ``intent_ranking``, ``min_span_confidence`` (one
    # floor or None per input) only when one has a floor (its own or the server's), ``alternatives`` only when one
    # asks for it (``routers/tag.py``).
    def predict_texts(self, texts: Sequence[str], *, intent_top_k: int = 0,
                      min_span_confidence: Sequence[float | None] | None = None,
                      alternatives: int = 0) -> list[Prediction]: ...

    def predict_tokens(self, tokens: Sequence[Sequence[str]], *, intent_top_k: int = 0,
                       min_span_confidence: Sequence[float | None] | None = None,
                       alternatives: int = 0) -> list[Prediction]: ...

    def warmup(self) -> None: ...


Loader = Callable[[Path], PredictorLike]


def load_predictor(model_dir: Path, backend: str = "auto", onnx_threads: int = 1,
                   torch_threads: int = 0) -> PredictorLike:
    """Load and verify an artifact (``Predictor.load`` checks the sha256 manifest) and warm it up.

    With the onnx backend torch is never imported. ``torch_threads`` (> 0) sets torch's
    process-wide intra-op threads when the torch backend is used. Blocking: call it in a worker thread.
    """
    from slotfill.inference.predictor import Predictor

    started = time.perf_counter()
    predictor = Predictor.load(model_dir, backend=backend, threads=onnx_threads)
    if predictor.backend == "torch" and torch_threads:
        # Measured on 2 shared cores: one intra-op thread gave 2.2 ms median per /v1/tag against
        # 5.4 ms with torch's default of 2 (and 24 vs 29 ms per 64-item batch); concurrency comes
        # from the request threadpool instead, without oversubscribing the cores.
        import torch

        torch.set_num_threads(torch_threads)
    _warm_up(predictor, model_dir)
    logger.info("model loaded", extra={"model_dir": str(model_dir), "model": predictor.name,
                                       "version": predictor.version, "digest": predictor.digest,
                                       "backend": predictor.backend,
                                       "load_ms": round((time.perf_counter() - started) * 1000, 1)})
    return predictor


def _warm_up(predictor: PredictorLike, model_dir: Path) -> None:
    """Tag a sentence before the model is offered: a model that loads but cannot answer (a graph whose
    outputs do not fit its labels) is refused here, so neither a start nor a reload puts it in service."""
    try:
        predictor.warmup()
    except SlotfillError:
        raise
    except Exception as exc:  # whatever the backend raises, the model is unfit to serve; say why in one line
        raise ArtifactError(f"{model_dir}: the model fails on a warm-up sentence ({type(exc).__name__}: "
                            f"{exc})") from None


def settings_loader(settings: Any) -> Loader:
    """:func:`load_predictor` with the backend and thread settings of ``settings``."""
    return functools.partial(load_predictor, backend=settings.backend, onnx_threads=settings.onnx_threads,
                             torch_threads=settings.torch_threads)


def config_dict(predictor: PredictorLike) -> dict[str, Any]:
    config = predictor.config
    if hasattr(config, "to_dict"):
        config = config.to_dict()
    return dict(config or {})


@dataclass
class ModelState:
    """Mutable holder in ``app.state.model``. ``predictor`` is replaced by a single assignment,
    so a request that already fetched the old predictor finishes with it.

    ``batcher`` (``None`` with batching off) is created in the lifespan and outlives reloads: each
    micro-batch is keyed by the predictor its requests fetched, and :meth:`swap` closes the
    batch pending for the old model (it runs on the old model) in the same event-loop step as
    the assignment.
    """

    model_dir: Path | None = None
    predictor: PredictorLike | None = None
    ready: bool = False
    loaded_at: float | None = None
    loader: Loader = load_predictor
    batcher: MicroBatcher | None = None

    def swap(self, predictor: PredictorLike, model_dir: Path | None) -> PredictorLike | None:
        previous = self.predictor
        self.predictor = predictor
        self.model_dir = model_dir
        self.loaded_at = time.time()
        self.ready = True
        if self.batcher is not None and previous is not None and previous is not predictor:
            self.batcher.model_changed()
        return previous
