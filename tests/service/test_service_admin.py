"""``POST /v1/admin/reload``: auth, atomic swap, tampered artifacts, requests during a reload."""

from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from service_testlib import ThreadServer, assert_error
from test_service_api import metric_value

from service.app import create_app
from service.settings import Settings
from service.state import load_predictor
from tests.tampering import surrogate_in_the_card


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def tampered_copy(model_dir: Path, destination: Path) -> Path:
    shutil.copytree(model_dir, destination)
    weights = destination / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit in the middle of the tensor data
    weights.write_bytes(bytes(data))
    return destination


# ----------------------------------------------------------------------------- against the server process
def test_reload_requires_the_token(server, client: httpx.Client) -> None:
    response = client.post("/v1/admin/reload")
    assert_error(response, 401, "unauthorized")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_error(client.post("/v1/admin/reload", headers=auth("wrong")), 401, "unauthorized")
    assert_error(client.post("/v1/admin/reload", headers=auth(server.admin_token + "x")), 401, "unauthorized")
    assert_error(client.post("/v1/admin/reload", headers={"Authorization": server.admin_token}), 401,
                 "unauthorized")
    assert_error(client.post("/v1/admin/reload", headers={"Authorization": f"Basic {server.admin_token}"}), 401,
                 "unauthorized")
    assert_error(client.get("/v1/admin/reload", headers=auth(server.admin_token)), 405, "method_not_allowed")


def test_reload_same_model(server, client: httpx.Client) -> None:
    before = client.get("/v1/model").json()
    response = client.post("/v1/admin/reload", headers=auth(server.admin_token))
    assert response.status_code == 200, response.text
    summary = {key: before[key] for key in ("name", "version", "digest")}
    assert response.json() == {"previous": summary, "current": summary}
    assert client.get("/v1/model").json() == before


def test_reload_from_another_directory(server, client: httpx.Client, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(server.model_dir, copy)
    response = client.post("/v1/admin/reload", headers=auth(server.admin_token), json={"model_dir": str(copy)})
    assert response.status_code == 200, response.text
    assert response.json()["current"]["digest"] == client.get("/v1/model").json()["digest"]
    # Back to the original so the other tests see the fixture's directory.
    back = client.post("/v1/admin/reload", headers=auth(server.admin_token),
                       json={"model_dir": str(server.model_dir)})
    assert back.status_code == 200, back.text


def test_reload_tampered_artifact_keeps_the_old_model(server, client: httpx.Client, tmp_path: Path) -> None:
    before = client.get("/v1/model").json()
    tagged_before = client.post("/v1/tag", json={"text": "book a table at chez pierre"}).json()
    bad = tampered_copy(server.model_dir, tmp_path / "tampered")
    response = client.post("/v1/admin/reload", headers=auth(server.admin_token), json={"model_dir": str(bad)})
    error = assert_error(response, 422, "artifact_invalid", "model_dir")
    assert "model.safetensors" in error["message"], error
    assert "previous model" in error["message"], error
    # Still serving, and the same model.
    assert client.get("/ready").status_code == 200
    assert client.get("/v1/model").json() == before
    assert client.post("/v1/tag", json={"text": "book a table at chez pierre"}).json() == tagged_before
    # A bodyless reload afterwards reloads the directory that is still being served, not the bad one.
    assert client.post("/v1/admin/reload", headers=auth(server.admin_token)).json()["current"]["digest"] == \
        before["digest"]


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"model_dir": "/nonexistent/slotfill-model"}, "artifact_invalid", "model_dir"),
    ({"model_dir": 3}, "wrong_type", "model_dir"),
    ({"model": "x"}, "unknown_field", "model"),
])
def test_reload_bad_requests(server, client: httpx.Client, body: dict, code: str, field: str) -> None:
    response = client.post("/v1/admin/reload", headers=auth(server.admin_token), json=body)
    assert_error(response, 422, code, field)
    assert client.get("/ready").status_code == 200


def test_reload_of_an_empty_directory(server, client: httpx.Client, tmp_path: Path) -> None:
    response = client.post("/v1/admin/reload", headers=auth(server.admin_token), json={"model_dir": str(tmp_path)})
    assert_error(response, 422, "artifact_invalid", "model_dir")


