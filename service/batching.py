"""Dynamic micro-batching: concurrent requests share one padded forward pass.

A :class:`MicroBatcher` lives in ``app.state.model.batcher`` (created in the lifespan, closed
on shutdown). Each request validates its items first (limits, characters: a bad item is a 422
for its own request and never reaches a batch), then ``await batcher.submit(predictor, items)``.

* When no batch is running or queued (the model is idle), a new batch starts at the next turn of
  the event loop, taking whatever arrived in the same step: waiting would only add latency.
  ``idle_start=False`` turns this off.
* Otherwise items collect in one pending batch. The first item starts a ``max_wait`` timer; the batch is
  closed when it holds ``max_size`` items or when the timer fires, whichever comes first, and
  starts at once (``run_batch(predictor, items)``, in a worker thread unless ``model_thread`` is
  false, see :func:`model_runner`) while the next batch collects. So no item waits longer than
  ``max_wait`` for its batch to start: a lone request is answered after ``max_wait`` plus the model
  time, never later.
* ``max_concurrency`` (default: no limit) caps the batches running at once. At the cap, a timer
  that fires does not close the pending batch: it keeps collecting (up to ``max_size``) and starts
  as soon as a running batch ends -- bigger batches under saturation, at the price of the
  ``max_wait`` bound holding only while a slot is free. Full batches queue in order.
* A batch never mixes models: it is keyed by the predictor its requests were validated with
  (the one current when they arrived). An item for another predictor closes the pending batch
  first, and a reload calls :meth:`MicroBatcher.model_changed` in the same event-loop step as the
  swap, so the batch formed under the old model is closed at once and runs on the old model.
* An exception in ``run_batch`` fails that batch's items only: each waiting request gets a
  :class:`MicroBatchError` (a JSON 500 ``internal_error``); other batches are unaffected.
* The items of one ``/v1/tag/batch`` request are queued one by one: they may share a forward
  pass with other requests' items, and more than ``max_size`` of them span several batches.
* A request that goes away (its task cancelled) leaves its items behind; a batch skips them.
* ``on_done`` (optional) hears how each batch ended (``None`` or the exception), and
  :meth:`MicroBatcher.busy_since` tells since when the oldest unfinished work has been going:
  ``/health`` reads both (``service/state.py``'s ``ModelWatch``).

All state is touched from the event loop only (no locks); ``run_batch`` runs in anyio's
worker threads, or on the event loop itself with ``model_thread=false``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import anyio.to_thread

logger = logging.getLogger("slotfill.service")

Item = TypeVar("Item")
Result = TypeVar("Result")

RunBatch = Callable[[Any, list[Item]], Sequence[Result]]
# (batch size, seconds the oldest item waited before the batch started)
OnBatch = Callable[[int, float], None]
# how a batch's model call ended: None, or what it raised
OnDone = Callable[[BaseException | None], None]


class OneShot:
    """``func(*args)`` for a worker thread, forgetting its arguments once run.

    An idle anyio worker thread keeps its last job's arguments alive; passing the predictor
    through this instead means a thread never keeps a model alive after a reload
    (``service/gc_tuning.py`` waits for the old one to be collected)."""

    __slots__ = ("func", "args")

    def __init__(self, func: Callable[..., Any], *args: Any) -> None:
        self.func: Callable[..., Any] | None = func
        self.args: tuple[Any, ...] = args

    def __call__(self) -> Any:
        func, args = self.func, self.args
        self.func, self.args = None, ()
        if func is None:
            raise RuntimeError("a OneShot job runs once")
        return func(*args)


async def run_inline(func: Callable[..., Any], *args: Any) -> Any:
    """``func(*args)`` on the event loop itself (``model_thread=false``): a ``run_in_thread`` that
    blocks the loop for the call instead of handing it to a worker thread."""
    return func(*args)


def model_runner(in_thread: bool) -> Callable[..., Awaitable[Any]]:
    """How model calls run (``Settings.model_thread``): in anyio's worker threads, or on the event loop.

    In bench/suite.py (BENCHMARKS.md, ATIS, 2 cores, 16 connections) a thread kept the float graph's
    throughput, which the event loop cost about a tenth, while the int8 graph did as well on the loop with a
    lower p99; with the compiled decoder, which releases the interpreter lock as onnxruntime does, the loop
    still served the int8 graph faster than a thread (bench/ab_http.sh, BENCHMARKS.md). A call on the event
    loop stalls every other connection for its batch; the predictor is pure, so concurrent calls from worker
    threads are safe.
    """
    return anyio.to_thread.run_sync if in_thread else run_inline


async def run_detached(func: Callable[..., Any], *args: Any,
                       run_in_thread: Callable[..., Awaitable[Any]] = anyio.to_thread.run_sync) -> Any:
    """``await run_in_thread(func, *args)`` without the thread holding on to ``args`` afterwards."""
    return await run_in_thread(OneShot(func, *args))


class MicroBatchError(RuntimeError):
    """The micro-batch this request's items were in failed (the cause is chained)."""


