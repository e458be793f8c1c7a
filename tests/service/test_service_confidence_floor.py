"""``min_confidence`` on ``POST /v1/tag`` and each ``/v1/tag/batch`` item: the library's floor, only when asked,
its bad values a 422 naming the field; micro-batched (the session server) and direct alike."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from service_testlib import assert_error

from slotfill.schemes import validate

TEXTS = ["book a table for 4 at chez pierre tomorrow at 7pm", "cancel my booking at bella napoli",
         "find a cheap italian restaurant near midtown tonight"]


def library_answer(predictor: Any, text: str, floor: float | None) -> dict[str, Any]:
    [prediction] = predictor.predict_texts([text], min_span_confidence=floor)
    out = json.loads(json.dumps(prediction.to_dict()))
    return {key: out[key] for key in ("tokens", "labels", "slots")}


@pytest.fixture(scope="module")
def floor(predictor: Any) -> float:
    """A floor some of TEXTS' spans are below and some above."""
    confidences = sorted({slot.confidence for p in predictor.predict_texts(TEXTS) for slot in p.slots})
    assert len(confidences) >= 2
    return confidences[len(confidences) // 2]


def test_the_floor_is_the_library_s_and_only_when_asked(http: httpx.Client, predictor: Any, floor: float) -> None:
    dropped = 0
    for text in TEXTS:
        plain = http.post("/v1/tag", json={"text": text})
        assert plain.status_code == 200
        assert http.post("/v1/tag", json={"text": text, "min_confidence": None}).content == plain.content
        for value in (0, 0.0):
            assert http.post("/v1/tag", json={"text": text, "min_confidence": value}).content == plain.content
        body = http.post("/v1/tag", json={"text": text, "min_confidence": floor}).json()
        assert {key: body[key] for key in ("tokens", "labels", "slots")} == library_answer(predictor, text, floor)
        assert body["slots"] == [slot for slot in plain.json()["slots"] if slot["confidence"] >= floor]
        assert body["intent"] == plain.json()["intent"] and body["model"] == plain.json()["model"]
        assert validate(body["labels"], predictor.config.scheme) == []
        assert body["labels"] == [token["label"] for token in body["tokens"]]
        dropped += len(plain.json()["slots"]) - len(body["slots"])
        certain = http.post("/v1/tag", json={"text": text, "min_confidence": 1}).json()
        assert certain["slots"] == [slot for slot in plain.json()["slots"] if slot["confidence"] == 1.0]
    assert dropped
    tokens = http.post("/v1/tag", json={"tokens": TEXTS[1].split(), "min_confidence": floor}).json()
    assert tokens["slots"] == library_answer(predictor, TEXTS[1], floor)["slots"]


def test_batch_items_each_have_their_own_floor(http: httpx.Client, predictor: Any, floor: float) -> None:
    items = [{"text": TEXTS[0], "min_confidence": floor}, {"text": TEXTS[1]},
             {"tokens": TEXTS[2].split(), "min_confidence": 1.0}]
    answer = http.post("/v1/tag/batch", json={"items": items})
    assert answer.status_code == 200, answer.text
    first, second, third = answer.json()["items"]
    assert first["slots"] == library_answer(predictor, TEXTS[0], floor)["slots"]
    assert second["slots"] == library_answer(predictor, TEXTS[1], None)["slots"]
    assert third["labels"] == library_answer(predictor, TEXTS[2], 1.0)["labels"]


def test_concurrent_requests_with_different_floors_keep_their_own(client: httpx.Client, predictor: Any,
                                                                  floor: float) -> None:
    bodies = [{"text": text, **({"min_confidence": f} if f is not None else {})} for text in TEXTS
              for f in (None, floor, 1.0)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: client.post("/v1/tag", json=body), bodies * 2))
    for body, answer in zip(bodies * 2, answers):
        assert answer.status_code == 200, answer.text
        assert answer.json()["slots"] == library_answer(predictor, body["text"], body.get("min_confidence"))["slots"]


@pytest.mark.parametrize("value, code", [(-0.01, "invalid_min_confidence"), (1.5, "invalid_min_confidence"),
                                         (2, "invalid_min_confidence"), ("0.5", "wrong_type"), (True, "wrong_type"),
                                         ([0.5], "wrong_type"), ({"x": 1}, "wrong_type")])
def test_bad_values_are_422_naming_the_field(http: httpx.Client, value: Any, code: str) -> None:
    assert_error(http.post("/v1/tag", json={"text": TEXTS[0], "min_confidence": value}), 422, code, "min_confidence")
    items = [{"text": TEXTS[0]}, {"text": TEXTS[1], "min_confidence": value}]
    assert_error(http.post("/v1/tag/batch", json={"items": items}), 422, code, "items.1.min_confidence")


def test_nan_is_refused(http: httpx.Client) -> None:
    for literal in ("NaN", "Infinity"):
        response = http.post("/v1/tag", content=f'{{"text": "cancel my booking", "min_confidence": {literal}}}',
                             headers={"content-type": "application/json"})
        assert response.status_code in (400, 422), response.text


def test_openapi_documents_the_option(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["TagRequest"]["properties"]["min_confidence"]
    assert {"type": "number", "minimum": 0, "maximum": 1} in field["anyOf"] and "`O`" in field["description"]
