"""Load shedding (503 ``overloaded`` past ``max_pending``) and draining on SIGTERM.

Shedding is tested in-process on a real socket with a model stand-in that holds every forward
pass until the test lets it go, so "the service is full" is a state the test sets up, not a
race it hopes to win. Draining is tested against ``python -m service``: requests are waiting for
their micro-batch (a long ``max_wait``) when SIGTERM arrives.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testlib import LIMITS, SERVER_ENV, ThreadServer, assert_error, start_server, stop_server
from test_service_api import check_prediction, metric_value

from service.admission import Admission
from service.app import create_app
from service.settings import Settings, load_settings
from slotfill.errors import ConfigError

ADMITTED = "slotfill_tag_requests_admitted"
JSON = {"content-type": "application/json"}


class Held:
    """A predictor whose forward passes wait until ``release`` is set; ``entered`` counts them."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.release = threading.Event()
        self.entered = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _hold(self) -> None:
        with self._lock:
            self.entered += 1
        assert self.release.wait(60), "the test never released the model"

    def predict_texts(self, texts):
        self._hold()
        return self._inner.predict_texts(texts)

    def predict_tokens(self, tokens):
        self._hold()
        return self._inner.predict_tokens(tokens)

    def predict_mixed(self, items):
        self._hold()
        return self._inner.predict_mixed(items)


def wait_until(condition: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def post(base_url: str, path: str, body: Any) -> httpx.Response:
    with httpx.Client(base_url=base_url, timeout=60) as http:
        return http.post(path, json=body)


def assert_overloaded(response: httpx.Response, retry_after: str) -> None:
    assert_error(response, 503, "overloaded")
    assert response.headers["retry-after"] == retry_after, response.headers


# ----------------------------------------------------------------------------- the gate on its own
def test_admission_counts_up_to_its_limit() -> None:
    gate = Admission(2, retry_after_s=5)
    assert gate.try_enter() and gate.try_enter()
    assert not gate.try_enter() and gate.pending == 2  # a refusal does not count
    gate.leave()
    assert gate.try_enter() and not gate.try_enter()
    unlimited = Admission(None)
    assert all(unlimited.try_enter() for _ in range(10_000)) and unlimited.pending == 10_000


def test_shedding_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (Settings.model_fields["max_pending"].default, Settings.model_fields["retry_after_s"].default) == (256, 1)
    monkeypatch.setenv("SLOTFILL_MAX_PENDING", "8")
    monkeypatch.setenv("SLOTFILL_RETRY_AFTER_S", "3")
    settings = load_settings()
    assert (settings.max_pending, settings.retry_after_s) == (8, 3)
    monkeypatch.setenv("SLOTFILL_MAX_PENDING", "-1")
    with pytest.raises(ConfigError, match="max_pending"):
        load_settings()


# ----------------------------------------------------------------------------- in-process, real socket
def test_requests_past_max_pending_get_503_with_retry_after(predictor: Any) -> None:
    held = Held(predictor)
    app = create_app(Settings(**LIMITS, batching=False, max_pending=2, retry_after_s=7), predictor=held)
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http, \
            ThreadPoolExecutor(2) as pool:
        admitted = [pool.submit(post, base_url, "/v1/tag", {"text": "book a table for two"}),
                    pool.submit(post, base_url, "/v1/tag/batch", {"items": [{"text": "hi"}, {"tokens": ["a", "b"]}]})]
        wait_until(lambda: held.entered == 2, what="both requests to reach the model")
        before = http.get("/metrics").text
        assert metric_value(before, ADMITTED) == 2
        # Full: refused at once, before the body is even parsed (the broken ones get the 503 too).
        shed = [http.post("/v1/tag", json={"text": "book a table"}),
                http.post("/v1/tag/batch", json={"items": [{"text": "book a table"}]}),
                http.post("/v1/tag", content=b'{"text": ', headers=JSON),
                http.post("/v1/tag", json={"text": " "})]
        for response in shed:
            assert_overloaded(response, "7")
        # Only the tag routes are behind the limit.
        assert http.get("/ready").status_code == 200 and http.get("/v1/model").status_code == 200
        held.release.set()
        for future in admitted:
            response = future.result(timeout=30)
            assert response.status_code == 200, response.text
        # Every kind of answer gives its slot back: 422s first, then 200s, none refused.
        for _ in range(3):
            assert_error(http.post("/v1/tag", json={"text": " "}), 422, "empty_text", "text")
        for _ in range(3):
            assert http.post("/v1/tag", json={"text": "book a table"}).status_code == 200
        after = http.get("/metrics").text

    def delta(metric: str, /, **labels: str) -> float:
        return metric_value(after, metric, **labels) - metric_value(before, metric, **labels)

    assert delta("slotfill_errors_total", code="overloaded") == 4
    assert delta("slotfill_http_requests_total", route="/v1/tag", status="503") == 3
    assert delta("slotfill_http_requests_total", route="/v1/tag/batch", status="503") == 1
    assert metric_value(after, ADMITTED) == 0


def test_under_overload_every_answer_is_200_or_503(predictor: Any) -> None:
    """Twelve clients against max_pending=3, micro-batching on: the model is held until someone has
    been refused, then let go. Nobody gets anything but a full 200 or a 503 ``overloaded``."""
    held = Held(predictor)
    app = create_app(Settings(**LIMITS, max_pending=3, retry_after_s=1, batch_max_wait_ms=5), predictor=held)
    refused = threading.Event()
    lock = threading.Lock()
    statuses: list[int] = []
    problems: list[str] = []

    def client(worker: int, base_url: str) -> None:
        with httpx.Client(base_url=base_url, timeout=60) as http:
            for n in range(6):
                if (worker + n) % 3 == 0:
                    texts = ["book a table for two", "cancel it", "find sushi near me"]
                    response = http.post("/v1/tag/batch", json={"items": [{"text": text} for text in texts]})
                else:
                    texts = ["book a table at chez pierre at 7pm"]
                    response = http.post("/v1/tag", json={"text": texts[0]})
                with lock:
                    statuses.append(response.status_code)
                try:
                    if response.status_code == 503:
                        assert_overloaded(response, "1")
                        refused.set()
                        time.sleep(0.01)
                    else:
                        assert response.status_code == 200, response.text
                        body = response.json()
                        for text, answer in zip(texts, body["items"] if "items" in body else [body]):
                            check_prediction(answer, text)
                except AssertionError as exc:
                    with lock:
                        problems.append(str(exc)[:300])

    with ThreadServer(app) as base_url, ThreadPoolExecutor(12) as pool:
        futures = [pool.submit(client, worker, base_url) for worker in range(12)]
        try:
            assert refused.wait(60), "nobody was refused while the model was held"
        finally:
            held.release.set()
            for future in futures:
                future.result(timeout=120)
        metrics = httpx.get(f"{base_url}/metrics").text
    assert not problems, problems[:5]
    assert set(statuses) <= {200, 503} and len(statuses) == 72
    assert statuses.count(200) >= 3 and statuses.count(503) >= 1, statuses
    assert metric_value(metrics, "slotfill_errors_total", code="overloaded") == statuses.count(503)
    assert metric_value(metrics, ADMITTED) == 0


def test_max_pending_zero_is_no_limit(predictor: Any) -> None:
    held = Held(predictor)
    app = create_app(Settings(**LIMITS, batching=False, max_pending=0), predictor=held)
    with ThreadServer(app) as base_url, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(post, base_url, "/v1/tag", {"text": "book a table"}) for _ in range(6)]
        try:
            wait_until(lambda: held.entered == 6, what="six requests to reach the model at once")
        finally:
            held.release.set()
        assert [future.result(timeout=30).status_code for future in futures] == [200] * 6


