"""report.html in a real headless Chromium (``-m browser``): ``slotfill evaluate`` writes errors.jsonl and the
page for the session's sample model, the page is opened from its file, and what the browser shows is checked
against errors.jsonl line by line: the counts by error class, the confusion table's off-diagonal cells, and
every mark of the worst sentences (side, label, token start and end, words, error class)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from slotfill.scoring.errors import ERROR_KINDS, OUTSIDE
from slotfill.scoring.html_report import WORST_SENTENCES
from tests.browser_testlib import chromium, page_errors, screenshot  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

# The worst sentences as the browser has them: each mark's attributes and its words (its first text node;
# the label note after it is a child element).
SENTENCES = """return Array.from(document.querySelectorAll("div.sentence")).map((sentence) => ({
  index: Number(sentence.dataset.index),
  summary: sentence.firstElementChild.textContent,
  marks: Array.from(sentence.querySelectorAll("mark[data-side]")).map((mark) => ({
    side: mark.dataset.side, kind: mark.dataset.kind, cls: mark.className, label: mark.dataset.label,
    start: Number(mark.dataset.start), end: Number(mark.dataset.end), words: mark.firstChild.textContent,
    shown: mark.getBoundingClientRect().width > 0})),
  intents: Array.from(sentence.querySelectorAll("[data-intent]")).map((node) => ({
    intent: node.dataset.intent, wrong: node.classList.contains("intent-wrong")})),
}));"""


@pytest.fixture(scope="module")
def evaluated(sample_model_dir: Path, sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``slotfill evaluate --out DIR`` for the sample model: report.json, errors.jsonl and report.html."""
    from training.cli import main

    out = tmp_path_factory.mktemp("evaluate")
    assert main(["evaluate", "--model", str(sample_model_dir), "--data", str(sample_dir), "--out", str(out)]) == 0
    return out


def span(side: dict | None) -> tuple[str, int, int] | None:
    return None if side is None else (side["label"], side["start"], side["end"])


def expected_kind(row: dict, mark_span: tuple[str, int, int], side: str) -> str:
    """What html_report marks a span as: the class of the first error naming it on its side, else correct."""
    return next((error["kind"] for error in row["errors"] if span(error[side]) == mark_span), "correct")


def token_types(n: int, spans: list[dict]) -> list[str]:
    types = [OUTSIDE] * n
    for s in spans:
        types[s["start"]:s["end"]] = [s["label"]] * (s["end"] - s["start"])
    return types


def test_report_page_in_chromium_matches_errors_jsonl(chromium: Any, evaluated: Path, screenshot: Any) -> None:
    from selenium.webdriver.common.by import By

    rows = {row["index"]: row for row in map(json.loads, (evaluated / "errors.jsonl").read_text().splitlines())}
    report = json.loads((evaluated / "report.json").read_text())
    assert rows, "the sample model should get some sentences wrong"
    chromium.get((evaluated / "report.html").resolve().as_uri())
    assert chromium.find_element(By.TAG_NAME, "h1").text
    # A self-contained page: the browser fetched nothing to show it (figures are data: URIs) and logged no error.
    resources = chromium.execute_script("return performance.getEntriesByType('resource').map((e) => e.name);")
    assert all(name.startswith("data:") for name in resources), resources
    assert not page_errors(chromium)
    screenshot(chromium, "report-top")

    chromium.execute_script("arguments[0].scrollIntoView();", chromium.find_element(By.XPATH, "//h2[.='Errors']"))
    screenshot(chromium, "report-errors")

    # Errors by class: the table's counts are errors.jsonl's.
    shown = {cell.get_attribute("data-kind"): int(cell.text)
             for cell in chromium.find_elements(By.CSS_SELECTOR, "#error-counts td[data-kind]")}
    counted = Counter(error["kind"] for row in rows.values() for error in row["errors"])
    assert shown == {**{kind: counted[kind] for kind in ERROR_KINDS},
                     "intent": sum(row["intent_correct"] is False for row in rows.values())}
    assert f"{len(rows)} of {report['n_sentences']} sentences are not exact matches" in \
        chromium.find_element(By.ID, "error-counts").find_element(By.XPATH, "preceding-sibling::p[1]").text

    # Confusion: a sentence that is an exact match has the same type on both sides at every token, so the
    # off-diagonal cells come from errors.jsonl's sentences alone.
    cells = {(cell.get_attribute("data-gold"), cell.get_attribute("data-predicted")): int(cell.text)
             for cell in chromium.find_elements(By.CSS_SELECTOR, "#confusion td[data-predicted]")}
    off = Counter()
    for row in rows.values():
        n = len(row["tokens"])
        off.update((g, p) for g, p in zip(token_types(n, row["gold_spans"]), token_types(n, row["predicted_spans"]))
                   if g != p)
    assert {key: count for key, count in cells.items() if key[0] != key[1] and count} == dict(off)
    if "n_tokens" in report:
        assert sum(cells.values()) == report["n_tokens"]

    # The worst sentences: the ones with the most span errors, each mark one of the sentence's spans in
    # errors.jsonl with the class its errors give it.
    sentences = chromium.execute_script(SENTENCES)
    assert len(sentences) == min(WORST_SENTENCES, len(rows))
    errors_shown = [len(rows[s["index"]]["errors"]) for s in sentences]
    assert errors_shown == sorted(errors_shown, reverse=True)
    hidden = [len(row["errors"]) for index, row in rows.items() if index not in {s["index"] for s in sentences}]
    assert not hidden or max(hidden) <= errors_shown[-1]
    for sentence in sentences:
        row = rows[sentence["index"]]
        assert sentence["summary"].startswith(f"#{row['index']}: {len(row['errors'])} span error(s)")
        for side in ("gold", "predicted"):
            marks = [m for m in sentence["marks"] if m["side"] == side]
            assert [(m["label"], m["start"], m["end"], m["words"]) for m in marks] == \
                [(s["label"], s["start"], s["end"], s["words"]) for s in row[f"{side}_spans"]]
            for mark in marks:
                mark_span = (mark["label"], mark["start"], mark["end"])
                assert mark["kind"] == mark["cls"] == expected_kind(row, mark_span, side), (row, mark)
                assert mark["shown"]
        # Every error is on the page: a missed one as its gold mark, any other as its predicted mark.
        marked = Counter(m["kind"] for m in sentence["marks"]
                         if m["kind"] != "correct" and (m["side"] == "predicted") != (m["kind"] == "missed"))
        assert marked == Counter(error["kind"] for error in row["errors"])
        if row["gold_intent"] is not None:
            assert [(i["intent"], i["wrong"]) for i in sentence["intents"]] == \
                [(row["gold_intent"], False), (str(row["predicted_intent"]), row["intent_correct"] is False)]

    worst = chromium.find_element(By.XPATH, "//h2[.='Worst sentences']")
    chromium.execute_script("arguments[0].scrollIntoView();", worst)
    screenshot(chromium, "report-worst-sentences")
