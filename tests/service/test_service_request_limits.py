"""Request bodies are bounded before they are validated, and validated once (``service/limits.py``,
``service/json_route.py``).

The reproductions of what used to take seconds and more than a gigabyte each -- 1 MiB of invalid batch
items, of empty tokens, of NUL tokens, three such bodies at once, tens of thousands of unknown fields,
Open Inference Protocol requests with huge shapes, parameter maps and tensor lists -- against ``python -m
service`` on a real socket: each is answered with the limit it breaks, as one error object, and the
server goes on answering. The rest checks the mechanism: validation stops at the first bad element of a
list or mapping, trimming unknown keys leaves the first error as it was, and a body that fails is
validated once, with FastAPI's wording.
"""

from __future__ import annotations

import json
import re
import struct
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi._compat.v2 import ModelField
from pydantic import TypeAdapter, ValidationError
from service_testlib import (
    LIMITS,
    MEGABYTE_BODY_LIMIT,
    Server,
    ThreadServer,
    assert_answers_correctly,
    assert_error,
)

from service.app import create_app
from service.limits import (
    MAX_PARAMETERS,
    MIN_SEPARATOR_BUDGET,
    check_batch_request,
    check_tag_request,
    separator_budget,
)
from service.schemas import BatchRequest, TagRequest, V2InferenceRequest
from service.settings import Settings

JSON = {"content-type": "application/json"}
BODY_LIMIT = MEGABYTE_BODY_LIMIT  # the default max_body_bytes: the reproductions are bodies of that size
MODEL_NAME = "slotfill-model"
V2_INFER = f"/v2/models/{MODEL_NAME}/infer"


def fill(prefix: bytes, unit: bytes, suffix: bytes) -> bytes:
    """``prefix`` + as many ``unit`` as fit in :data:`BODY_LIMIT` (the last one's separator dropped) + ``suffix``."""
    count = (BODY_LIMIT - len(prefix) - len(suffix)) // len(unit)
    return prefix + (unit * count)[:-1] + suffix


def unknown_fields(count: int) -> str:
    return ",".join(f'"k{index}": 1' for index in range(count))


@pytest.fixture(scope="module")
def http(megabyte_body_server: Server) -> Iterator[httpx.Client]:
    with megabyte_body_server.client() as client:
        yield client


# (name, path, body, status, code, field, words the message has)
ITEMS = LIMITS["max_batch_items"]
TOKENS = LIMITS["max_tokens"]
BUDGET = MIN_SEPARATOR_BUDGET  # the test server's limits are small: the floor is its comma budget


def count_of(prefix: bytes, unit: bytes, suffix: bytes, count: int) -> bytes:
    """``prefix`` + ``count`` times ``unit`` (the last one's separator dropped) + ``suffix``, padded with
    whitespace past 64 KiB (so that it takes the large-body path)."""
    return prefix + (unit * count)[:-1] + suffix + b" " * 70_000


