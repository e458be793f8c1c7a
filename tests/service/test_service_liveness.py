"""``GET /health`` answers 503 when the served model needs what a restart gives it (``state.ModelWatch``):
its calls failing one after another (``model_failing``), or one stuck (``model_stalled``). Client errors
never count, one success clears the failures, and a reload (as a restart would) makes it healthy again.
``/ready`` and the Open Inference Protocol's ``/v2/health/live`` say the same. A process whose model is
not loaded yet is alive (``test_service_settings.py``: ``/health`` 200, ``/ready`` 503 ``not_ready``).

The model is the session's real predictor behind a switch that makes its calls raise, as a model whose
inference session broke, or wait, as a deadlocked backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testlib import ADMIN_TOKEN, LIMITS, ThreadServer, assert_error

from service.app import create_app
from service.settings import Settings

FAILURES = 3
TEXT = {"text": "book a table for 4 at chez pierre"}


class Breakable:
    """The real predictor, with a switch: ``broken`` makes every model call raise; clearing ``running`` makes
    each call wait until it is set again."""

    def __init__(self, predictor: Any) -> None:
        self._predictor = predictor
        self.broken = False
        self.running = threading.Event()
        self.running.set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._predictor, name)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        self.running.wait(timeout=60)
        if self.broken:
            raise RuntimeError("the inference session is gone")
        return getattr(self._predictor, method)(*args, **kwargs)

    def predict_texts(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("predict_texts", *args, **kwargs)

    def predict_tokens(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("predict_tokens", *args, **kwargs)

    def predict_mixed(self, *args: Any, **kwargs: Any) -> Any:
        return self._call("predict_mixed", *args, **kwargs)


@pytest.fixture(params=[True, False], ids=["batched", "direct"])
def served(request: pytest.FixtureRequest, predictor: Any, model_dir: Path) -> Iterator[tuple[httpx.Client, Breakable]]:
    breakable = Breakable(predictor)
    settings = Settings(batching=request.param, health_failures=FAILURES, health_stall_s=0.5, model_dir=model_dir,
                        admin_token=ADMIN_TOKEN, **LIMITS)
    with ThreadServer(create_app(settings, predictor=breakable)) as base_url:
        with httpx.Client(base_url=base_url, timeout=30) as client:
            yield client, breakable


def assert_unhealthy(client: httpx.Client, code: str) -> str:
    message = assert_error(client.get("/health"), 503, code)["message"]
    assert assert_error(client.get("/ready"), 503, code)["message"] == message
    live = client.get("/v2/health/live")
    assert live.status_code == 503 and live.json()["error"].endswith(f"[{code}]"), live.text
    return message


def test_failing_model_calls_make_health_503_until_a_reload(served: tuple[httpx.Client, Breakable]) -> None:
    client, model = served
    assert client.get("/health").status_code == 200
    model.broken = True
    for _ in range(FAILURES - 1):
        assert_error(client.post("/v1/tag", json=TEXT), 500, "internal_error")
    assert_error(client.post("/v1/tag", json={"text": " "}), 422, "empty_text", "text")  # not counted
    assert client.get("/health").status_code == 200
    assert_error(client.post("/v1/tag/batch", json={"items": [TEXT, TEXT]}), 500, "internal_error")
    message = assert_unhealthy(client, "model_failing")
    assert message == (f"the last {FAILURES} model calls failed (the last with RuntimeError: the inference session "
                       "is gone); a restart or a reload loads the model again")
    reload = client.post("/v1/admin/reload", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert reload.status_code == 200, reload.text
    assert client.get("/health").status_code == 200
    assert client.get("/ready").status_code == 200
    assert client.post("/v1/tag", json=TEXT).status_code == 200


def test_one_success_clears_the_failures(served: tuple[httpx.Client, Breakable]) -> None:
    client, model = served
    for _ in range(2):
        model.broken = True
        for _ in range(FAILURES - 1):
            assert_error(client.post("/v1/tag", json=TEXT), 500, "internal_error")
        model.broken = False
        assert client.post("/v1/tag", json=TEXT).status_code == 200
    assert client.get("/health").status_code == 200


def test_a_stuck_model_call_makes_health_503_until_it_ends(served: tuple[httpx.Client, Breakable]) -> None:
    client, model = served
    model.running.clear()
    answers: list[int] = []
    waiting = threading.Thread(target=lambda: answers.append(client.post("/v1/tag", json=TEXT).status_code))
    waiting.start()
    try:
        deadline = time.monotonic() + 20
        while client.get("/health").status_code == 200:
            assert time.monotonic() < deadline, "a call stuck past health_stall_s went unnoticed"
            time.sleep(0.1)
        message = assert_unhealthy(client, "model_stalled")
        assert message.startswith("a model call has been running, or a request waiting for one, for ")
        assert "(health_stall_s is 0.5)" in message
    finally:
        model.running.set()
        waiting.join(timeout=30)
    assert answers == [200]
    assert client.get("/health").status_code == 200