def test_requests_during_a_reload_succeed(server, client: httpx.Client) -> None:
    """Tag continuously while the server reloads: every request gets a 200."""
    done = threading.Event()
    results: list[tuple[float, int]] = []

    def hammer() -> None:
        with server.client() as http:
            while not done.is_set():
                started = time.monotonic()
                status = http.post("/v1/tag", json={"text": "book a table for two"}).status_code
                results.append((started, status))

    windows: list[tuple[float, float]] = []
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(hammer) for _ in range(2)]
        try:
            time.sleep(0.1)
            for _ in range(5):  # reloads are quick: repeat until one overlapped a request (almost always the first)
                reload_started = time.monotonic()
                response = client.post("/v1/admin/reload", headers=auth(server.admin_token))
                windows.append((reload_started, time.monotonic()))
                assert response.status_code == 200, response.text
                if any(start <= started <= end for started, _ in list(results) for start, end in windows):
                    break
                time.sleep(0.05)
        finally:
            done.set()
            for future in futures:
                future.result()
    assert results and all(status == 200 for _, status in results), results
    assert any(start <= started <= end for started, _ in results for start, end in windows), \
        "no request overlapped a reload"


def test_reload_to_a_bad_artifact_under_load_drops_nothing(server, client: httpx.Client, tmp_path: Path) -> None:
    """Clients tag (single and batch) while reloads to corrupt artifacts fail: every request gets a
    full 200 from the old model, each reload a 422 naming the broken file, and the old model serves on."""
    flipped = tampered_copy(server.model_dir, tmp_path / "flipped")
    truncated = tmp_path / "truncated"
    shutil.copytree(server.model_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    broken_manifest = tmp_path / "broken-manifest"
    shutil.copytree(server.model_dir, broken_manifest)
    (broken_manifest / "manifest.json").write_text("{not json", encoding="utf-8")
    bad = [(flipped, "model.safetensors"), (truncated, "model.safetensors"), (broken_manifest, "manifest.json")]

    before = client.get("/v1/model").json()
    text = "book a table at chez pierre for 4 tomorrow"
    expected = client.post("/v1/tag", json={"text": text}).json()
    metrics_before = client.get("/metrics").text
    done = threading.Event()
    results: list[tuple[float, int, str]] = []
    lock = threading.Lock()

    def hammer(worker: int) -> None:
        with server.client() as http:
            n = 0
            while not done.is_set():
                started = time.monotonic()
                if (worker + n) % 3 == 0:
                    response = http.post("/v1/tag/batch", json={"items": [{"text": text}, {"text": "hi"}]})
                    ok = response.status_code == 200 and response.json()["items"][0]["labels"] == expected["labels"]
                else:
                    response = http.post("/v1/tag", json={"text": text})
                    ok = response.status_code == 200 and response.json()["labels"] == expected["labels"]
                with lock:
                    results.append((started, response.status_code if ok else -response.status_code,
                                    response.text[:200]))
                n += 1

    windows: list[tuple[float, float]] = []
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(hammer, worker) for worker in range(4)]
        try:
            time.sleep(0.2)
            for round_ in range(3):  # until one reload overlapped a request (almost always the first round)
                for path, broken_file in bad:
                    reload_started = time.monotonic()
                    response = client.post("/v1/admin/reload", headers=auth(server.admin_token),
                                           json={"model_dir": str(path)})
                    windows.append((reload_started, time.monotonic()))
                    error = assert_error(response, 422, "artifact_invalid", "model_dir")
                    assert broken_file in error["message"] and "previous model" in error["message"], error
                with lock:
                    overlapped = any(start <= started <= end for started, _, _ in results for start, end in windows)
                if overlapped:
                    break
        finally:
            done.set()
            for future in futures:
                future.result()
    failures = [result for result in results if result[1] != 200]
    assert results and not failures, failures[:5]
    assert any(start <= started <= end for started, _, _ in results for start, end in windows), \
        "no request overlapped a failing reload"
    # The old model is still the one served, and answers as before.
    assert client.get("/ready").status_code == 200
    assert client.get("/v1/model").json() == before
    assert client.post("/v1/tag", json={"text": text}).json() == expected
    metrics_after = client.get("/metrics").text
    failed = "slotfill_model_reloads_total"
    assert metric_value(metrics_after, failed, outcome="failed") - \
        metric_value(metrics_before, failed, outcome="failed") == len(windows)
    assert metric_value(metrics_after, failed, outcome="ok") == metric_value(metrics_before, failed, outcome="ok")


