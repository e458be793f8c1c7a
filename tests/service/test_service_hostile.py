"""Hostile input against a real server process: whatever arrives, a 200 that is consistent or a
4xx in the JSON error shape that names the problem -- never a 5xx.

``test_service_errors.py`` has the everyday bad requests; this file has the adversarial ones:
any Unicode text (hypothesis, one server for every example), lone surrogates, nesting far past
the parser's limit, numbers no float holds, repeated keys, odd content types, and admin tokens
that are almost right. The server here allows 1 MiB bodies (the other limits are
``service_testlib.LIMITS``) so the big payloads reach the parser instead of the 413.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from service_testlib import (
    LIMITS,
    MEGABYTE_BODY_LIMIT,
    Server,
    ThreadServer,
    assert_answers_correctly,
    assert_error,
)

from service.app import create_app
from service.routers import admin as admin_router
from service.settings import Settings

JSON = {"content-type": "application/json"}
MAX_CHARS = LIMITS["max_chars"]
BODY_LIMIT = MEGABYTE_BODY_LIMIT
# What a text that is not tagged may be refused for (all 422s on the field "text").
TEXT_REFUSALS = {"empty_text", "invalid_characters", "too_long", "too_many_tokens"}


@pytest.fixture(scope="module")
def http(megabyte_body_server: Server) -> Iterator[httpx.Client]:
    with megabyte_body_server.client() as client:
        yield client


def check_offsets(body: dict[str, Any], text: str) -> None:
    for token in body["tokens"]:
        assert token["text"] == text[token["start"]:token["end"]], (token, text)
    for slot in body["slots"]:
        assert slot["value"] == text[slot["start"]:slot["end"]], (slot, text)


def assert_4xx_shape(response: httpx.Response) -> dict[str, Any]:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:500])
    error = response.json()["error"]
    assert set(error) == {"code", "message", "field"} and error["code"] and error["message"], error
    return error


# ----------------------------------------------------------------------------- any text (hypothesis)
WORDS = ["book", "a", "table", "at", "chez", "pierre", "for", "4", "tomorrow", "7pm", "italian", "near", "midtown"]
any_text = st.one_of(
    st.text(max_size=MAX_CHARS + 20),  # every category but surrogates (which JSON text cannot carry)
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(min_size=1, max_size=4)), max_size=60).map(" ".join),
)


@settings(max_examples=200, deadline=None)
@given(text=any_text, escaped=st.booleans())
def test_any_text_gets_a_consistent_200_or_a_4xx(http: httpx.Client, text: str, escaped: bool) -> None:
    # escaped: non-ASCII sent as \\u escapes (astral characters as surrogate pairs), else as UTF-8
    body = json.dumps({"text": text}, ensure_ascii=escaped).encode("utf-8")
    response = http.post("/v1/tag", content=body, headers=JSON)
    if response.status_code == 200:
        check_offsets(response.json(), text)
    else:
        error = assert_4xx_shape(response)
        assert response.status_code == 422 and error["code"] in TEXT_REFUSALS and error["field"] == "text", error


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=40), surrogate=st.integers(0xD800, 0xDFFF), where=st.integers(0, 40),
       as_tokens=st.booleans())
def test_a_lone_surrogate_escape_is_a_422(http: httpx.Client, text: str, surrogate: int, where: int,
                                         as_tokens: bool) -> None:
    """``"\\ud800"`` is valid JSON text but not a Unicode string the model can be given."""
    poisoned = text[:where] + chr(surrogate) + text[where:]
    body = {"tokens": [poisoned]} if as_tokens else {"text": poisoned}
    raw = json.dumps(body, ensure_ascii=True).encode("ascii")  # the surrogate travels as a \\udxxx escape
    assert b"\\u%x" % surrogate in raw.lower()
    error = assert_4xx_shape(http.post("/v1/tag", content=raw, headers=JSON))
    if as_tokens:
        assert error["code"] in {"invalid_characters", "invalid_token"} and error["field"] == "tokens.0", error
    else:
        assert error["code"] == "invalid_characters" and error["field"] == "text", error


def test_surrogate_pair_escapes_are_one_character(http: httpx.Client) -> None:
    text = "book \U0001f363 sushi at \U0001d54a\U0001d566 for two"
    raw = json.dumps({"text": text}).encode("ascii")
    assert b"\\ud83c\\udf63" in raw
    response = http.post("/v1/tag", content=raw, headers=JSON)
    assert response.status_code == 200, response.text
    check_offsets(response.json(), text)


# ----------------------------------------------------------------------------- hostile bodies
DEEP = 100_000
TEN_THOUSAND_DIGITS = b"7" * 10_000
ITEMS_60K = json.dumps({"items": [{"text": "a"}] * 60_000}).encode()
# (name, path, raw body, status, code, field)
HOSTILE_BODIES = [
    ("100k nested arrays", "/v1/tag", b"[" * DEEP + b"]" * DEEP, 400, "invalid_json", None),
    ("100k unclosed arrays", "/v1/tag", b"[" * DEEP, 400, "invalid_json", None),
    ("100k nested objects", "/v1/tag", b'{"a":' * DEEP + b"1" + b"}" * DEEP, 400, "invalid_json", None),
    ("100k nested in text", "/v1/tag", b'{"text": ' + b"[" * DEEP + b"]" * DEEP + b"}", 400, "invalid_json", None),
    ("100k nested in an item", "/v1/tag/batch", b'{"items": [' + b"[" * DEEP + b"]" * DEEP + b"]}", 400,
     "invalid_json", None),
    ("deep nesting after a duplicate key", "/v1/tag", b'[{"a": 1, "a": 2}, ' + b"[" * DEEP + b"]" * DEEP + b"]",
     400, "invalid_json", None),
    ("1e999999 as text", "/v1/tag", b'{"text": 1e999999}', 422, "wrong_type", "text"),
    ("-1e999999 as text", "/v1/tag", b'{"text": -1e999999}', 422, "wrong_type", "text"),
    ("1e999999 as a token", "/v1/tag", b'{"tokens": ["a", 1e999999]}', 422, "wrong_type", "tokens.1"),
    ("1e-999999 as text", "/v1/tag", b'{"text": 1e-999999}', 422, "wrong_type", "text"),
    ("10,000-digit integer as text", "/v1/tag", b'{"text": ' + TEN_THOUSAND_DIGITS + b"}", 400, "invalid_json",
     None),
    ("10,000-digit integer in an item", "/v1/tag/batch", b'{"items": [{"text": ' + TEN_THOUSAND_DIGITS + b"}]}", 400,
     "invalid_json", None),
    ("10,000-digit decimal as text", "/v1/tag", b'{"text": ' + TEN_THOUSAND_DIGITS + b".5}", 422, "wrong_type",
     "text"),
    ("NaN", "/v1/tag", b'{"text": NaN}', 400, "invalid_json", None),
    ("Infinity", "/v1/tag", b'{"tokens": [Infinity]}', 400, "invalid_json", None),
    ("-Infinity", "/v1/tag/batch", b'{"items": [{"text": -Infinity}]}', 400, "invalid_json", None),
    # Repeated keys are refused, naming the key: last-one-wins would let a proxy that reads the
    # first one see another request than the one served.
    ("duplicate key", "/v1/tag", b'{"text": "a", "text": "b"}', 422, "duplicate_field", "text"),
    ("duplicate key, same value", "/v1/tag", b'{"text": "a", "text": "a"}', 422, "duplicate_field", "text"),
    ("duplicate key, escaped", "/v1/tag", b'{"text": "a", "t\\u0065xt": "b"}', 422, "duplicate_field", "text"),
    ("duplicate key in an item", "/v1/tag/batch", b'{"items": [{"text": "a"}, {"text": "a", "text": "b"}]}', 422,
     "duplicate_field", "items.1.text"),
    ("duplicate items", "/v1/tag/batch", b'{"items": [{"text": "a"}], "items": [{"text": "b"}]}', 422,
     "duplicate_field", "items"),
    ("null body", "/v1/tag/batch", b"null", 422, "wrong_type", None),
    ("top-level array", "/v1/tag/batch", b'[{"items": [{"text": "a"}]}]', 422, "wrong_type", None),
    ("top-level number", "/v1/tag", b"1e999999", 422, "wrong_type", None),
    ("BOM before the JSON", "/v1/tag", b'\xef\xbb\xbf{"text": "a"}', 400, "invalid_json", None),
    ("NUL after the JSON", "/v1/tag", b'{"text": "a"}\x00', 400, "invalid_json", None),
    ("CESU-8 surrogate bytes", "/v1/tag", b'{"text": "\xed\xa0\x80"}', 400, "invalid_utf8", None),
    ("20,000 unknown fields", "/v1/tag", json.dumps({"text": "a", **{f"k{i}": i for i in range(20_000)}}).encode(),
     422, "unknown_field", "k0"),
    ("100,000 tokens", "/v1/tag", json.dumps({"tokens": ["a"] * 100_000}).encode(), 422, "too_many_tokens",
     "tokens"),
    ("60,000 items", "/v1/tag/batch", ITEMS_60K, 422, "too_many_items", "items"),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "field"), [case[1:] for case in HOSTILE_BODIES],
                         ids=[case[0] for case in HOSTILE_BODIES])
def test_hostile_bodies_are_4xx(http: httpx.Client, path: str, body: bytes, status: int, code: str,
                                field: str | None) -> None:
    assert len(body) <= BODY_LIMIT
    assert_error(http.post(path, content=body, headers=JSON), status, code, field)


def test_duplicate_key_in_a_reload_body(megabyte_body_server: Server, http: httpx.Client) -> None:
    headers = {**JSON, "Authorization": f"Bearer {megabyte_body_server.admin_token}"}
    body = json.dumps({"model_dir": str(megabyte_body_server.model_dir)})[:-1].encode() + b', "model_dir": "/elsewhere"}'
    assert_error(http.post("/v1/admin/reload", content=body, headers=headers), 422, "duplicate_field", "model_dir")


MULTIPART = (b'--XyZ\r\nContent-Disposition: form-data; name="text"\r\n\r\nbook a table\r\n--XyZ--\r\n')
# (name, raw body, headers)
WRONG_TRANSPORT = [
    ("text/plain", b'{"text": "book a table"}', {"content-type": "text/plain"}),
    ("form-encoded", b"text=book+a+table", {"content-type": "application/x-www-form-urlencoded"}),
    ("form-encoded JSON", b'{"text": "book a table"}', {"content-type": "application/x-www-form-urlencoded"}),
    ("no content type", b'{"text": "book a table"}', {}),
    ("multipart", MULTIPART, {"content-type": "multipart/form-data; boundary=XyZ"}),
    ("multipart with a JSON part", b'--XyZ\r\nContent-Type: application/json\r\n\r\n{"text": "a"}\r\n--XyZ--\r\n',
     {"content-type": "multipart/form-data; boundary=XyZ"}),
    ("xml", b"<text>book a table</text>", {"content-type": "application/xml"}),
    ("garbage content type", b'{"text": "book a table"}', {"content-type": ";;;=\"=;"}),
    ("huge content type", b'{"text": "book a table"}', {"content-type": "application/" + "x" * 4000}),
]


@pytest.mark.parametrize("path", ["/v1/tag", "/v1/tag/batch"])
@pytest.mark.parametrize(("body", "headers"), [case[1:] for case in WRONG_TRANSPORT],
                         ids=[case[0] for case in WRONG_TRANSPORT])
def test_wrong_content_types_are_415(http: httpx.Client, path: str, body: bytes, headers: dict[str, str]) -> None:
    assert_error(http.post(path, content=body, headers=headers), 415, "unsupported_media_type")


@pytest.mark.parametrize("headers", [{}, JSON, {"content-type": "text/plain"}, {"content-type": "multipart/form-data"}],
                         ids=["none", "json", "text", "multipart"])
@pytest.mark.parametrize("path", ["/v1/tag", "/v1/tag/batch"])
def test_an_empty_body_is_missing_body(http: httpx.Client, path: str, headers: dict[str, str]) -> None:
    assert_error(http.post(path, content=b"", headers=headers), 422, "missing_body")


def test_hostile_requests_leave_the_server_answering_correctly(http: httpx.Client, predictor: Any) -> None:
    for _, path, body, *_ in HOSTILE_BODIES:
        assert_4xx_shape(http.post(path, content=body, headers=JSON))
    for _, body, headers in WRONG_TRANSPORT:
        for path in ("/v1/tag", "/v1/tag/batch"):
            assert http.post(path, content=body, headers=headers).status_code == 415
    assert_answers_correctly(http, predictor)


# ----------------------------------------------------------------------------- admin tokens
def near_misses(token: str) -> list[tuple[str, bytes]]:
    last = token[-1]
    flipped = chr(ord(last) ^ 1)
    basic = base64.b64encode(f"admin:{token}".encode()).decode()
    return [
        ("last character differs", f"Bearer {token[:-1]}{flipped}".encode()),
        ("a prefix of the token", f"Bearer {token[:-1]}".encode()),
        ("first character only", f"Bearer {token[0]}".encode()),
        ("the token and more", f"Bearer {token}0".encode()),
        ("the token twice", f"Bearer {token}{token}".encode()),
        ("other case", f"Bearer {token.upper()}".encode()),
        ("token then a word", f"Bearer {token} extra".encode()),
        ("Basic scheme", f"Basic {basic}".encode()),
        ("Basic scheme, bare token", f"Basic {token}".encode()),
        ("Token scheme", f"Token {token}".encode()),
        ("no scheme", token.encode()),
        ("scheme only", b"Bearer"),
        ("latin-1 bytes", b"Bearer " + token[:-1].encode() + b"\xe9"),
        ("8 KB token", b"Bearer " + b"x" * 8192),
    ]


def test_admin_rejects_near_miss_tokens(megabyte_body_server: Server, http: httpx.Client) -> None:
    body = {"model": "x"}  # a bad body: the right token gets a 422 for it, so nothing is reloaded here
    token = megabyte_body_server.admin_token
    for name, value in near_misses(token):
        response = http.post("/v1/admin/reload", json=body, headers={"Authorization": value})
        assert response.status_code == 401, (name, response.status_code, response.text)
        assert_error(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == "Bearer", name
    assert_error(http.post("/v1/admin/reload", json=body), 401, "unauthorized")
    # The control: the same request with the right token gets past authentication.
    assert_error(http.post("/v1/admin/reload", json=body, headers={"Authorization": f"Bearer {token}"}), 422,
                 "unknown_field", "model")


def test_the_token_is_checked_with_compare_digest(predictor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The constant-time property, checked without timing: every presented token goes through
    ``compare_digest`` and its answer alone decides (no ``==`` short-cut before or after it)."""
    token = "s3cret-admin-token-42"
    real = hmac.compare_digest
    calls: list[tuple[Any, Any]] = []
    verdict: list[bool] = []  # empty: the real comparison; else this answer

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return verdict[0] if verdict else real(a, b)

    for module in (admin_router.hmac, secrets):  # whichever the router uses
        monkeypatch.setattr(module, "compare_digest", spy)
    app = create_app(Settings(**LIMITS, admin_token=token), predictor=predictor, loader=lambda path: predictor)
    body = {"model": "x"}  # 422 once past authentication: nothing is reloaded
    with ThreadServer(app) as base_url, httpx.Client(base_url=base_url, timeout=30) as http:
        presented = [value for _, value in near_misses(token) if value.startswith(b"Bearer ")]
        for value in presented:
            before = len(calls)
            assert_error(http.post("/v1/admin/reload", json=body, headers={"Authorization": value}), 401,
                         "unauthorized")
            assert len(calls) == before + 1, value
            sent, expected = calls[-1]
            assert expected == token.encode() and sent == value.split(b" ", 1)[1].decode("latin-1").encode()
        assert_error(http.post("/v1/admin/reload", json=body, headers={"Authorization": f"Bearer {token}"}), 422,
                     "unknown_field", "model")
        assert len(calls) == len(presented) + 1
        # Its answer decides: "equal" lets a wrong token in, "different" keeps the right one out.
        verdict.append(True)
        assert_error(http.post("/v1/admin/reload", json=body, headers={"Authorization": "Bearer wrong"}), 422,
                     "unknown_field", "model")
        verdict[0] = False
        assert_error(http.post("/v1/admin/reload", json=body, headers={"Authorization": f"Bearer {token}"}), 401,
                     "unauthorized")