# ----------------------------------------------------------------------------- SIGTERM, server process
DRAIN_WAIT_MS = 5000  # each micro-batch waits this long for company: the requests are in flight for ~5 s


def test_sigterm_drains_the_requests_in_flight(model_dir: Path, tmp_path: Path) -> None:
    # No idle start: every request must wait in the micro-batch, not just the ones behind the first.
    env = {**SERVER_ENV, "SLOTFILL_BATCH_MAX_WAIT_MS": str(DRAIN_WAIT_MS), "SLOTFILL_BATCH_MAX_SIZE": "64",
           "SLOTFILL_BATCH_IDLE_START": "false"}
    server = start_server(model_dir, tmp_path / "server.log", env)
    texts = ["book a table for 4 at chez pierre tomorrow at 7pm", "find a cheap italian restaurant near midtown",
             "cancel it", "book a table at café müller for two", "hi", "table for one tonight"]
    requests: list[tuple[str, dict[str, Any]]] = [("/v1/tag", {"text": text}) for text in texts[:3]]
    requests += [("/v1/tag/batch", {"items": [{"text": text} for text in texts[k:k + 3]]}) for k in range(3)]

    def send(path_and_body: tuple[str, dict[str, Any]]) -> tuple[httpx.Response, float]:
        path, body = path_and_body
        with httpx.Client(base_url=server.base_url, timeout=60) as http:
            response = http.post(path, json=body)
            return response, time.monotonic()

    def admitted() -> float:
        return metric_value(httpx.get(f"{server.base_url}/metrics", timeout=10).text, ADMITTED)

    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(send, request) for request in requests]
            wait_until(lambda: admitted() == len(requests), timeout=DRAIN_WAIT_MS / 1000 - 1,
                       what="every request to be admitted before its micro-batch starts")
            terminated_at = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            results = [future.result(timeout=60) for future in futures]
        returncode = server.process.wait(timeout=60)
    finally:
        stop_server(server)
    log = "\n".join(server.log_lines()[-30:])
    assert returncode == 0, log
    for (path, body), (response, finished_at) in zip(requests, results):
        assert response.status_code == 200, (path, response.status_code, response.text)
        assert finished_at > terminated_at  # still in flight when the signal came
        payload = response.json()  # the whole body arrived
        answers = payload["items"] if path == "/v1/tag/batch" else [payload]
        expected = [item["text"] for item in body["items"]] if path == "/v1/tag/batch" else [body["text"]]
        assert len(answers) == len(expected)
        for answer, text in zip(answers, expected):
            check_prediction(answer, text)
    messages = [record.get("message") for record in server.log_records()]
    assert "Application shutdown complete." in messages, log
    assert not any("timeout graceful shutdown exceeded" in str(message) for message in messages), log
