"""``min_confidence`` on ``POST /v1/tag`` and each ``/v1/tag/batch`` item: the library's floor, only when asked
(or when the server has a default floor, ``Settings.min_confidence``), the dropped slots' tokens marked with the
label they lost, its bad values a 422 naming the field; micro-batched (the session server) and direct alike."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from service_testlib import LIMITS, ThreadServer, assert_error

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


def test_the_dropped_slots_tokens_carry_the_label_they_lost(http: httpx.Client, floor: float) -> None:
    marked = 0
    for text in TEXTS:
        plain = http.post("/v1/tag", json={"text": text}).json()
        body = http.post("/v1/tag", json={"text": text, "min_confidence": floor}).json()
        dropped = [slot for slot in plain["slots"] if slot["confidence"] < floor]
        for before, after in zip(plain["tokens"], body["tokens"]):
            if any(slot["start"] <= before["start"] and before["end"] <= slot["end"] for slot in dropped):
                assert after["label"] == "O" and after["dropped_label"] == before["label"] != "O"
                marked += 1
            else:
                assert after == before and "dropped_label" not in after
    assert marked, "the floor drops some slot of TEXTS"


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
    assert "defaults.min_confidence" in field["description"] and "dropped_label" in field["description"]
    assert "dropped_label" not in schemas["TokenOut"]["required"]
    assert schemas["ModelInfo"]["properties"]["defaults"]["$ref"].endswith("/Defaults")


@pytest.fixture(scope="module", params=[True, False], ids=["batched", "direct"])
def default_floor_url(request: pytest.FixtureRequest, predictor: Any, floor: float) -> Any:
    """The session's model served with a default floor, micro-batched and direct."""
    from service.app import create_app
    from service.settings import Settings

    settings = Settings(min_confidence=floor, batching=request.param, **LIMITS)
    with ThreadServer(create_app(settings, predictor=predictor)) as base_url:
        yield base_url


def test_a_server_default_floor_applies_unless_the_request_gives_its_own(default_floor_url: str, predictor: Any,
                                                                         floor: float) -> None:
    with httpx.Client(base_url=default_floor_url, timeout=30) as http:
        assert http.get("/v1/model").json()["defaults"] == {"min_confidence": floor}
        for text in TEXTS:
            absent = http.post("/v1/tag", json={"text": text})
            assert absent.status_code == 200, absent.text
            assert {key: absent.json()[key] for key in ("tokens", "labels", "slots")} == \
                library_answer(predictor, text, floor)
            assert http.post("/v1/tag", json={"text": text, "min_confidence": None}).content == absent.content
            for own in (0, 1.0):  # the request's value wins; 0 turns the floor off
                body = http.post("/v1/tag", json={"text": text, "min_confidence": own}).json()
                assert {key: body[key] for key in ("tokens", "labels", "slots")} == \
                    library_answer(predictor, text, own or None)
        items = [{"text": TEXTS[0]}, {"tokens": TEXTS[0].split(), "min_confidence": 0}]
        floored, unfloored = http.post("/v1/tag/batch", json={"items": items}).json()["items"]
        assert floored["slots"] == library_answer(predictor, TEXTS[0], floor)["slots"]
        assert unfloored["slots"] == library_answer(predictor, TEXTS[0], None)["slots"]
        assert floored["slots"] != unfloored["slots"], "the floor drops some slot of TEXTS[0]"
        # /v2 inference has no option of its own: the server's default applies to its slots too.
        name = http.get("/v1/model").json()["name"]
        v2 = http.post(f"/v2/models/{name}/infer", json={"inputs": [{"name": "text", "shape": [1],
                                                                     "datatype": "BYTES", "data": [TEXTS[0]]}],
                                                         "outputs": [{"name": "slots"}]}).json()
        assert json.loads(v2["outputs"][0]["data"][0]) == floored["slots"]


def test_the_default_floor_setting_is_checked() -> None:
    from service.settings import load_settings
    from slotfill.errors import ConfigError

    assert load_settings(min_confidence=0.25).min_confidence == 0.25
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(ConfigError, match="min_confidence"):
            load_settings(min_confidence=bad)
