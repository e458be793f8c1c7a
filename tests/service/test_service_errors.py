"""Every kind of bad request gets the JSON error shape with the right 4xx -- never a 500.

Against the real server process (limits from ``service_testlib.LIMITS``).
"""

from __future__ import annotations

import json

import httpx
import pytest
from service_testlib import LIMITS, assert_answers_correctly, assert_error

JSON = {"content-type": "application/json"}
MAX_CHARS, MAX_TOKENS, MAX_ITEMS, MAX_BODY = (LIMITS[key] for key in ("max_chars", "max_tokens", "max_batch_items",
                                                                    "max_body_bytes"))

# (name, path, JSON body, status, code, field)
JSON_CASES = [
    ("empty text", "/v1/tag", {"text": ""}, 422, "empty_text", "text"),
    ("whitespace text", "/v1/tag", {"text": " \t\n\r "}, 422, "empty_text", "text"),
    ("unicode whitespace", "/v1/tag", {"text": "\u00a0\u2003\u3000"}, 422, "empty_text", "text"),
    ("NUL in text", "/v1/tag", {"text": "book\x00a table"}, 422, "invalid_characters", "text"),
    ("escape in text", "/v1/tag", {"text": "book \x1b[31m a table"}, 422, "invalid_characters", "text"),
    ("DEL in text", "/v1/tag", {"text": "book\x7f"}, 422, "invalid_characters", "text"),
    ("C1 control in text", "/v1/tag", {"text": "book\x85a table"}, 422, "invalid_characters", "text"),
    ("vertical tab in text", "/v1/tag", {"text": "book\x0ba table"}, 422, "invalid_characters", "text"),
    ("text too long", "/v1/tag", {"text": "a" * (MAX_CHARS + 1)}, 422, "too_long", "text"),
    ("too many tokens in text", "/v1/tag", {"text": "a " * (MAX_TOKENS + 1)}, 422, "too_many_tokens", "text"),
    ("too many tokens", "/v1/tag", {"tokens": ["a"] * (MAX_TOKENS + 1)}, 422, "too_many_tokens", "tokens"),
    ("tokens too long", "/v1/tag", {"tokens": ["a" * (MAX_CHARS // 2)] * 3}, 422, "too_long", "tokens"),
    ("empty tokens", "/v1/tag", {"tokens": []}, 422, "empty_tokens", "tokens"),
    ("empty token", "/v1/tag", {"tokens": ["book", ""]}, 422, "invalid_token", "tokens.1"),
    ("token with space", "/v1/tag", {"tokens": ["book a"]}, 422, "invalid_token", "tokens.0"),
    ("token with tab", "/v1/tag", {"tokens": ["ok", "book\t"]}, 422, "invalid_token", "tokens.1"),
    ("token with NUL", "/v1/tag", {"tokens": ["bo\x00ok"]}, 422, "invalid_characters", "tokens.0"),
    ("text and tokens", "/v1/tag", {"text": "a", "tokens": ["a"]}, 422, "text_and_tokens", None),
    ("neither", "/v1/tag", {}, 422, "missing_input", None),
    ("both null", "/v1/tag", {"text": None, "tokens": None}, 422, "missing_input", None),
    ("text is a number", "/v1/tag", {"text": 12}, 422, "wrong_type", "text"),
    ("text is a list", "/v1/tag", {"text": ["a"]}, 422, "wrong_type", "text"),
    ("tokens is a string", "/v1/tag", {"tokens": "book a table"}, 422, "wrong_type", "tokens"),
    ("token is a number", "/v1/tag", {"tokens": ["a", 3]}, 422, "wrong_type", "tokens.1"),
    ("body is a list", "/v1/tag", [{"text": "a"}], 422, "wrong_type", None),
    ("body is a string", "/v1/tag", "book a table", 422, "wrong_type", None),
    ("body is null", "/v1/tag", None, 422, "wrong_type", None),
    ("unknown field", "/v1/tag", {"text": "a", "lang": "en"}, 422, "unknown_field", "lang"),
    ("batch: unknown field in item", "/v1/tag/batch", {"items": [{"text": "a"}, {"text": "b", "x": 1}]}, 422,
     "unknown_field", "items.1.x"),
    ("batch: bad item", "/v1/tag/batch", {"items": [{"text": "a"}] * 3 + [{"text": " "}]}, 422, "empty_text",
     "items.3.text"),
    ("batch: item too long", "/v1/tag/batch", {"items": [{"text": "a"}, {"text": "a" * (MAX_CHARS + 1)}]}, 422,
     "too_long", "items.1.text"),
    ("batch: bad token in item", "/v1/tag/batch", {"items": [{"text": "a"}, {"tokens": ["a", "b c"]}]}, 422,
     "invalid_token", "items.1.tokens.1"),
    ("batch: item too many tokens", "/v1/tag/batch", {"items": [{"tokens": ["a"] * (MAX_TOKENS + 1)}]}, 422,
     "too_many_tokens", "items.0.tokens"),
    ("batch: item with both", "/v1/tag/batch", {"items": [{"text": "a"}, {"text": "a", "tokens": ["a"]}]}, 422,
     "text_and_tokens", "items.1"),
    ("batch: too many items", "/v1/tag/batch", {"items": [{"text": "a"}] * (MAX_ITEMS + 1)}, 422,
     "too_many_items", "items"),
    ("batch: empty", "/v1/tag/batch", {"items": []}, 422, "empty_batch", "items"),
    ("batch: items missing", "/v1/tag/batch", {}, 422, "missing_field", "items"),
    ("batch: items not a list", "/v1/tag/batch", {"items": {"text": "a"}}, 422, "wrong_type", "items"),
    ("batch: item not an object", "/v1/tag/batch", {"items": ["a"]}, 422, "wrong_type", "items.0"),
    ("batch: unknown top-level field", "/v1/tag/batch", {"items": [{"text": "a"}], "n": 1}, 422, "unknown_field",
     "n"),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "field"), [case[1:] for case in JSON_CASES],
                         ids=[case[0] for case in JSON_CASES])
def test_invalid_json_bodies(client: httpx.Client, path: str, body: object, status: int, code: str,
                             field: str | None) -> None:
    response = client.post(path, content=json.dumps(body).encode(), headers=JSON)
    assert_error(response, status, code, field)


# (name, raw body, headers, status, code, field)
RAW_CASES = [
    ("no body", b"", {}, 422, "missing_body", None),
    ("no body, json type", b"", JSON, 422, "missing_body", None),
    ("invalid JSON", b'{"text": "a"', JSON, 400, "invalid_json", None),
    ("trailing garbage", b'{"text": "a"} x', JSON, 400, "invalid_json", None),
    ("single quotes", b"{'text': 'a'}", JSON, 400, "invalid_json", None),
    ("invalid UTF-8", b'{"text": "caf\xe9"}', JSON, 400, "invalid_utf8", None),
    ("overlong UTF-8", b'{"text": "\xc0\xaf"}', JSON, 400, "invalid_utf8", None),
    ("UTF-16 body", '{"text": "a"}'.encode("utf-16"), JSON, 400, "invalid_utf8", None),
    ("nesting too deep", b"[" * 20_000 + b"]" * 20_000, JSON, 400, "invalid_json", None),
    ("integer too long", b'{"text": ' + b"9" * 5000 + b"}", JSON, 400, "invalid_json", None),
    ("lone surrogate", b'{"text": "a\\ud800b"}', JSON, 422, "invalid_characters", "text"),
    ("lone surrogate in a key", b'{"text": "a", "\\udc00": 1}', JSON, 422, "invalid_characters", None),
    ("text/plain", b'{"text": "a"}', {"content-type": "text/plain"}, 415, "unsupported_media_type", None),
    ("no content type", b'{"text": "a"}', {}, 415, "unsupported_media_type", None),
    ("form", b"text=a", {"content-type": "application/x-www-form-urlencoded"}, 415, "unsupported_media_type",
     None),
    ("latin-1 charset", b'{"text": "a"}', {"content-type": "application/json; charset=latin-1"}, 415,
     "unsupported_media_type", None),
]


@pytest.mark.parametrize(("body", "headers", "status", "code", "field"), [case[1:] for case in RAW_CASES],
                         ids=[case[0] for case in RAW_CASES])
def test_invalid_raw_bodies(client: httpx.Client, body: bytes, headers: dict, status: int, code: str,
                            field: str | None) -> None:
    error = assert_error(client.post("/v1/tag", content=body, headers=headers), status, code, field)
    if code == "invalid_utf8":
        assert "UTF-8" in error["message"]


def test_json_with_charset_and_suffix_types_are_fine(client: httpx.Client) -> None:
    body = b'{"text": "book a table"}'
    for content_type in ("application/json; charset=utf-8", "application/json;charset=UTF-8",
                         "application/vnd.slotfill+json"):
        assert client.post("/v1/tag", content=body, headers={"content-type": content_type}).status_code == 200


def test_tab_and_newline_are_whitespace(client: httpx.Client) -> None:
    response = client.post("/v1/tag", json={"text": "book\ta table\nnow\r\n"})
    assert response.status_code == 200
    assert [token["text"] for token in response.json()["tokens"]] == ["book", "a", "table", "now"]


def test_body_too_large_with_content_length(client: httpx.Client) -> None:
    body = json.dumps({"text": "a" * (MAX_BODY + 10)}).encode()
    response = client.post("/v1/tag", content=body, headers=JSON)
    assert_error(response, 413, "body_too_large")


def test_body_too_large_chunked(client: httpx.Client) -> None:
    def chunks():
        yield b'{"text": "'
        for _ in range(MAX_BODY // 1024 + 2):
            yield b"a" * 1024
        yield b'"}'

    response = client.post("/v1/tag", content=chunks(), headers=JSON)  # no Content-Length: chunked
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert_error(response, 413, "body_too_large")


def test_body_under_the_limit_chunked_is_fine(client: httpx.Client) -> None:
    def chunks():
        yield b'{"text": '
        yield b'"book a table"}'

    response = client.post("/v1/tag", content=chunks(), headers=JSON)
    assert response.status_code == 200, response.text


def test_body_limit_applies_to_every_route(client: httpx.Client) -> None:
    big = b"x" * (MAX_BODY + 1)
    assert_error(client.post("/v1/tag/batch", content=big, headers=JSON), 413, "body_too_large")
    assert_error(client.post("/v1/admin/reload", content=big, headers=JSON), 413, "body_too_large")


def test_unknown_route_and_wrong_method(client: httpx.Client) -> None:
    assert_error(client.get("/v2/tag"), 404, "not_found")
    assert_error(client.post("/nope", json={"text": "a"}), 404, "not_found")
    response = client.get("/v1/tag")
    assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "POST"
    assert_error(client.delete("/v1/model"), 405, "method_not_allowed")
    assert_error(client.put("/v1/tag/batch", json={"items": []}), 405, "method_not_allowed")


def test_query_strings_and_odd_paths_are_harmless(client: httpx.Client) -> None:
    assert client.post("/v1/tag?debug=1", json={"text": "a"}).status_code == 200
    assert_error(client.get("/v1/model/%00"), 404, "not_found")
    assert_error(client.get("/" + "a" * 5000), 404, "not_found")


def test_bad_requests_leave_the_server_answering_correctly(client: httpx.Client, predictor: object) -> None:
    for _, path, body, status, *_ in JSON_CASES:
        assert client.post(path, content=json.dumps(body).encode(), headers=JSON).status_code == status
    for _, body, headers, status, *_ in RAW_CASES:
        assert client.post("/v1/tag", content=body, headers=headers).status_code == status
    assert client.post("/v1/tag", content=b"x" * (MAX_BODY + 1), headers=JSON).status_code == 413
    assert_answers_correctly(client, predictor)


@pytest.mark.parametrize("path", ["/health", "/ready"])
def test_a_405_on_the_probes_lists_get_and_head(client: httpx.Client, path: str) -> None:
    response = client.post(path, json={})
    error = assert_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET, HEAD"
    assert error["message"].endswith("allowed: GET, HEAD"), error


@pytest.mark.parametrize(("body", "field", "message"), [
    (b'{"text": "a\\ud800b"}', "text", "text contains a lone surrogate U+D800 at index 1 (not valid Unicode)"),
    (b'{"tokens": ["ok", "\\udfff"]}', "tokens.1", "token contains a lone surrogate U+DFFF (not valid Unicode)"),
    (b'{"text": "a\\u0007b"}', "text", "text contains a control character U+0007 at index 1"),
])
def test_a_lone_surrogate_is_named_as_one(client: httpx.Client, body: bytes, field: str, message: str) -> None:
    error = assert_error(client.post("/v1/tag", content=body, headers=JSON), 422, "invalid_characters", field)
    assert error["message"] == message, error
