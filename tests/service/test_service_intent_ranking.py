"""``intent_ranking`` on ``POST /v1/tag`` and each ``/v1/tag/batch`` item: the library's ranking, only when
asked, its bad values a 422 naming the field; micro-batched (the session server) and direct alike."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from service_testlib import assert_error

TEXTS = ["book a table for 4 at chez pierre tomorrow at 7pm", "cancel my booking",
         "find a cheap italian restaurant near midtown"]


def library_ranking(predictor: Any, text: str, k: int) -> list[dict[str, Any]]:
    [prediction] = predictor.predict_texts([text], intent_top_k=k)
    return [{"name": name, "confidence": confidence} for name, confidence in prediction.intent.ranking]


def test_ranking_only_when_asked_and_equal_to_the_library(http: httpx.Client, predictor: Any) -> None:
    n = len(predictor.intents)
    for text in TEXTS:
        plain = http.post("/v1/tag", json={"text": text})
        assert plain.status_code == 200 and "ranking" not in plain.json()["intent"]
        assert http.post("/v1/tag", json={"text": text, "intent_ranking": None}).content == plain.content
        for k in (1, 2, n):
            body = http.post("/v1/tag", json={"text": text, "intent_ranking": k}).json()
            ranking = body["intent"].pop("ranking")
            assert body == plain.json(), "the rest of the answer is unchanged"
            assert ranking == library_ranking(predictor, text, k)
            assert ranking[0] == body["intent"] and len(ranking) == k
            assert [r["confidence"] for r in ranking] == sorted((r["confidence"] for r in ranking), reverse=True)
    tokens = http.post("/v1/tag", json={"tokens": ["cancel", "my", "booking"], "intent_ranking": 2}).json()
    assert tokens["intent"]["ranking"] == library_ranking(predictor, "cancel my booking", 2)
    nothing = http.post("/v1/tag", json={"text": "?!", "intent_ranking": 2}).json()
    assert nothing["intent"] is None


def test_batch_items_rank_each_their_own_k(http: httpx.Client, predictor: Any) -> None:
    items = [{"text": TEXTS[0], "intent_ranking": 3}, {"text": TEXTS[1]}, {"tokens": TEXTS[2].split(),
                                                                           "intent_ranking": 1}]
    answer = http.post("/v1/tag/batch", json={"items": items})
    assert answer.status_code == 200, answer.text
    first, second, third = answer.json()["items"]
    assert first["intent"]["ranking"] == library_ranking(predictor, TEXTS[0], 3)
    assert "ranking" not in second["intent"]
    assert third["intent"]["ranking"] == library_ranking(predictor, TEXTS[2], 1)
    plain = http.post("/v1/tag/batch", json={"items": [{"text": t} for t in TEXTS]}).json()
    for ranked, unranked in zip(answer.json()["items"], plain["items"]):
        ranked["intent"].pop("ranking", None)
        assert ranked == unranked


def test_concurrent_requests_with_different_k_share_batches_and_keep_their_own(client: httpx.Client,
                                                                                predictor: Any) -> None:
    bodies = [{"text": text, **({"intent_ranking": k} if k else {})} for text in TEXTS for k in (0, 1, 3)]
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: client.post("/v1/tag", json=body), bodies * 2))
    for body, answer in zip(bodies * 2, answers):
        assert answer.status_code == 200, answer.text
        intent = answer.json()["intent"]
        if "intent_ranking" in body:
            assert intent["ranking"] == library_ranking(predictor, body["text"], body["intent_ranking"])
        else:
            assert "ranking" not in intent


@pytest.mark.parametrize("value, code", [(0, "invalid_intent_ranking"), (-3, "invalid_intent_ranking"),
                                         ("2", "wrong_type"), (2.0, "wrong_type"), (True, "wrong_type"),
                                         ([2], "wrong_type"), ("too_many", "invalid_intent_ranking")])
def test_bad_values_are_422_naming_the_field(http: httpx.Client, predictor: Any, value: Any, code: str) -> None:
    if value == "too_many":
        value = len(predictor.intents) + 1
    error = assert_error(http.post("/v1/tag", json={"text": TEXTS[0], "intent_ranking": value}), 422, code,
                         "intent_ranking")
    if value == len(predictor.intents) + 1:
        assert f"has {len(predictor.intents)} intents" in error["message"]
    items = [{"text": TEXTS[0]}, {"text": TEXTS[1], "intent_ranking": value}]
    assert_error(http.post("/v1/tag/batch", json={"items": items}), 422, code, "items.1.intent_ranking")
    assert_error(http.post("/v1/tag", json={"tokens": ["a"], "intent_ranking": 10 ** 40}), 422,
                 "invalid_intent_ranking", "intent_ranking")


def test_openapi_documents_the_option_and_the_ranking(client: httpx.Client) -> None:
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    field = schemas["TagRequest"]["properties"]["intent_ranking"]
    assert {"type": "integer", "minimum": 1} in field["anyOf"] and "intent.ranking" in field["description"]
    ranking = schemas["IntentOut"]["properties"]["ranking"]
    assert {"type": "array", "items": {"$ref": "#/components/schemas/RankedIntentOut"}} in ranking["anyOf"]
    assert set(schemas["RankedIntentOut"]["properties"]) == {"name", "confidence"}
    assert "ranking" not in schemas["IntentOut"]["required"]