ALL_VALUES = f"more JSON values than any request within the limits can hold (at most {BUDGET:,} commas)"
REPRODUCTIONS = [
    # The megabytes: refused by their commas, before anything is parsed.
    ("524,282 invalid items", "/v1/tag/batch", fill(b'{"items":[', b"1,", b"]}"), 422, "too_many_values", None,
     f"the body has 524,281 commas, {ALL_VALUES}"),
    ("349,521 empty tokens", "/v1/tag", fill(b'{"tokens":[', b'"",', b"]}"), 422, "too_many_values", None,
     "349,520 commas"),
    ("116,507 NUL tokens", "/v1/tag", fill(b'{"tokens":[', b'"\\u0000",', b"]}"), 422, "too_many_values", None,
     "116,506 commas"),
    ("empty tokens in a batch item", "/v1/tag/batch", fill(b'{"items": [{"tokens": [', b'"",', b"]}]}"), 422,
     "too_many_values", None, ALL_VALUES),
    ("349,521 empty objects as items", "/v1/tag/batch", fill(b'{"items": [', b"{},", b"]}"), 422, "too_many_values",
     None, ALL_VALUES),
    ("349,521 empty lists as items", "/v1/tag/batch", fill(b'{"items": [', b"[],", b"]}"), 422, "too_many_values",
     None, ALL_VALUES),
    # Within the comma budget, parsed: the limits apply to the parsed body before the schema sees it.
    ("90,000 invalid items", "/v1/tag/batch", count_of(b'{"items":[', b"1,", b"]}", 90_000), 422, "too_many_items",
     "items", f"90000 items; the limit is {ITEMS}"),
    ("90,000 empty tokens", "/v1/tag", count_of(b'{"tokens":[', b'"",', b"]}", 90_000), 422, "too_many_tokens",
     "tokens", f"90000 tokens; the limit is {TOKENS}"),
    ("90,000 NUL tokens", "/v1/tag", count_of(b'{"tokens":[', b'"\\u0000",', b"]}", 90_000), 422, "too_many_tokens",
     "tokens", f"90000 tokens; the limit is {TOKENS}"),
    ("empty tokens in a batch item within the budget", "/v1/tag/batch",
     count_of(b'{"items": [{"tokens": [', b'"",', b"]}]}", 90_000), 422, "too_many_tokens", "items.0.tokens",
     "tokens; the limit is"),
    ("90,000 empty lists as items", "/v1/tag/batch", count_of(b'{"items": [', b"[],", b"]}", 90_000), 422,
     "too_many_items", "items", "90000 items"),
    ("a text of control characters over max_chars", "/v1/tag",
     json.dumps({"text": "\u0000" * (LIMITS["max_chars"] + 1)}).encode(), 422, "too_long", "text",
     f"{LIMITS['max_chars'] + 1} characters"),
    ("80,000 unknown fields", "/v1/tag", f'{{"text": "a", {unknown_fields(80_000)}}}'.encode(), 422, "unknown_field",
     "k0", "unknown field 'k0'"),
    ("80,000 unknown fields after an empty text", "/v1/tag", f'{{"text": "", {unknown_fields(80_000)}}}'.encode(),
     422, "empty_text", "text", "empty"),
    ("80,000 unknown fields in an item", "/v1/tag/batch",
     f'{{"items": [{{"text": "a"}}, {{"text": "b", {unknown_fields(80_000)}}}]}}'.encode(), 422, "unknown_field",
     "items.1.k0", "unknown field"),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "field", "words"), [case[1:] for case in REPRODUCTIONS],
                         ids=[case[0] for case in REPRODUCTIONS])
def test_big_bodies_are_refused_by_their_limit(http: httpx.Client, path: str, body: bytes, status: int, code: str,
                                               field: str | None, words: str) -> None:
    assert len(body) <= BODY_LIMIT
    error = assert_error(http.post(path, content=body, headers=JSON), status, code, field)
    assert words in error["message"], error


def v2_input(shape: list[int], data: Any = None, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "text", "shape": shape, "datatype": "BYTES", **extra}
    if data is not None:
        tensor["data"] = data
    return tensor


V2_REPRODUCTIONS = [
    ("a shape of 300,000 dimensions", {"inputs": [v2_input([1] * 300_000, ["a"])]}, "too_many_values", None),
    ("a shape of 90,000 dimensions", {"inputs": [v2_input([1] * 90_000, ["a"])]}, "wrong_shape", "inputs.0.shape"),
    ("80,000 parameters", {"parameters": {f"k{i}": [1] for i in range(80_000)}, "inputs": [v2_input([1], ["a"])]},
     "too_many_parameters", "parameters"),
    ("70,000 parameters of an input", {"inputs": [v2_input([1], ["a"], parameters={
        f"k{i}": True for i in range(70_000)})]}, "too_many_parameters", "inputs.0.parameters"),
    ("524,282 inputs", fill(b'{"inputs": [', b"1,", b"]}"), "too_many_values", None),
    ("90,000 inputs", count_of(b'{"inputs": [', b"1,", b"]}", 90_000), "too_many_inputs", "inputs"),
    ("349,517 outputs", fill(b'{"inputs": [], "outputs": [', b"{},", b"]}"), "too_many_values", None),
    ("90,000 outputs", count_of(b'{"inputs": [], "outputs": [', b"{},", b"]}", 90_000), "too_many_outputs", "outputs"),
    ("250,000 texts", {"inputs": [v2_input([250_000], ["a"] * 250_000)]}, "too_many_values", None),
    ("90,000 texts", {"inputs": [v2_input([90_000], ["a"] * 90_000)]}, "too_many_items", "inputs.0.shape"),
]


