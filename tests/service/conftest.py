"""Fixtures for the service tests: a real trained artifact and real servers on real sockets.

* ``model_dir`` (session): the artifact trained on the bundled sample data by ``tests/conftest.py``.
* ``predictor`` (session): that artifact loaded in this process.
* ``server`` (session): ``python -m service`` in a subprocess on a free 127.0.0.1 port, waited on
  until ``/ready`` answers 200, terminated at the end. Its JSON log lines are in ``server.log_path``.
* ``ThreadServer`` (service_testlib): the app in uvicorn on a background thread (still a real
  socket), for tests that reach into the app (a slow loader, another configuration).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # service_testlib, whatever pytest's import mode

from service_testlib import (  # noqa: E402
    LIMITS,
    MEGABYTE_BODY_LIMIT,
    SERVER_ENV,
    Server,
    ThreadServer,
    start_server,
    stop_server,
)


@pytest.fixture(scope="session")
def model_dir(sample_model_dir: Path) -> Path:
    """The session's sample model (tests/conftest.py); tests that change an artifact copy it first."""
    return sample_model_dir


@pytest.fixture(scope="session")
def predictor(model_dir: Path) -> Any:
    from service.state import load_predictor

    return load_predictor(model_dir)


@pytest.fixture(scope="session")
def server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(model_dir, tmp_path_factory.mktemp("server") / "server.log", SERVER_ENV)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture(scope="module")
def megabyte_body_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``python -m service`` with the test limits but a 1 MiB body limit (the hardening issue's bodies), one a
    module."""
    env = {**SERVER_ENV, "SLOTFILL_MAX_BODY_BYTES": str(MEGABYTE_BODY_LIMIT)}
    running = start_server(model_dir, tmp_path_factory.mktemp("megabyte") / "server.log", env)
    try:
        yield running
    finally:
        stop_server(running)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with server.client() as http:
        yield http


@pytest.fixture(scope="module")
def direct_url(predictor: Any) -> Iterator[str]:
    """The session's model served with batching off (each request runs the model itself)."""
    from service.app import create_app
    from service.settings import Settings

    with ThreadServer(create_app(Settings(batching=False, **LIMITS), predictor=predictor)) as base_url:
        yield base_url


@pytest.fixture(params=["batched", "direct"])
def http(request: pytest.FixtureRequest, client: httpx.Client, direct_url: str) -> Iterator[httpx.Client]:
    """A test that asks for ``http`` runs twice: against the session server (micro-batching on) and against
    the same model with batching off. (test_service_hostile.py has an ``http`` of its own.)"""
    if request.param == "batched":
        yield client
    else:
        with httpx.Client(base_url=direct_url, timeout=30) as direct:
            yield direct