# ----------------------------------------------------------------------------- in-process server (real socket)
class SlowLoader:
    """Loads the real artifact, but blocks until released, and marks the result's version."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, path: Path) -> Any:
        predictor = load_predictor(path)
        self.entered.set()
        assert self.release.wait(30)
        predictor.version = f"{predictor.version}-reloaded"
        return predictor


def test_reload_swaps_atomically_while_requests_are_served(model_dir: Path, predictor: Any) -> None:
    old, new = predictor.version, f"{predictor.version}-reloaded"
    loader = SlowLoader()
    app = create_app(Settings(model_dir=model_dir, admin_token="t0k"), predictor=predictor, loader=loader)
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http, \
            ThreadPoolExecutor(1) as pool:
        pending = pool.submit(http.post, "/v1/admin/reload", headers=auth("t0k"))
        assert loader.entered.wait(30)
        # While the new model loads, the old one answers, readiness stays green, a second reload is refused.
        during = http.post("/v1/tag", json={"text": "book a table"})
        assert during.status_code == 200
        assert during.json()["model"]["version"] == old
        assert http.get("/ready").status_code == 200
        assert_error(http.post("/v1/admin/reload", headers=auth("t0k")), 409, "reload_in_progress")
        loader.release.set()
        response = pending.result(timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["previous"]["version"] == old
        assert response.json()["current"]["version"] == new
        assert http.post("/v1/tag", json={"text": "book a table"}).json()["model"]["version"] == new
        assert http.get("/v1/model").json()["version"] == new
        info_lines = [line for line in http.get("/metrics").text.splitlines()
                      if line.startswith("slotfill_model_info{")]
        assert len(info_lines) == 1 and f'version="{new}"' in info_lines[0], info_lines


def test_admin_disabled_without_a_token(predictor: Any) -> None:
    app = create_app(Settings(), predictor=predictor)
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url) as http:
        assert_error(http.post("/v1/admin/reload"), 403, "admin_disabled")
        assert_error(http.post("/v1/admin/reload", headers=auth("anything")), 403, "admin_disabled")


def test_reload_refused_with_several_workers(predictor: Any) -> None:
    app = create_app(Settings(admin_token="t0k", workers=2), predictor=predictor)
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url) as http:
        assert_error(http.post("/v1/admin/reload", headers=auth("t0k")), 409, "reload_unsupported")


def test_reload_refuses_a_model_whose_card_cannot_be_echoed(server, client: httpx.Client, tmp_path: Path) -> None:
    """A card with "version": "\\ud800" loaded fine and then made /v1/model answer 500; now the reload is refused."""
    before = client.get("/v1/model").json()
    bad = tmp_path / "surrogate"
    shutil.copytree(server.model_dir, bad)
    surrogate_in_the_card(bad)
    response = client.post("/v1/admin/reload", headers=auth(server.admin_token), json={"model_dir": str(bad)})
    error = assert_error(response, 422, "artifact_invalid", "model_dir")
    assert "model_card.json: version: lone surrogate U+D800" in error["message"], error
    assert client.get("/v1/model").json() == before
    assert client.post("/v1/tag", json={"text": "book a table"}).status_code == 200


def test_reload_refuses_a_model_that_fails_its_warm_up(model_dir: Path, predictor: Any, monkeypatch) -> None:
    """A model that loads but cannot tag is refused before the swap, and the old one keeps answering."""
    from slotfill.inference.predictor import Predictor

    app = create_app(Settings(model_dir=model_dir, admin_token="t0k"), predictor=predictor)
    with TestClient(app) as client:
        def fails(self) -> None:
            raise IndexError("index 15 is out of bounds")

        monkeypatch.setattr(Predictor, "warmup", fails)
        response = client.post("/v1/admin/reload", headers=auth("t0k"))
        error = assert_error(response, 422, "artifact_invalid", "model_dir")
        assert "the model fails on a warm-up sentence (IndexError: index 15 is out of bounds)" in error["message"]
        assert app.state.model.predictor is predictor
        assert client.post("/v1/tag", json={"text": "book a table"}).status_code == 200
