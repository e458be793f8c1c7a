"""The served model: what the service needs from a predictor, and how it is loaded and swapped.

The service types against :class:`PredictorLike` (structural) rather than importing
``slotfill.inference.predictor`` at import time, so importing ``service`` does not import torch and
tests can hand ``create_app`` any object with this shape.
"""

from __future__ import annotations

import functools
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


class ModelWatch:
    """Tells when the served model needs what a restart (or a reload) gives it: a fresh load.

    Two signs, read by ``GET /health`` (503 with the code, ``routers/health.py``):

    * ``model_failing``: the last ``failure_limit`` model calls (micro-batches, or direct calls with
      batching off) all raised. Client input never gets there (it is refused before), so calls that keep
      failing mean a broken model: a session in a bad state, a file gone from under a memory map. One
      success resets the count, as does swapping in a model (start-up, reload).
    * ``model_stalled``: a model call has been running, or a request waiting for one, for more than
      ``stall_s`` seconds: a backend stuck in a deadlock, or a micro-batcher that stopped starting batches.

    A model still loading at start-up is neither: the server does not listen until it is ready, and
    ``/ready`` says "not loaded yet". A model that fails to load stops the process (the supervisor sees
    it exit). Everything here runs on the event loop (no locks).
    """

    def __init__(self, failure_limit: int = 5, stall_s: float = 60.0) -> None:
        self.failure_limit = failure_limit
        self.stall_s = stall_s
        self.failures = 0  # consecutive
        self.last_error: str | None = None
        self._calls: dict[int, float] = {}  # direct model calls running -> when they started
        self._ids = itertools.count()

    def started(self) -> int:
        """A direct model call starts; pass the token to :meth:`finished`."""
        token = next(self._ids)
        self._calls[token] = time.perf_counter()
        return token

    def finished(self, token: int | None, error: BaseException | None) -> None:
        """A model call ended (``token`` from :meth:`started`, None for a micro-batch): ``error`` is what it raised."""
        if token is not None:
            self._calls.pop(token, None)
        if error is None:
            self.failures = 0
        else:
            self.failures += 1
            self.last_error = f"{type(error).__name__}: {error}"[:200]

    def forget(self, token: int) -> None:
        """A direct call ended without telling anything about the model (a limit refused its items, or it was
        cancelled)."""
        self._calls.pop(token, None)

    def reset(self) -> None:
        self.failures = 0
        self.last_error = None

    def problem(self, batcher: MicroBatcher | None) -> tuple[str, str] | None:
        """``(code, message)`` when the model needs a restart, else None."""
        if self.failures >= self.failure_limit:
            return ("model_failing", f"the last {self.failures} model calls failed (the last with {self.last_error}); "
                                     "a restart or a reload loads the model again")
        times = list(self._calls.values())
        busy = batcher.busy_since() if batcher is not None else None
        if busy is not None:
            times.append(busy)
        if times:
            waited = time.perf_counter() - min(times)
            if waited > self.stall_s:
                return ("model_stalled", f"a model call has been running, or a request waiting for one, for "
                                         f"{waited:.0f} s (health_stall_s is {self.stall_s:g}); a restart loads the "
                                         "model again")
        return None


@dataclass
class ModelState:
    """Mutable holder in ``app.state.model``. ``predictor`` is replaced by a single assignment,
    so a request that already fetched the old predictor finishes with it.

    ``watch`` follows the model's calls for ``/health`` (:class:`ModelWatch`).

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
    watch: ModelWatch = field(default_factory=ModelWatch)

    def problem(self) -> tuple[str, str] | None:
        """``(code, message)`` when the served model needs a restart (:class:`ModelWatch`), else None."""
        return self.watch.problem(self.batcher)

    def swap(self, predictor: PredictorLike, model_dir: Path | None) -> PredictorLike | None:
        previous = self.predictor
        self.predictor = predictor
        self.model_dir = model_dir
        self.loaded_at = time.time()
        self.ready = True
        self.watch.reset()
        if self.batcher is not None and previous is not None and previous is not predictor:
            self.batcher.model_changed()
        return previous
