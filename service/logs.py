"""Logging: one JSON object per line (or plain text), for our loggers and uvicorn's."""

from __future__ import annotations

import json
import logging
import logging.config
import time
from typing import Any

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is emitted.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName",
                                                                                 "color_message"}  # uvicorn's ANSI copy


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}


# (whole second, its text), swapped as one tuple (thread-safe): strftime once a second, not once a line.
_last_second: tuple[int, str] = (-1, "")


def _timestamp(record: logging.LogRecord) -> str:
    global _last_second
    whole = int(record.created)
    cached = _last_second
    if cached[0] != whole:
        cached = _last_second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{cached[1]}.{int(record.msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": _timestamp(record), "level": record.levelname, "logger": record.name,
                                 "message": record.getMessage()}
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=True, default=str)  # ASCII: safe for any stream and log shipper


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extras:
            line = f"{line} {extras}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def logging_config(log_format: str = "json", log_level: str = "INFO") -> dict[str, Any]:
    """A ``dictConfig`` for our loggers and uvicorn's (pass it to ``uvicorn.run(log_config=...)``)."""
    formatter = "service.logs.JsonFormatter" if log_format == "json" else "service.logs.TextFormatter"
    handler = {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"()": formatter}},
        "handlers": {"default": handler},
        "loggers": {
            "slotfill": {"handlers": ["default"], "level": log_level, "propagate": False},
            "uvicorn": {"handlers": ["default"], "level": log_level, "propagate": False},
            "uvicorn.error": {"level": log_level},
            # One line per request comes from our middleware; uvicorn's access log would duplicate it.
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def configure_logging(log_format: str = "json", log_level: str = "INFO") -> None:
    logging.config.dictConfig(logging_config(log_format, log_level))
