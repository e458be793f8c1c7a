"""Run the service with uvicorn: ``serve()``, and the options of ``python -m service`` and ``slotfill serve``.

Both commands take the options of :func:`add_serve_arguments` and start through
:func:`serve_from_args`. Importing this module is cheap (the settings, pydantic and uvicorn are
imported by ``serve()``), so the ``slotfill`` command line can build its parser from it.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from slotfill.errors import SlotfillError
from slotfill.inference.engines import BACKENDS

FACTORY = "service.app:create_app_from_env"
PROTOCOL = "service.protocol:ServiceHttpProtocol"  # an import string: each worker process imports it
# Longest uvicorn waits, after SIGTERM, for the requests in flight before it cancels them. Under
# Kubernetes' default grace period (30 s, then SIGKILL), so the lifespan shutdown still runs.
GRACEFUL_SHUTDOWN_S = 25


class _Terminated(BaseException):
    """SIGTERM outside uvicorn's own handlers (before it serves, or re-raised after its shutdown)."""


def _terminated(signum: int, frame: object) -> None:
    raise _Terminated


@contextlib.contextmanager
def _sigterm_exits_cleanly() -> Iterator[None]:
    """A SIGTERM ends :func:`serve` normally (``python -m service`` exits 0).

    On SIGTERM uvicorn shuts down gracefully (stops accepting, finishes the requests in flight,
    runs the lifespan shutdown, which drains the micro-batcher), then restores the handler it
    found and raises the signal again so the process dies of it (exit status -15 / 143, which
    supervisors read as a crash or a kill). The handler installed here turns that re-raise, and a
    SIGTERM that lands before uvicorn installs its own handlers, into a normal return instead.
    """
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        yield
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


def _env_value(value: Any) -> str:
    if hasattr(value, "get_secret_value"):
        return value.get_secret_value()
    if isinstance(value, (list, tuple)):
        import json

        return json.dumps(list(value))
    return str(value)


def serve(model_dir: str | Path | None = None, host: str | None = None, port: int | None = None,
          workers: int | None = None, *, check_model: bool = True, factory: str = FACTORY,
          **settings_overrides: Any) -> None:
    """Serve ``model_dir`` until interrupted.

    Arguments left as ``None`` come from ``SLOTFILL_*`` / the settings file / the defaults
    (127.0.0.1:8000, one worker). ``settings_overrides`` are any other :class:`~service.settings.Settings` fields
    (``max_chars=500``, ``log_format="text"``, ``admin_token="..."``).

    The resolved settings are exported as ``SLOTFILL_*`` variables so that every uvicorn worker
    (``workers > 1`` starts separate processes through the app factory) builds the same app.
    With ``check_model`` the artifact is verified here first, so a bad model fails at once
    with :class:`~slotfill.errors.ArtifactError` instead of inside each worker.

    SIGTERM (``docker stop``, Kubernetes) or Ctrl-C drains: no new connections, the requests in
    flight are answered (up to ``GRACEFUL_SHUTDOWN_S``), the micro-batcher runs what it holds,
    then ``serve`` returns (exit status 0 for ``python -m service``).

    ``factory`` is the uvicorn app factory (``module:function``, importable in every worker process);
    ``bench/replay_app.py`` serves the same stack through its own.
    """
    import uvicorn

    from .logs import logging_config
    from .settings import ENV_PREFIX, load_settings

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
        # Verify the manifest and that the backend can run here (cheap, and imports no torch);
        # each worker loads the network itself.
        from slotfill.artifact.artifact import Artifact
        from slotfill.inference.engines import resolve_backend

        resolve_backend(Artifact.from_pretrained(settings.model_dir), settings.backend)
    from slotfill.decoding import kernels

    kernels.available()  # a bad SLOTFILL_DECODER fails here, in one line, not in each worker's start-up
    with _sigterm_exits_cleanly():
        uvicorn.run(
            factory,
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.workers,
            log_config=logging_config(settings.log_format, settings.log_level),
            log_level=settings.log_level.lower(),
            access_log=False,  # our middleware logs one structured line per request
            server_header=False,
            proxy_headers=False,
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            # uvicorn's httptools protocol with header limits, read timeouts and the connection cap of the
            # settings (service/protocol.py); not uvicorn's limit_concurrency, whose 503 is plain text and
            # counts idle connections alike with busy ones.
            http=PROTOCOL,
            timeout_keep_alive=settings.keep_alive_s,
        )


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """The serve options. Each left out is taken from ``SLOTFILL_*`` / the settings file / the defaults."""
    parser.add_argument("--model", dest="model_dir", type=Path, metavar="DIR",
                        help="artifact directory (default: $SLOTFILL_MODEL_DIR)")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default 8000)")
    parser.add_argument("--workers", type=int, help="worker processes (default 1)")
    parser.add_argument("--backend", choices=BACKENDS,
                        help="inference backend (default auto: onnx when the artifact has a graph)")
    parser.add_argument("--log-format", choices=("json", "text"), help="log lines as JSON or text (default json)")
    parser.add_argument("--log-level", choices=("critical", "error", "warning", "info", "debug"),
                        help="least severe level logged (default info)")
    parser.add_argument("--settings-file", type=Path, metavar="FILE",
                        help="JSON or .env settings file (as $SLOTFILL_SETTINGS_FILE; flags and SLOTFILL_* "
                             "variables win over it)")


def serve_from_args(args: argparse.Namespace) -> None:
    """:func:`serve` as the options of :func:`add_serve_arguments` say.

    ``--settings-file`` is exported as ``SLOTFILL_SETTINGS_FILE`` (resolved to an absolute path), so
    that every worker process reads the same file.
    """
    if args.settings_file is not None:
        from .settings import SETTINGS_FILE_ENV

        os.environ[SETTINGS_FILE_ENV] = str(args.settings_file.resolve())
    serve(args.model_dir, args.host, args.port, args.workers, backend=args.backend, log_format=args.log_format,
          log_level=args.log_level)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description="Serve a slotfill model over HTTP.")
    add_serve_arguments(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        serve_from_args(args)
    except SlotfillError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


__all__ = ["serve", "serve_from_args", "add_serve_arguments", "main", "build_parser"]
