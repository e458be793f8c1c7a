"""slotfill: recurrent slot taggers for dialogue systems."""

__version__ = "0.1.0"
