"""Helpers for the service tests: building a model, running servers, checking error bodies."""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
ADMIN_TOKEN = "test-admin-token-0123456789"
# Small limits so the tests can cross them cheaply.
LIMITS = {"max_chars": 400, "max_tokens": 48, "max_batch_items": 16, "max_body_bytes": 65536}
SERVER_ENV = {
    "SLOTFILL_ADMIN_TOKEN": ADMIN_TOKEN,
    "SLOTFILL_LOG_FORMAT": "json",
    "SLOTFILL_LOG_LEVEL": "INFO",
    **{f"SLOTFILL_{key.upper()}": str(value) for key, value in LIMITS.items()},
}


# A tagger small enough to train in seconds through the CLI (tests/service/test_service_schemes.py,
# test_service_scripts.py).
TINY_TAGGER = ["hidden_size=48", "word_dim=32", "char_dim=16", "char_channels=24", "dropout=0.2", "patience=0",
               "threads=1", "lr=0.005"]


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    """``slotfill ARGS`` run as a user runs it; it must succeed."""
    result = subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, input=stdin, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLOTFILL_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


@dataclass
class Server:
    base_url: str
    process: subprocess.Popen
    log_path: Path
    model_dir: Path
    admin_token: str = ADMIN_TOKEN

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()

    def log_records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_lines() if line.startswith("{")]

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=30.0, **kwargs)


def start_server(model_dir: Path, log_path: Path, env: dict[str, str] | None = None,
                 args: list[str] | None = None, timeout: float = 90.0, open_files: int | None = None) -> Server:
    """``python -m service`` on a free port; returns once ``/ready`` answers 200. ``open_files``: the server
    process's limit on open files (``ulimit -n``)."""
    port = free_port()
    command = [sys.executable, "-m", "service", "--model", str(model_dir), "--host", "127.0.0.1",
               "--port", str(port), *(args or [])]

    def limit_open_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    with open(log_path, "wb") as log_file:  # the child keeps its own descriptor
        process = subprocess.Popen(command, cwd=REPO, env=clean_env(**(env or {})), stdout=log_file,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=limit_open_files if open_files else None)
    server = Server(f"http://127.0.0.1:{port}", process, log_path, model_dir)
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=2.0) as client:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if client.get(f"{server.base_url}/ready").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                stop_server(server)
                raise RuntimeError(f"server not ready after {timeout}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.1)


def stop_server(server: Server) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=20)
    return server.process.returncode


# The body limit of the servers that take the hardening issue's megabyte bodies (the default max_body_bytes).
MEGABYTE_BODY_LIMIT = 1024 * 1024


class ThreadServer:
    """``with ThreadServer(app) as base_url:`` -- uvicorn on a background thread, real socket."""

    def __init__(self, app: Any):
        import uvicorn

        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws="none", http="h11",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("thread server did not start")
            time.sleep(0.02)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        self.sock.close()


def assert_error(response: httpx.Response, status: int, code: str, field: str | None = None) -> dict[str, Any]:
    """The response is the JSON error shape with this status, code and field."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    assert set(body["error"]) == {"code", "message", "field"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["field"] == field, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"], body
    assert response.headers.get("x-request-id"), response.headers
    return body["error"]


CHECK_TEXT = "book a table for 4 at chez pierre tomorrow at 7pm"


def assert_answers_correctly(client: httpx.Client, predictor: Any, text: str = CHECK_TEXT) -> None:
    """The server is ready and tags ``text`` as the same model does in this process: labels, slots, intent."""
    ready = client.get("/ready")
    assert ready.status_code == 200, ready.text
    response = client.post("/v1/tag", json={"text": text})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = predictor.predict_texts([text])[0]
    assert expected.slots, f"{text!r} should have slots to compare"
    assert body["labels"] == expected.labels
    assert [(slot["slot"], slot["value"], slot["start"], slot["end"]) for slot in body["slots"]] == \
        [(slot.slot, slot.value, slot.start, slot.end) for slot in expected.slots]
    assert (body["intent"] and body["intent"]["name"]) == (expected.intent and expected.intent.name)