@dataclass(eq=False)
class _Entry(Generic[Item, Result]):
    item: Item
    future: asyncio.Future[Result]
    queued_at: float = field(default_factory=time.perf_counter)


class MicroBatcher(Generic[Item, Result]):
    """Groups items submitted concurrently into batches of at most ``max_size``, waiting at most
    ``max_wait_s`` after a batch's first item before running it with ``run_batch`` in a thread."""

    def __init__(self, run_batch: Callable[[Any, list[Item]], Sequence[Result]], *, max_size: int,
                 max_wait_s: float, max_concurrency: int | None = None, on_batch: OnBatch | None = None,
                 run_in_thread: Callable[..., Awaitable[Any]] = anyio.to_thread.run_sync,
                 idle_start: bool = True, on_done: OnDone | None = None) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        if max_wait_s < 0:
            raise ValueError("max_wait_s must not be negative")
        if max_concurrency is not None and max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1 (or None: no limit)")
        self.run_batch = run_batch
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.max_concurrency = max_concurrency
        self.on_batch = on_batch
        self.on_done = on_done
        self.idle_start = idle_start
        self._run_in_thread = run_in_thread
        self._pending: list[_Entry[Item, Result]] = []
        self._pending_predictor: Any = None
        self._timer: asyncio.Handle | None = None
        self._overdue = False  # the pending batch's timer fired while every slot was busy
        self._waiting: deque[tuple[Any, list[_Entry[Item, Result]]]] = deque()  # full batches, no free slot
        self._running: dict[asyncio.Task[None], float] = {}  # running batch -> when it started (perf_counter)
        self._closed = False

    # ------------------------------------------------------------------ public
    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def pending(self) -> int:
        """Items collected for the next batch."""
        return len(self._pending)

    @property
    def running(self) -> int:
        """Batches dispatched and not finished."""
        return len(self._running)

    def busy_since(self) -> float | None:
        """When (``time.perf_counter()``) the oldest unfinished work began: the start of the longest-running
        batch, or the arrival of the item that has waited longest for one; ``None`` when idle."""
        times = [min(self._running.values())] if self._running else []
        if self._waiting:
            times.append(self._waiting[0][1][0].queued_at)
        if self._pending:
            times.append(self._pending[0].queued_at)
        return min(times, default=None)

    async def submit(self, predictor: Any, items: Sequence[Item]) -> list[Result]:
        """Queue ``items`` (validated already) for ``predictor``; their results, in order.

        Raises :class:`MicroBatchError` if a batch holding any of them failed.
        """
        if not items:
            return []
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Result]] = []
        for item in items:
            if self._pending and self._pending_predictor is not predictor:
                self._close_pending()  # a batch never mixes models
            entry: _Entry[Item, Result] = _Entry(item, loop.create_future())
            futures.append(entry.future)
            self._pending.append(entry)
            self._pending_predictor = predictor
            if len(self._pending) >= self.max_size:
                self._close_pending()
            elif len(self._pending) == 1:
                if self.idle_start and not self._running and not self._waiting:
                    # The model is idle: waiting could only add latency. Requests read in the same
                    # event-loop step still join, since this runs after the callbacks already queued.
                    self._timer = loop.call_soon(self._on_timer)
                else:
                    self._timer = loop.call_later(self.max_wait_s, self._on_timer)
        if self._closed:
            self._close_pending()  # shutting down: nothing else will join, run now
        if len(futures) == 1:  # /v1/tag: awaiting the future itself costs less than asyncio.wait
            try:
                return [await futures[0]]
            except asyncio.CancelledError:
                futures[0].cancel()  # the batch skips it
                raise
            except Exception as exc:
                raise MicroBatchError(f"micro-batch failed: {type(exc).__name__}") from exc
        try:
            await asyncio.wait(futures)
        except asyncio.CancelledError:
            for future in futures:  # the batch skips (or ignores) items nobody waits for
                future.cancel()
            raise
        failure: BaseException | None = None
        for future in futures:
            error = future.exception()  # retrieve every one (no "exception never retrieved" noise)
            if error is not None and failure is None:
                failure = error
        if failure is not None:
            raise MicroBatchError(f"micro-batch failed: {type(failure).__name__}") from failure
        return [future.result() for future in futures]

    def model_changed(self) -> None:
        """Call right after swapping the served model: the pending batch (formed under the old one)
        is closed now instead of waiting for its timer or for more items."""
        self._close_pending()

    def flush(self) -> None:
        """Close the pending batch now (it starts as soon as a slot is free)."""
        self._close_pending()

    async def aclose(self) -> None:
        """Run what is queued and wait for every batch; later submits run at once."""
        self._closed = True
        self._close_pending()
        while self._running or self._waiting:
            if self._running:
                await asyncio.wait(list(self._running))
            else:  # pragma: no cover - a finished batch always starts the next waiting one
                self._start_next()

    # ------------------------------------------------------------------ internals
    def _has_slot(self) -> bool:
        return self.max_concurrency is None or len(self._running) < self.max_concurrency

    def _on_timer(self) -> None:
        self._timer = None
        if self._has_slot():
            self._close_pending()
        else:
            self._overdue = True  # every slot is busy: keep collecting; it starts when a slot frees

    def _close_pending(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._overdue = False
        entries, predictor = self._pending, self._pending_predictor
        self._pending, self._pending_predictor = [], None
        if entries:
            self._waiting.append((predictor, entries))
        self._start_next()

    def _start_next(self) -> None:
        while self._waiting and self._has_slot():
            predictor, entries = self._waiting.popleft()
            entries = [entry for entry in entries if not entry.future.done()]  # requests cancelled meanwhile
            if not entries:
                continue
            task = asyncio.get_running_loop().create_task(self._run(predictor, entries))
            self._running[task] = time.perf_counter()
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.pop(task, None)
        self._start_next()
        if self._pending and (self._overdue or self._closed) and self._has_slot():
            self._close_pending()  # it collected while the model was busy; its wait is over

    def _done(self, error: BaseException | None) -> None:
        if self.on_done is not None:
            try:
                self.on_done(error)
            except Exception:  # like on_batch: never fails a batch
                logger.exception("micro-batch done callback failed")

    async def _run(self, predictor: Any, entries: list[_Entry[Item, Result]]) -> None:
        if self.on_batch is not None:
            try:
                self.on_batch(len(entries), time.perf_counter() - entries[0].queued_at)
            except Exception:  # metrics must never fail a batch
                logger.exception("micro-batch metrics callback failed")
        try:
            results = await run_detached(self.run_batch, predictor, [entry.item for entry in entries],
                                         run_in_thread=self._run_in_thread)
            if len(results) != len(entries):
                raise RuntimeError(f"run_batch returned {len(results)} results for {len(entries)} items")
        except BaseException as exc:  # noqa: BLE001 - handed to every waiting request
            if not isinstance(exc, asyncio.CancelledError):
                logger.error("micro-batch failed", extra={"items": len(entries), "error": repr(exc)[:300]})
                self._done(exc)
            for entry in entries:
                if not entry.future.done():
                    entry.future.set_exception(exc if isinstance(exc, Exception) else MicroBatchError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        self._done(None)
        for entry, result in zip(entries, results):
            if not entry.future.done():
                entry.future.set_result(result)
