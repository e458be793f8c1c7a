"""Offsets are Unicode code-point indices into the request text: ``text[start:end]`` is exact.

Hand-picked hard cases against the server process, then a property test (hypothesis) against
the app in-process: every input either gets a consistent 200 or the 422 our rules predict.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.app import create_app
from service.schemas import bad_character
from service.settings import Settings

UNICODE_TEXTS = [
    "book a table at café müller for 4 tomorrow at 7pm",
    "book a table at cafe\u0301 mu\u0308ller tomorrow",  # decomposed accents (combining marks)
    "réserver une table chez pierre à 20h",
    "book a table at 東京 sushi for two tonight",
    "予約 したい 明日 7時 に 四人",
    "book 🍣 sushi for 👨‍👩‍👧‍👦 family of four at 7pm",  # ZWJ emoji sequence
    "book a table 👍🏽 at bella napoli",  # skin tone modifier
    "book\u200ba\u200ctable\u200d at chez\u2060pierre",  # zero-width space / non-joiner / joiner / word joiner
    "\ufeffbook a table at chez pierre",  # BOM as the first character
    "book a table at \U0001d54a\U0001d566\U0001d563 tonight",  # astral-plane letters
    "حجز طاولة في مطعم الليلة",  # right-to-left
    "book a table\u2028for two\u2029tonight",  # line / paragraph separators
    "Ｂｏｏｋ ａ ｔａｂｌｅ ｆｏｒ ｔｗｏ",  # full-width
    "book a table at ǅemal's for \u0661\u0662 people",  # titlecase digraph, Arabic-Indic digits
    "z\u0335\u0321\u0300a\u0337\u0322\u0301l\u0336\u0323\u0302g\u0334\u0324\u0303o book a table",  # zalgo
]


def check_offsets(body: dict[str, Any], text: str) -> None:
    assert body["labels"] == [token["label"] for token in body["tokens"]]
    end = 0
    for token in body["tokens"]:
        assert end <= token["start"] < token["end"] <= len(text)
        assert text[token["start"]:token["end"]] == token["text"]
        end = token["end"]
    for slot in body["slots"]:
        assert text[slot["start"]:slot["end"]] == slot["value"]


@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_offsets_of_unicode_text(client: httpx.Client, text: str) -> None:
    response = client.post("/v1/tag", json={"text": text})
    assert response.status_code == 200, response.text
    check_offsets(response.json(), text)


def test_unicode_batch_and_tokens(client: httpx.Client) -> None:
    items = [{"text": text} for text in UNICODE_TEXTS] + [{"tokens": text.split()} for text in UNICODE_TEXTS[:4]]
    response = client.post("/v1/tag/batch", json={"items": items[:16]})
    assert response.status_code == 200, response.text
    slots = 0
    for item, answer in zip(items, response.json()["items"]):
        check_offsets(answer, item.get("text") or " ".join(item["tokens"]))
        slots += len(answer["slots"])
    assert slots > 0, "no slots at all: the offset checks on slots were vacuous"


def test_unicode_is_sent_back_as_utf8(client: httpx.Client) -> None:
    text = "book a table at 東京 🍣"
    response = client.post("/v1/tag", json={"text": text})
    assert response.headers["content-type"].startswith("application/json")
    for token in ("東", "京", "🍣"):  # 東京 is two tokens, one a character
        assert f'"text":"{token}"'.encode() in response.content  # UTF-8 JSON, whether or not escaped elsewhere
    check_offsets(response.json(), text)


# ----------------------------------------------------------------------------- property test, in-process
MAX_CHARS, MAX_TOKENS = 120, 24


@pytest.fixture(scope="module")
def app_client(predictor: Any) -> Iterator[TestClient]:
    app = create_app(Settings(max_chars=MAX_CHARS, max_tokens=MAX_TOKENS), predictor=predictor)
    with TestClient(app, raise_server_exceptions=True) as http:
        yield http


def expected_text_error(text: str, predictor: Any) -> str | None:
    """The first problem, in the service's order: the size limit (checked on the parsed body, before the
    schema), the schema's rules, then the model's token count."""
    if len(text) > MAX_CHARS:
        return "too_long"
    if not text.strip():
        return "empty_text"
    if bad_character(text) is not None:
        return "invalid_characters"
    if len(predictor.tokenize(text)) > MAX_TOKENS:
        return "too_many_tokens"
    return None


words = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
texts = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=MAX_CHARS + 10),
    st.lists(words, max_size=30).map(" ".join),
    st.lists(st.sampled_from(["book", "a", "table", "at", "chez", "pierre", "for", "4", "7pm", "\t", "\n", "🍣",
                              "é", "e\u0301", "\u200b", "東京", "\u00a0"]), max_size=40).map("".join),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts)
def test_any_text_gets_a_consistent_answer(app_client: TestClient, predictor: Any, text: str) -> None:
    response = app_client.post("/v1/tag", json={"text": text})
    expected = expected_text_error(text, predictor)
    if expected is None:
        assert response.status_code == 200, response.text
        check_offsets(response.json(), text)
    else:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == expected
        assert response.json()["error"]["field"] == "text"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tokens=st.lists(words, max_size=MAX_TOKENS + 2))
def test_any_tokens_get_a_consistent_answer(app_client: TestClient, tokens: list[str]) -> None:
    response = app_client.post("/v1/tag", json={"tokens": tokens})
    joined = " ".join(tokens)
    # The size limits first (checked on the parsed body, before the schema), then the first bad token.
    expected = "too_many_tokens" if len(tokens) > MAX_TOKENS else "too_long" if len(joined) > MAX_CHARS else None
    if expected is None and not tokens:
        expected = "empty_tokens"
    for token in tokens if expected is None else ():  # the first bad token decides
        if any(char.isspace() for char in token):
            expected = "invalid_token"
        elif bad_character(token, frozenset()) is not None:
            expected = "invalid_characters"
        if expected:
            break
    if expected is None:
        assert response.status_code == 200, response.text
        body = response.json()
        check_offsets(body, joined)
        assert [token["text"] for token in body["tokens"]] == tokens
    else:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == expected, response.text


def test_control_character_rule_matches_unicode_categories() -> None:
    """The regexes in schemas.py flag exactly Unicode Cc and Cs (text: except tab, LF, CR)."""
    for code_point in range(0x110000):
        char = chr(code_point)
        control = unicodedata.category(char) in ("Cc", "Cs")
        assert (bad_character(char) is not None) == (control and char not in "\t\n\r"), hex(code_point)
        assert (bad_character(char, frozenset()) is not None) == control, hex(code_point)
    assert bad_character("ok\tthen\x00", frozenset()) == (2, "\t")
    assert bad_character("ok\tthen\x00") == (7, "\x00")
