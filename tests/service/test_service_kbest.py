"""``alternatives`` on ``POST /v1/tag`` and each ``/v1/tag/batch`` item: the library's alternatives (a CRF model)
or each token's top labels (a softmax model), only when asked, its bad values a 422 naming the field;
micro-batched and direct alike."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from service_testlib import LIMITS, ThreadServer, assert_error

from slotfill.schemes import validate

TEXTS = ["book a table for 4 at chez pierre tomorrow at 7pm", "cancel my booking at bella napoli"]


def library_answer(predictor: Any, text: str, k: int) -> dict[str, Any]:
    [prediction] = predictor.predict_texts([text], alternatives=k)
    return json.loads(json.dumps(prediction.to_dict()))


def test_alternatives_only_when_asked_and_equal_to_the_library(http: httpx.Client, predictor: Any) -> None:
    for text in TEXTS:
        plain = http.post("/v1/tag", json={"text": text})
        assert plain.status_code == 200 and "alternatives" not in plain.json()
        assert http.post("/v1/tag", json={"text": text, "alternatives": None}).content == plain.content
        for k in (1, 3, 10):
            body = http.post("/v1/tag", json={"text": text, "alternatives": k}).json()
            alternatives = body.pop("alternatives")
            assert body == plain.json(), "the rest of the answer is unchanged"
            assert alternatives == library_answer(predictor, text, k)["alternatives"] and len(alternatives) == k
            assert alternatives[0]["labels"] == body["labels"] and alternatives[0]["slots"] == body["slots"]
            probabilities = [a["probability"] for a in alternatives]
            assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 1e-5
            assert len({tuple(a["labels"]) for a in alternatives}) == k
            assert all(validate(a["labels"], predictor.config.scheme) == [] for a in alternatives)
    floored = http.post("/v1/tag", json={"text": TEXTS[0], "alternatives": 2, "min_confidence": 1.0}).json()
    assert floored["alternatives"] == library_answer(predictor, TEXTS[0], 2)["alternatives"]  # before the floor


def test_batch_items_each_get_their_own_k(http: httpx.Client, predictor: Any) -> None:
    items = [{"text": TEXTS[0], "alternatives": 4}, {"text": TEXTS[1]},
             {"tokens": TEXTS[1].split(), "alternatives": 2}]
    first, second, third = http.post("/v1/tag/batch", json={"items": items}).json()["items"]
    assert first["alternatives"] == library_answer(predictor, TEXTS[0], 4)["alternatives"]
    assert "alternatives" not in second
    assert third["alternatives"] == library_answer(predictor, TEXTS[1], 2)["alternatives"]


@pytest.mark.parametrize("value, code", [(0, "invalid_alternatives"), (11, "invalid_alternatives"),
                                         (-1, "invalid_alternatives"), ("2", "wrong_type"), (2.0, "wrong_type"),
                                         (True, "wrong_type")])
def test_bad_values_are_422_naming_the_field(http: httpx.Client, value: Any, code: str) -> None:
    assert_error(http.post("/v1/tag", json={"text": TEXTS[0], "alternatives": value}), 422, code, "alternatives")
    items = [{"text": TEXTS[0]}, {"text": TEXTS[1], "alternatives": value}]
    assert_error(http.post("/v1/tag/batch", json={"items": items}), 422, code, "items.1.alternatives")


def test_a_softmax_model_answers_each_token_s_top_labels(sample_softmax_model_dir: Any) -> None:
    from service.app import create_app
    from service.settings import Settings
    from slotfill.inference.predictor import Predictor

    softmax = Predictor.load(sample_softmax_model_dir)
    with ThreadServer(create_app(Settings(**LIMITS), predictor=softmax)) as base_url, \
            httpx.Client(base_url=base_url, timeout=30) as http:
        assert http.get("/v1/model").json()["config"]["decoder"] == "softmax"
        for text in TEXTS:
            plain = http.post("/v1/tag", json={"text": text}).json()
            assert all("top_labels" not in token for token in plain["tokens"])
            for k in (1, 3):
                body = http.post("/v1/tag", json={"text": text, "alternatives": k}).json()
                assert "alternatives" not in body, "sequences are a CRF's"
                tops = [token.pop("top_labels") for token in body["tokens"]]
                assert body == plain, "the rest of the answer is unchanged"
                assert tops == [token["top_labels"] for token in library_answer(softmax, text, k)["tokens"]]
                for top, token in zip(tops, plain["tokens"]):
                    assert len(top) == k and top[0]["confidence"] == token["confidence"]
                    assert [t["confidence"] for t in top] == sorted((t["confidence"] for t in top), reverse=True)
        items = [{"text": TEXTS[0], "alternatives": 2}, {"text": TEXTS[1]}]
        first, second = http.post("/v1/tag/batch", json={"items": items}).json()["items"]
        assert [len(token["top_labels"]) for token in first["tokens"]] == [2] * len(first["tokens"])
        assert all("top_labels" not in token for token in second["tokens"])


def test_openapi_documents_the_option(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["TagRequest"]["properties"]["alternatives"]
    assert {"type": "integer", "minimum": 1, "maximum": 10} in field["anyOf"]
    assert "top_labels" in field["description"] and "k-best Viterbi" in field["description"]
    assert "n_best" not in schemas["TagRequest"]["properties"]
    assert set(schemas["AlternativeOut"]["properties"]) == {"labels", "slots", "probability"}
    assert "alternatives" not in schemas["TagResponse"]["required"]
    top = schemas["TokenOut"]["properties"]["top_labels"]
    assert "top_labels" not in schemas["TokenOut"]["required"] and "no CRF" in top["description"]
    assert set(schemas["RankedLabelOut"]["properties"]) == {"label", "confidence"}
