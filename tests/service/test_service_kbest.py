"""``n_best`` on ``POST /v1/tag`` and each ``/v1/tag/batch`` item: the library's alternatives, only when asked,
its bad values a 422 naming the field, a softmax model's refusal; micro-batched and direct alike."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from service_testlib import LIMITS, ThreadServer, assert_error

TEXTS = ["book a table for 4 at chez pierre tomorrow at 7pm", "cancel my booking at bella napoli"]


def library_alternatives(predictor: Any, text: str, k: int) -> list[dict[str, Any]]:
    [prediction] = predictor.predict_texts([text], n_best=k)
    return json.loads(json.dumps(prediction.to_dict()))["alternatives"]


def test_alternatives_only_when_asked_and_equal_to_the_library(http: httpx.Client, predictor: Any) -> None:
    for text in TEXTS:
        plain = http.post("/v1/tag", json={"text": text})
        assert plain.status_code == 200 and "alternatives" not in plain.json()
        assert http.post("/v1/tag", json={"text": text, "n_best": None}).content == plain.content
        for k in (1, 3, 10):
            body = http.post("/v1/tag", json={"text": text, "n_best": k}).json()
            alternatives = body.pop("alternatives")
            assert body == plain.json(), "the rest of the answer is unchanged"
            assert alternatives == library_alternatives(predictor, text, k) and len(alternatives) == k
            assert alternatives[0]["labels"] == body["labels"] and alternatives[0]["slots"] == body["slots"]
            probabilities = [a["probability"] for a in alternatives]
            assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-5
    floored = http.post("/v1/tag", json={"text": TEXTS[0], "n_best": 2, "min_confidence": 1.0}).json()
    assert floored["alternatives"] == library_alternatives(predictor, TEXTS[0], 2)  # before the floor


def test_batch_items_each_get_their_own_k(http: httpx.Client, predictor: Any) -> None:
    items = [{"text": TEXTS[0], "n_best": 4}, {"text": TEXTS[1]}, {"tokens": TEXTS[1].split(), "n_best": 2}]
    first, second, third = http.post("/v1/tag/batch", json={"items": items}).json()["items"]
    assert first["alternatives"] == library_alternatives(predictor, TEXTS[0], 4)
    assert "alternatives" not in second
    assert third["alternatives"] == library_alternatives(predictor, TEXTS[1], 2)


@pytest.mark.parametrize("value, code", [(0, "invalid_n_best"), (11, "invalid_n_best"), (-1, "invalid_n_best"),
                                         ("2", "wrong_type"), (2.0, "wrong_type"), (True, "wrong_type")])
def test_bad_values_are_422_naming_the_field(http: httpx.Client, value: Any, code: str) -> None:
    assert_error(http.post("/v1/tag", json={"text": TEXTS[0], "n_best": value}), 422, code, "n_best")
    items = [{"text": TEXTS[0]}, {"text": TEXTS[1], "n_best": value}]
    assert_error(http.post("/v1/tag/batch", json={"items": items}), 422, code, "items.1.n_best")


def test_a_softmax_model_refuses_n_best(sample_softmax_model_dir: Any) -> None:
    from service.app import create_app
    from service.settings import Settings
    from slotfill.inference.predictor import Predictor

    softmax = Predictor.load(sample_softmax_model_dir, backend="torch")
    with ThreadServer(create_app(Settings(**LIMITS), predictor=softmax)) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as http:
        assert_error(http.post("/v1/tag", json={"text": TEXTS[0], "n_best": 2}), 422, "n_best_needs_crf", "n_best")
        items = [{"text": TEXTS[0]}, {"text": TEXTS[1], "n_best": 1}]
        assert_error(http.post("/v1/tag/batch", json={"items": items}), 422, "n_best_needs_crf", "items.1.n_best")
        assert http.post("/v1/tag", json={"text": TEXTS[0]}).status_code == 200


def test_openapi_documents_the_option(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["TagRequest"]["properties"]["n_best"]
    assert {"type": "integer", "minimum": 1, "maximum": 10} in field["anyOf"]
    assert set(schemas["AlternativeOut"]["properties"]) == {"labels", "slots", "probability"}
    assert "alternatives" not in schemas["TagResponse"]["required"]
