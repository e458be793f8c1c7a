"""``GET /demo``: the page as HTTP serves it (self-contained, its security headers, its metrics label, off
by a setting), then in a real headless Chromium against the real server (``-m browser``): what it marks is
exactly what ``POST /v1/tag`` answers, user text stays text, API errors are shown."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testlib import Server, ThreadServer, assert_error
from test_service_api import metric_value

from tests.browser_testlib import chromium, page_errors, screenshot  # noqa: F401 (fixtures)

REFERENCES = re.compile(r"""\b(?:src|href|action)\s*=\s*["']([^"']*)["']""")


def sha256_source(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# --------------------------------------------------------------------------- over HTTP


def test_demo_is_one_page_that_loads_nothing_else(client: httpx.Client) -> None:
    response = client.get("/demo")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert "http://" not in html and "https://" not in html and "//" not in "".join(REFERENCES.findall(html))
    # Its only references: the empty inline icon and a link to the API docs beside it.
    assert sorted(REFERENCES.findall(html)) == ["data:,", "docs"]
    assert "<script src" not in html and "<link rel=\"stylesheet\"" not in html
    assert "fetch(\"v1/tag\"" in html  # relative: the same origin, under any prefix
    # The policy admits exactly the inline script and style sheet, and requests to this origin.
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    scripts = re.findall(r"<script>(.*?)</script>", html, re.DOTALL)
    styles = re.findall(r"<style>(.*?)</style>", html, re.DOTALL)
    assert len(scripts) == len(styles) == 1
    assert policy["default-src"] == "'none'" and policy["connect-src"] == "'self'"
    assert policy["script-src"] == sha256_source(scripts[0]) and policy["style-src"] == sha256_source(styles[0])
    assert response.headers["x-content-type-options"] == "nosniff"
    # User data never goes in as markup.
    assert "innerHTML" not in html and "insertAdjacentHTML" not in html and "document.write" not in html
    assert "/demo" not in client.get("/openapi.json").json()["paths"]


def test_demo_has_its_own_metrics_label(client: httpx.Client) -> None:
    before = client.get("/metrics").text
    assert client.get("/demo").status_code == 200
    after = client.get("/metrics").text
    assert (metric_value(after, "slotfill_http_requests_total", method="GET", route="/demo", status="200")
            - metric_value(before, "slotfill_http_requests_total", method="GET", route="/demo", status="200")) == 1


def test_demo_off_is_a_404(predictor: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from service.app import create_app
    from service.settings import load_settings

    monkeypatch.setenv("SLOTFILL_DEMO", "false")
    settings = load_settings()
    assert settings.demo is False
    with ThreadServer(create_app(settings, predictor=predictor)) as base_url, httpx.Client(base_url=base_url) as http:
        assert_error(http.get("/demo"), 404, "not_found")
        assert http.post("/v1/tag", json={"text": "book a table"}).status_code == 200  # the rest is served


# --------------------------------------------------------------------------- in Chromium

# The rendered text of #tagged without the label/confidence notes: it must be the input, character for character.
TAGGED_TEXT = """const box = document.getElementById("tagged").cloneNode(true);
box.querySelectorAll(".slot-meta").forEach((node) => node.remove());
return box.textContent;"""


def training_utterance(sample_dir: Path, http: httpx.Client) -> str:
    """The first sentence of the model's training data that the model tags with two slots or more."""
    for line in (sample_dir / "train" / "seq.in").read_text(encoding="utf-8").splitlines()[:200]:
        if len(http.post("/v1/tag", json={"text": line}).json()["slots"]) >= 2:
            return line
    raise AssertionError("no training sentence gets two slots")


def open_demo(driver: Any, server: Server) -> None:
    driver.get(f"{server.base_url}/demo")
    assert driver.title == "slotfill demo"


