"""Durations as a person reads them, for the estimates of time left in the training and compare logs."""

from __future__ import annotations

import math


def format_duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: whole seconds below an hour, whole minutes from there."""
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"not a duration: {seconds!r}")
    total = round(seconds)
    if total < 60:
        return f"{total}s"
    if total < 3600:
        return f"{total // 60}m{total % 60:02d}s"
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def time_left(elapsed: list[float], remaining: int) -> float:
    """The time ``remaining`` more steps take at the mean duration of the ``elapsed`` ones."""
    if not elapsed:
        raise ValueError("no finished step to estimate from")
    return sum(elapsed) / len(elapsed) * max(0, remaining)
