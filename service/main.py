"""Run the service with uvicorn: ``serve()`` (used by ``slotfill serve``) and ``python -m service``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slotfill.errors import SlotfillError

from .logs import logging_config
from .settings import ENV_PREFIX, Settings, load_settings

FACTORY = "service.app:create_app_from_env"


def _env_value(value: Any) -> str:
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, (list, tuple)):
        import json

        return json.dumps(list(value))
    return str(value)


def serve(model_dir: str | Path | None = None, host: str | None = None, port: int | None = None,
          workers: int | None = None, *, check_model: bool = True, **settings_overrides: Any) -> None:
    """Serve ``model_dir`` until interrupted.

    Arguments left as ``None`` come from ``SLOTFILL_*`` / the settings file / the defaults
    (127.0.0.1:8000, one worker). ``settings_overrides`` are any other :class:`Settings` fields
    (``max_chars=500``, ``log_format="text"``, ``admin_token="..."``).

    The resolved settings are exported as ``SLOTFILL_*`` variables so that every uvicorn worker
    (``workers > 1`` starts separate processes through the app factory) builds the same app.
    With ``check_model`` the artifact is verified here first, so a bad model fails at once
    with :class:`~slotfill.errors.ArtifactError` instead of inside each worker.
    """
    import uvicorn

    overrides = dict(settings_overrides)
    if model_dir is not None:
        overrides["model_dir"] = Path(model_dir).resolve()
    for key, value in (("host", host), ("port", port), ("workers", workers)):
        if value is not None:
            overrides[key] = value
    settings = load_settings(**overrides)
    if settings.model_dir is None:
        raise SlotfillError("no model to serve: pass --model DIR or set SLOTFILL_MODEL_DIR")
    for key, value in overrides.items():
        if value is not None:
            os.environ[f"{ENV_PREFIX}{key.upper()}"] = _env_value(getattr(settings, key))
    if check_model:
        from slotfill.predictor import Predictor

        Predictor.load(settings.model_dir)  # raises ArtifactError with the reason
    uvicorn.run(
        FACTORY,
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        log_config=logging_config(settings.log_format, settings.log_level),
        log_level=settings.log_level.lower(),
        access_log=False,  # our middleware logs one structured line per request
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=30,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve a slotfill model over HTTP.")
    parser.add_argument("--model", dest="model_dir", help="artifact directory (default: $SLOTFILL_MODEL_DIR)")
    parser.add_argument("--host", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    parser.add_argument("--log-format", choices=["json", "text"])
    parser.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    parser.add_argument("--settings-file", help="JSON or .env settings file (same as $SLOTFILL_SETTINGS_FILE)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.settings_file:
        os.environ["SLOTFILL_SETTINGS_FILE"] = args.settings_file
    try:
        serve(args.model_dir, args.host, args.port, args.workers, log_format=args.log_format,
              log_level=args.log_level)
    except SlotfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["serve", "main", "build_parser", "Settings"]
