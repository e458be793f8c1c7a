"""Errors that are shown to users as one clear line, never as a traceback."""

from __future__ import annotations

from pathlib import Path


class SlotfillError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits with status 2."""


class DataError(SlotfillError):
    """Invalid training or evaluation data; names the file and line."""

    def __init__(self, message: str, path: str | Path | None = None, line: int | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.line = line
        where = ""
        if self.path is not None:
            where = f"{self.path}:{line}: " if line is not None else f"{self.path}: "
        super().__init__(f"{where}{message}")


class ConfigError(SlotfillError):
    """An invalid configuration value; names the key."""


class ArtifactError(SlotfillError):
    """A model artifact that is missing, corrupt, tampered with or unsafe."""
