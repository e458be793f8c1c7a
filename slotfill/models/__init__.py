"""Slot tagger models: configuration, recurrent encoder, CRF and the tagger itself.

The torch modules are imported on first use, so that ``slotfill.models.config`` (and with it
everything the torch-free serving path needs) can be imported where torch is not installed.
"""

from importlib import import_module
from typing import Any

from slotfill.models.config import TaggerConfig

_LAZY = {
    "CRF": ".crf",
    "RecurrentEncoder": ".encoder",
    "SlotTagger": ".tagger",
    "TaggerOutput": ".tagger",
}

__all__ = ["CRF", "RecurrentEncoder", "SlotTagger", "TaggerConfig", "TaggerOutput"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
