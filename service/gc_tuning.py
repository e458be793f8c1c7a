"""Keep Python's cycle collector off the loaded model (serving processes only).

A loaded model, torch and the web stack are a few hundred thousand long-lived objects. Every
full (oldest-generation) collection walks all of them -- about 100 ms with the GIL held, during
which no request makes progress -- and request churn promotes enough objects to trigger one
every few seconds under load: that was the p99 latency (10x the p50) in the load benchmark.
``gc.freeze()`` once the model is loaded and warmed moves them to the permanent generation,
which collections skip; request garbage is still collected as before.

A reload unfreezes everything so the previous model (which has reference cycles) can be
collected, then, once it is gone, collects and freezes again (:func:`schedule_refreeze`).

Only ``create_app_from_env`` (a serving process) turns this on: ``create_app`` alone leaves the
process's collector alone, since tests build many apps in one process.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import weakref
from typing import Any

logger = logging.getLogger("slotfill.service")

REFREEZE_DELAY_S = 1.0  # requests still running on the previous model finish within this, normally
REFREEZE_ATTEMPTS = 30


def freeze(reason: str) -> None:
    """Collect what is garbage now, then freeze every surviving object."""
    gc.collect()
    gc.freeze()
    logger.info("gc frozen", extra={"reason": reason, "objects": gc.get_freeze_count()})


async def refreeze_after_reload(previous: weakref.ref | None, delay_s: float = REFREEZE_DELAY_S,
                                attempts: int = REFREEZE_ATTEMPTS) -> None:
    """Wait until the previous model has been collected (requests in flight may still hold it),
    then freeze again. Gives up waiting after ``attempts`` and freezes anyway."""
    for _ in range(attempts):
        await asyncio.sleep(delay_s)
        gc.collect()
        if previous is None or previous() is None:
            break
    else:
        logger.warning("the previous model is still referenced; freezing anyway")
    freeze("reload")


def schedule_refreeze(app_state: Any, previous: Any) -> None:
    """After a reload: unfreeze now, refreeze in the background (one task per app; a newer reload wins)."""
    gc.unfreeze()
    try:
        ref: weakref.ref | None = weakref.ref(previous)
    except TypeError:  # an object without weak reference support
        ref = None
    running: asyncio.Task[None] | None = getattr(app_state, "gc_refreeze_task", None)
    if running is not None and not running.done():
        running.cancel()
    app_state.gc_refreeze_task = asyncio.get_running_loop().create_task(refreeze_after_reload(ref))


async def cancel_refreeze(app_state: Any) -> None:
    running: asyncio.Task[None] | None = getattr(app_state, "gc_refreeze_task", None)
    if running is not None and not running.done():
        running.cancel()
        try:
            await running
        except asyncio.CancelledError:
            pass