def assert_v2_error(response: httpx.Response, code: str, field: str | None) -> None:
    assert response.status_code == 400, response.text
    message = response.json()["error"]
    where = rf"{re.escape(field)}: " if field else ""
    assert re.fullmatch(rf"{where}.+ \[{code}\]", message), message


@pytest.mark.parametrize(("body", "code", "field"), [case[1:] for case in V2_REPRODUCTIONS],
                         ids=[case[0] for case in V2_REPRODUCTIONS])
def test_big_inference_requests_are_refused_by_their_limit(http: httpx.Client, body: Any, code: str,
                                                           field: str | None) -> None:
    raw = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
    assert len(raw) <= BODY_LIMIT
    assert_v2_error(http.post(V2_INFER, content=raw, headers=JSON), code, field)


def test_a_binary_tensor_of_many_empty_texts_is_refused_before_it_is_read(http: httpx.Client) -> None:
    count = BODY_LIMIT // 4 - 64  # 262,080 texts of zero bytes: a 4-byte length each
    header = json.dumps({"inputs": [v2_input([count], parameters={"binary_data_size": 4 * count})]}).encode()
    body = header + struct.pack("<I", 0) * count
    assert len(body) <= BODY_LIMIT
    response = http.post(V2_INFER, content=body, headers={"inference-header-content-length": str(len(header)),
                                                          "content-type": "application/octet-stream"})
    assert_v2_error(response, "too_many_items", "inputs.0.shape")
    assert f"more than {ITEMS} texts" in response.json()["error"]


def test_three_big_bodies_at_once_leave_the_server_answering(http: httpx.Client, megabyte_body_server: Server,
                                                             predictor: Any) -> None:
    body = fill(b'{"items": [', b"1,", b"]}")
    answers: list[httpx.Response] = []

    def post() -> None:
        with megabyte_body_server.client() as client:
            answers.append(client.post("/v1/tag/batch", content=body, headers=JSON))

    threads = [threading.Thread(target=post) for _ in range(3)]
    for thread in threads:
        thread.start()
    health = http.get("/health")
    for thread in threads:
        thread.join(timeout=60)
    assert health.status_code == 200, health.text
    assert len(answers) == 3
    for answer in answers:
        assert_error(answer, 422, "too_many_values", None)
    assert_answers_correctly(http, predictor)


def test_a_large_valid_body_is_answered_as_a_small_one(http: httpx.Client) -> None:
    """Past 64 KiB a body is parsed in a worker thread (service/json_route.py): the answers are the same."""
    batch = {"items": [{"text": "book a table for 4 at chez pierre"}, {"tokens": ["cancel", "my", "booking"]},
                       {"text": "a cheap italian place near midtown", "intent_ranking": 2, "min_confidence": 0.25}]}
    small = json.dumps(batch).encode()
    large = small[:-1] + b" " * 100_000 + b"}"  # whitespace between JSON tokens means nothing
    answers = [http.post("/v1/tag/batch", content=body, headers=JSON) for body in (small, large)]
    assert [answer.status_code for answer in answers] == [200, 200], answers[1].text
    assert answers[0].json() == answers[1].json()


def test_a_repeated_key_among_thousands_is_named(http: httpx.Client) -> None:
    """An object of thousands of keys is built a thousand at a time; a repeated key is still found."""
    keys = ", ".join(f'"k{index}": {index}' for index in range(5_000))
    body = f'{{"text": "a", {keys}, "k17": 0}}'.encode() + b" " * 70_000
    assert_error(http.post("/v1/tag", content=body, headers=JSON), 422, "duplicate_field", "k17")


# ----------------------------------------------------------------------------- the mechanism
SETTINGS = Settings(**LIMITS)


def first_error(model: type, value: Any) -> dict[str, Any] | None:
    try:
        TypeAdapter(model).validate_python(value)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        return {key: error[key] for key in ("type", "loc", "msg")}
    return None