def tag_in_page(driver: Any, text: str, *, press_enter: bool = False) -> str:
    """Type ``text``, submit it (the button, or Enter), wait for the answer; returns the output's state."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    box = driver.find_element(By.ID, "text")
    box.clear()
    if all(ord(char) <= 0xFFFF for char in text):
        box.send_keys(text)
    else:  # chromedriver types only the Basic Multilingual Plane: set the value as a paste would
        driver.execute_script("arguments[0].value = arguments[1];", box, text)
    if press_enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(By.ID, "tag").click()
    output = driver.find_element(By.ID, "output")

    def answered(_: Any) -> str | None:
        state = output.get_attribute("data-state")
        if state == "error" or (state == "done" and output.get_attribute("data-text") == text):
            return state
        return None

    return WebDriverWait(driver, 30).until(answered)


def marks_in_page(driver: Any) -> list[dict[str, Any]]:
    from selenium.webdriver.common.by import By

    marks = []
    for mark in driver.find_elements(By.CSS_SELECTOR, "#tagged mark"):
        marks.append({"label": mark.get_attribute("data-label"), "start": int(mark.get_attribute("data-start")),
                      "end": int(mark.get_attribute("data-end")),
                      "confidence": float(mark.get_attribute("data-confidence")),
                      "text": mark.find_element(By.CSS_SELECTOR, ".slot-value").get_property("textContent"),
                      "note": mark.find_element(By.CSS_SELECTOR, ".slot-meta").text,
                      "shown": mark.is_displayed()})
    return marks


def check_page_against_api(driver: Any, http: httpx.Client, text: str) -> dict[str, Any]:
    """The page's marks are the API's spans for ``text``: label, character offsets, text, confidence."""
    from selenium.webdriver.common.by import By

    ranked = min(5, len(http.get("/v1/model").json()["intents"] or []))  # what the page asks for
    body = http.post("/v1/tag", json={"text": text, **({"intent_ranking": ranked} if ranked else {})}).json()
    marks = marks_in_page(driver)
    assert [(m["label"], m["start"], m["end"], m["text"]) for m in marks] == \
        [(s["slot"], s["start"], s["end"], s["value"]) for s in body["slots"]]
    for mark, slot in zip(marks, body["slots"]):
        assert mark["shown"] and mark["confidence"] == slot["confidence"]
        assert mark["note"] == f"{slot['slot']} {100 * slot['confidence']:.1f}%"
    assert driver.execute_script(TAGGED_TEXT) == text
    slot_rows = driver.find_elements(By.CSS_SELECTOR, "#slots tbody tr")
    assert len(slot_rows) == max(1, len(body["slots"]))
    intent = driver.find_element(By.ID, "intent")
    if body["intent"] is not None:
        assert intent.get_attribute("data-name") == body["intent"]["name"]
        assert float(intent.get_attribute("data-confidence")) == body["intent"]["confidence"]
        assert f"{100 * body['intent']['confidence']:.1f}%" in intent.text
    # The ranked intents, most confident first: /v1/tag's ranking for the same text, as data and as shown.
    rows = driver.find_elements(By.CSS_SELECTOR, "#ranking li")
    shown = [{"name": row.get_attribute("data-name"), "confidence": float(row.get_attribute("data-confidence"))}
             for row in rows]
    expected = (body["intent"] or {}).get("ranking", [])
    assert shown == expected
    if body["intent"] is not None:
        assert ranked >= 2 and len(shown) == ranked, "the sample model's intents are ranked, up to 5"
    widths = []
    for index, (row, entry) in enumerate(zip(rows, expected)):
        assert row.get_attribute("data-rank") == str(index + 1) and row.is_displayed()
        assert row.find_element(By.CSS_SELECTOR, ".name").text == entry["name"]
        assert row.find_element(By.CSS_SELECTOR, ".confidence").text == f"{100 * entry['confidence']:.1f}%"
        width = row.find_element(By.CSS_SELECTOR, ".bar").value_of_css_property("width")
        widths.append(float(width.removesuffix("px")))
    assert widths == sorted(widths, reverse=True), "a bar per intent, as long as its confidence"
    if body["intent"] is not None and expected:
        assert expected[0] == {"name": body["intent"]["name"], "confidence": body["intent"]["confidence"]}
    return body


@pytest.mark.browser
def test_the_page_marks_exactly_the_spans_the_api_answers(chromium: Any, server: Server, sample_dir: Path,
                                                         screenshot: Any) -> None:
    with server.client() as http:
        text = training_utterance(sample_dir, http)
        open_demo(chromium, server)
        assert tag_in_page(chromium, text) == "done"
        body = check_page_against_api(chromium, http, text)
        assert len(body["slots"]) >= 2
        assert not page_errors(chromium)  # no script error, nothing refused by the page's policy
        screenshot(chromium, "demo-tagged")
        # Offsets are code points: an emoji (two UTF-16 units in JavaScript) before the slots moves no mark.
        emoji = "\N{GRINNING FACE} " + text
        assert tag_in_page(chromium, emoji) == "done"
        assert check_page_against_api(chromium, http, emoji)["slots"]
        assert not page_errors(chromium)


@pytest.mark.browser
def test_markup_in_the_text_is_shown_as_text(chromium: Any, server: Server, screenshot: Any) -> None:
    from selenium.webdriver.common.by import By

    text = "<b>book</b> a table for 4 at <i>chez pierre</i> <img src=x onerror=alert(1)>"
    with server.client() as http:
        open_demo(chromium, server)
        assert tag_in_page(chromium, text) == "done"
        check_page_against_api(chromium, http, text)
    tagged = chromium.find_element(By.ID, "tagged")
    assert not tagged.find_elements(By.CSS_SELECTOR, "b, i, img")
    assert not chromium.find_elements(By.TAG_NAME, "img")
    assert "<b>book</b>" in tagged.text
    screenshot(chromium, "demo-markup-as-text")
    # Characters but no tokens: answered with nothing to mark and no intent, and shown so.
    assert tag_in_page(chromium, "?!") == "done"
    assert not tagged.find_elements(By.TAG_NAME, "mark") and tagged.text == "?!"
    assert chromium.find_element(By.ID, "intent").text == "No intent."
    assert chromium.find_element(By.CSS_SELECTOR, "#slots tbody").text == "no slots"


@pytest.mark.browser
def test_api_errors_are_shown_as_text(chromium: Any, server: Server, screenshot: Any) -> None:
    from selenium.webdriver.common.by import By

    open_demo(chromium, server)
    assert tag_in_page(chromium, "   ", press_enter=True) == "error"  # Enter submits too
    error = chromium.find_element(By.ID, "error")
    assert error.text == "422 empty_text: text is empty or only whitespace (field text)"
    assert not chromium.find_element(By.ID, "output").is_displayed()
    assert tag_in_page(chromium, "x " * 300) == "error"  # over the test server's max_chars (400)
    assert error.text.startswith("422 too_long: text has 600 characters; the limit is 400")
    screenshot(chromium, "demo-error")
    # The next good request clears the error.
    assert tag_in_page(chromium, "book a table for 4 at chez pierre") == "done"
    assert error.text == "" and not error.is_displayed()