@pytest.mark.parametrize("body", [
    {"text": "a", "x": 1, "y": 2},
    {"x": 1, "text": "", "y": 2},
    {"tokens": ["a", ""], "x": 1, "text": "b", "y": 2},
    {"text": "a", "tokens": ["a"], "x": 1, "y": 2},
    {"text": 1, "intent_ranking": "2", "x": [1, 2], "y": 2},
], ids=["unknown only", "empty text first", "bad token first", "both inputs", "wrong types"])
def test_trimming_unknown_keys_keeps_the_first_error(body: dict[str, Any]) -> None:
    checked = check_tag_request(body, SETTINGS)
    assert len(checked) < len(body)  # only the first unknown key is left
    assert first_error(TagRequest, checked) == first_error(TagRequest, body) is not None
    batch = {"items": [{"text": "ok"}, body], "z": 1, "w": 2}
    checked_batch = check_batch_request(batch, SETTINGS)
    assert set(checked_batch) == {"items", "z"}
    assert first_error(BatchRequest, checked_batch) == first_error(BatchRequest, batch) is not None


def test_the_comma_budget_admits_the_largest_request_within_the_limits() -> None:
    """Every character of every text may be a comma: a full batch of such texts, each with every option, is
    within the budget, whatever the limits (the default ones and the test server's)."""
    for settings in (Settings(), SETTINGS):
        item = {"text": "," * settings.max_chars, "intent_ranking": 1, "min_confidence": 0.5, "alternatives": 2}
        tokens_item = {"tokens": [","] * settings.max_tokens}
        body = json.dumps({"items": [item, tokens_item] * (settings.max_batch_items // 2)}).encode()
        assert body.count(b",") <= separator_budget(settings)
        assert check_batch_request(json.loads(body), settings) is not None
    assert separator_budget(Settings(max_batch_items=1000, max_chars=1000)) > 1000 * 1000


def test_a_body_within_the_limits_is_left_as_it_is() -> None:
    body = {"items": [{"text": "book a table", "intent_ranking": 2}, {"tokens": ["a", "b"], "alternatives": 2}]}
    assert check_batch_request(body, SETTINGS) is body


def test_validation_stops_at_the_first_bad_element() -> None:
    every_token_empty = {"items": [{"tokens": [""] * TOKENS} for _ in range(ITEMS)]}
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(BatchRequest).validate_python(every_token_empty)
    assert caught.value.error_count() == 1
    assert caught.value.errors()[0]["loc"] == ("items", 0, "tokens", 0)
    bad_parameters = {"parameters": {f"k{i}": [i] for i in range(MAX_PARAMETERS)}, "inputs": [1] * 16}
    with pytest.raises(ValidationError) as caught:
        TypeAdapter(V2InferenceRequest).validate_python(bad_parameters)
    # The first parameter's value fails each of the four types it may have; the first input fails once.
    assert caught.value.error_count() == 5


@pytest.fixture(scope="module")
def in_process_url(predictor: Any) -> Iterator[str]:
    with ThreadServer(create_app(Settings(**LIMITS), predictor=predictor)) as base_url:
        yield base_url


@pytest.mark.parametrize(("path", "body", "code", "field", "message"), [
    ("/v1/tag/batch", {"items": [{"text": "a"}, {"text": 1}]}, "wrong_type", "items.1.text",
     "input should be a valid string"),
    ("/v1/tag", {"tokens": ["a", "b c", ""]}, "invalid_token", "tokens.1", "token contains whitespace"),
    ("/v1/tag", [], "wrong_type", None, "input should be a valid dictionary or object to extract fields from"),
])
def test_a_bad_body_is_validated_once(in_process_url: str, monkeypatch: pytest.MonkeyPatch, path: str, body: Any,
                                      code: str, field: str | None, message: str) -> None:
    validations: list[Any] = []
    validate = ModelField.validate

    def counted(self: ModelField, *args: Any, **kwargs: Any) -> Any:
        validations.append(args[0])
        return validate(self, *args, **kwargs)

    monkeypatch.setattr(ModelField, "validate", counted)
    with httpx.Client(base_url=in_process_url, timeout=30) as client:
        error = assert_error(client.post(path, json=body), 422, code, field)
        assert error["message"] == message
        assert len(validations) == 1
        assert client.post(path, json={"text": "a"} if path == "/v1/tag" else {"items": [{"text": "a"}]}
                           ).status_code == 200
        assert len(validations) == 2
