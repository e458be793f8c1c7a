"""Error analysis: the span error classes, errors.jsonl, report.html and compare.html."""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

from slotfill.scoring.errors import ERROR_KINDS, SpanError, analyse_errors, classify_span_errors
from slotfill.scoring.metrics import evaluate, sentence_matches
from slotfill.scoring.reporting import write_report

# --------------------------------------------------------------------------- the classes


@pytest.mark.parametrize(("gold", "predicted", "expected"), [
    # right: no error at all
    ([("city", 1, 3)], [("city", 1, 3)], []),
    ([], [], []),
    # missed: no prediction overlaps the gold span
    ([("city", 1, 3)], [], [SpanError("missed", ("city", 1, 3), None)]),
    ([("city", 1, 3)], [("date", 3, 4)], [SpanError("missed", ("city", 1, 3), None),
                                         SpanError("spurious", None, ("date", 3, 4))]),
    # spurious: the prediction overlaps no gold span
    ([], [("city", 0, 1)], [SpanError("spurious", None, ("city", 0, 1))]),
    # wrong_type: same edges, another label
    ([("fromloc", 2, 4)], [("toloc", 2, 4)], [SpanError("wrong_type", ("fromloc", 2, 4), ("toloc", 2, 4))]),
    # wrong_boundary: same label, other edges (shorter, longer, shifted)
    ([("city", 1, 3)], [("city", 1, 2)], [SpanError("wrong_boundary", ("city", 1, 3), ("city", 1, 2))]),
    ([("city", 1, 3)], [("city", 0, 3)], [SpanError("wrong_boundary", ("city", 1, 3), ("city", 0, 3))]),
    ([("city", 1, 3)], [("city", 2, 4)], [SpanError("wrong_boundary", ("city", 1, 3), ("city", 2, 4))]),
    # wrong_boundary_and_type: overlapping, other edges and label
    ([("city", 1, 3)], [("state", 2, 5)], [SpanError("wrong_boundary_and_type", ("city", 1, 3), ("state", 2, 5))]),
])
def test_each_error_class(gold, predicted, expected):
    assert classify_span_errors(gold, predicted) == expected


def test_one_prediction_over_two_gold_spans_pairs_with_the_larger_overlap_and_misses_the_other():
    # "new york city" as one city span; gold has city [0, 2) and a one-word district [2, 3)
    errors = classify_span_errors([("city", 0, 2), ("district", 2, 3)], [("city", 0, 3)])
    assert errors == [SpanError("wrong_boundary", ("city", 0, 2), ("city", 0, 3)),
                      SpanError("missed", ("district", 2, 3), None)]
    # Equal overlaps: the gold span of the prediction's own label wins, whichever comes first.
    errors = classify_span_errors([("a", 0, 2), ("b", 2, 4)], [("b", 1, 3)])
    assert errors == [SpanError("missed", ("a", 0, 2), None), SpanError("wrong_boundary", ("b", 2, 4), ("b", 1, 3))]
    # Equal overlaps, neither label: the leftmost.
    errors = classify_span_errors([("a", 0, 2), ("b", 2, 4)], [("c", 1, 3)])
    assert [e.kind for e in errors] == ["wrong_boundary_and_type", "missed"] and errors[0].gold == ("a", 0, 2)


def test_two_predictions_splitting_one_gold_span_are_two_errors_naming_it():
    errors = classify_span_errors([("city", 0, 4)], [("city", 0, 2), ("state", 2, 4)])
    assert errors == [SpanError("wrong_boundary", ("city", 0, 4), ("city", 0, 2)),
                      SpanError("wrong_boundary_and_type", ("city", 0, 4), ("state", 2, 4))]


def test_a_correct_span_beside_errors_is_left_alone():
    gold = [("a", 0, 1), ("b", 2, 3), ("c", 4, 6)]
    predicted = [("a", 0, 1), ("b", 2, 4), ("d", 7, 8)]
    errors = classify_span_errors(gold, predicted)
    assert errors == [SpanError("wrong_boundary", ("b", 2, 3), ("b", 2, 4)), SpanError("missed", ("c", 4, 6), None),
                      SpanError("spurious", None, ("d", 7, 8))]
    # Every wrong prediction is in exactly one error; every gold span not predicted exactly in at least one.
    assert sorted(e.predicted for e in errors if e.predicted) == [("b", 2, 4), ("d", 7, 8)]
    assert {e.gold for e in errors if e.gold} == {("b", 2, 3), ("c", 4, 6)}


# --------------------------------------------------------------------------- a corpus

TOKENS = [["fly", "from", "<script>alert(1)</script>", "to", "boston"],
          ["from", "new", "york", "today"],
          ["hello", "there"],
          ["to", "denver", "tomorrow"],
          ["from", "denver"]]
GOLD = [["O", "O", "B-fromloc", "O", "B-toloc"],
        ["O", "B-fromloc", "I-fromloc", "B-date"],
        ["O", "O"],
        ["O", "B-toloc", "B-date"],
        ["O", "B-fromloc"]]
PRED = [["O", "O", "B-toloc", "O", "B-toloc"],      # wrong_type
        ["O", "B-fromloc", "O", "O"],                # wrong_boundary, missed
        ["B-date", "O"],                             # spurious
        ["O", "B-toloc", "B-date"],                  # tags right, intent wrong
        ["O", "B-fromloc"]]                          # exact match
GOLD_INTENTS = ["flight", "flight", "greet", "flight", "flight"]
PRED_INTENTS = ["flight", "flight", "greet", "airfare", "flight"]


def test_the_analysis_lists_exactly_the_sentences_exact_match_does_not_count():
    report = evaluate(GOLD, PRED, GOLD_INTENTS, PRED_INTENTS)
    analysis = analyse_errors(TOKENS, GOLD, PRED, GOLD_INTENTS, PRED_INTENTS)
    assert [s.index for s in analysis.sentences] == [0, 1, 2, 3]
    assert len(analysis.sentences) == round((1 - report["exact_match"]) * report["n_sentences"]) == 4
    assert analysis.error_counts == {"missed": 1, "spurious": 1, "wrong_type": 1, "wrong_boundary": 1,
                                     "wrong_boundary_and_type": 0}
    assert analysis.intent_errors == 1
    # Token level: every token once; gold "york" (fromloc) predicted O, "today" (date) predicted O.
    assert sum(sum(row.values()) for row in analysis.confusion.values()) == report["n_tokens"]
    assert analysis.confusion["fromloc"] == {"toloc": 1, "fromloc": 2, "O": 1}
    assert analysis.confusion["O"]["date"] == 1
    assert analysis.confusion_types() == ["O", "date", "fromloc", "toloc"]
    # The worst first: most span errors, then a wrong intent, then corpus order.
    assert [s.index for s in analysis.worst()] == [1, 0, 2, 3]
    rows = [json.loads(line) for line in analysis.jsonl().splitlines()]
    assert rows[1]["errors"] == [
        {"kind": "wrong_boundary", "gold": {"label": "fromloc", "start": 1, "end": 3, "words": "new york"},
         "predicted": {"label": "fromloc", "start": 1, "end": 2, "words": "new"}},
        {"kind": "missed", "gold": {"label": "date", "start": 3, "end": 4, "words": "today"}, "predicted": None}]
    assert rows[3]["errors"] == [] and rows[3]["intent_correct"] is False and rows[3]["predicted_intent"] == "airfare"
    assert rows[0]["text"] == "fly from <script>alert(1)</script> to boston"


def test_without_gold_intents_sentences_are_judged_on_their_tags():
    analysis = analyse_errors(TOKENS, GOLD, PRED, None, PRED_INTENTS)
    assert [s.index for s in analysis.sentences] == [0, 1, 2]
    assert all(s.intent_correct is None for s in analysis.sentences)
    assert sentence_matches(["O"], ["O"], None, "anything") and not sentence_matches(["O"], ["O"], "a", None)


# --------------------------------------------------------------------------- the page


class PageReader(HTMLParser):
    """What a test needs of a page: the tables by id (rows of (text, attributes) cells), every URL-bearing
    attribute, the marks, and whether a <script> element exists."""

    def __init__(self, page: str):
        super().__init__()
        self.tables: dict[str, list[list[tuple[str, dict]]]] = {}
        self.urls: list[str] = []
        self.marks: list[dict] = []
        self.scripts = 0
        self._table: str | None = None
        self._cell: tuple[list[str], dict] | None = None
        self._mark: dict | None = None
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.urls += [value for name, value in attrs.items() if name in ("src", "href", "action", "data") and value]
        if tag == "script":
            self.scripts += 1
        elif tag == "link":
            self.urls.append(attrs.get("href", ""))
        elif tag == "table":
            self._table = attrs.get("id", f"table{len(self.tables)}")
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = ([], attrs)
        elif tag == "mark" and "data-side" in attrs:
            self._mark = {**attrs, "text": ""}

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append(("".join(self._cell[0]).strip(), self._cell[1]))
            self._cell = None
        elif tag == "table":
            self._table = None
        elif tag == "mark" and self._mark is not None:
            self.marks.append(self._mark)
            self._mark = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[0].append(data)
        if self._mark is not None:
            self._mark["text"] += data


def check_per_slot(page: PageReader, report: dict) -> None:
    """The page's per-slot table holds report.json's numbers: shown in percent, exact in data-value."""
    header, *rows = page.tables["per-slot"]
    assert [text for text, _ in header] == ["slot", "precision", "recall", "f1", "support"]
    assert {row[0][0] for row in rows} == set(report["per_slot"]) and len(rows) == len(report["per_slot"])
    for row in rows:
        expected = report["per_slot"][row[0][0]]
        for (text, attrs), key in zip(row[1:], ("precision", "recall", "f1", "support")):
            assert attrs["data-key"] == key
            if key == "support":
                assert int(text) == int(attrs["data-value"]) == expected["support"]
            else:
                assert text == f"{100 * expected[key]:.2f}" and float(attrs["data-value"]) == expected[key]
    overall = {attrs["data-key"]: (text, attrs["data-value"]) for row in page.tables["overall"][1:]
               for text, attrs in row[1:]}
    for key in ("slot_precision", "slot_recall", "slot_f1", "exact_match"):
        assert overall[key] == (f"{100 * report[key]:.2f}", repr(report[key]))


def assert_fetches_nothing(page: PageReader, text: str) -> None:
    assert page.scripts == 0
    assert all(url.startswith("data:image/png;base64,") for url in page.urls), page.urls
    assert "http://" not in text and "https://" not in text


def test_write_report_with_errors_writes_the_page_and_errors_jsonl(tmp_path):
    report = evaluate(GOLD, PRED, GOLD_INTENTS, PRED_INTENTS)
    analysis = analyse_errors(TOKENS, GOLD, PRED, GOLD_INTENTS, PRED_INTENTS)
    figures = tmp_path / "model"
    figures.mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"not really a picture"
    (figures / "training_curves.png").write_bytes(png)
    paths = write_report(report, tmp_path / "out", title="<b>title</b>", errors=analysis, figures_from=[figures])
    out = tmp_path / "out"
    assert [p.name for p in paths] == ["report.json", "report.txt", "errors.jsonl", "report.html"]
    assert sorted(os.listdir(out)) == ["errors.jsonl", "report.html", "report.json", "report.txt"]  # no temp files
    assert len((out / "errors.jsonl").read_text().splitlines()) == 4
    text = (out / "report.html").read_text(encoding="utf-8")
    page = PageReader(text)
    check_per_slot(page, json.loads((out / "report.json").read_text()))
    assert_fetches_nothing(page, text)
    assert len(page.urls) == 1 and png == __import__("base64").b64decode(page.urls[0].split(",", 1)[1])
    # The token <script> is shown as text, never as an element; so is the title.
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "<b>title</b>" not in text and "&lt;b&gt;title&lt;/b&gt;" in text
    # The marks: one per span on each side, with the class of its error.
    marks = {(m["data-side"], m["data-label"], int(m["data-start"]), int(m["data-end"])): m for m in page.marks}
    assert marks[("gold", "fromloc", 2, 3)]["class"] == "wrong_type"
    assert marks[("predicted", "toloc", 2, 3)]["text"].startswith("<script>alert(1)</script>")
    assert marks[("predicted", "toloc", 4, 5)]["class"] == "correct"
    assert marks[("gold", "date", 3, 4)]["class"] == "missed"
    assert marks[("predicted", "fromloc", 1, 2)]["class"] == "wrong_boundary"
    assert marks[("predicted", "date", 0, 1)]["class"] == "spurious"
    counts = {attrs["data-kind"]: int(text) for row in page.tables["error-counts"][1:] for text, attrs in row[2:]}
    assert counts == {**analysis.error_counts, "intent": 1}
    confusion = page.tables["confusion"]
    columns = [text for text, _ in confusion[0][1:]]
    assert columns == ["O", "date", "fromloc", "toloc"]
    cells = {(row[0][0], column): int(text) for row in confusion[1:] for column, (text, _) in zip(columns, row[1:])}
    assert cells[("fromloc", "toloc")] == 1 and cells[("fromloc", "O")] == 1 and sum(cells.values()) == 16


def test_write_report_refuses_an_analysis_of_other_predictions(tmp_path):
    report = evaluate(GOLD, GOLD, GOLD_INTENTS, GOLD_INTENTS)  # every sentence right
    analysis = analyse_errors(TOKENS, GOLD, PRED, GOLD_INTENTS, PRED_INTENTS)
    with pytest.raises(ValueError, match="error analysis lists 4 sentences"):
        write_report(report, tmp_path, errors=analysis)
    assert os.listdir(tmp_path) == []


# --------------------------------------------------------------------------- slotfill evaluate and training


def test_evaluate_writes_errors_and_page(sample_model_dir, sample_dir, tmp_path):
    from slotfill.data import load_corpus
    from slotfill.inference.predictor import Predictor
    from training.cli import main

    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(sample_model_dir), "--data", str(sample_dir), "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    # Counted here from the tagger's own answers: the sentences with a tag or the intent wrong.
    test = load_corpus(sample_dir).test
    predictions = Predictor.load(sample_model_dir).predict_tokens([e.tokens for e in test])
    wrong = [i for i, (e, p) in enumerate(zip(test, predictions))
             if list(e.tags) != list(p.labels) or (p.intent and p.intent.name) != e.intent]
    assert 0 < len(wrong) < len(test)  # some right, some wrong: the count means something
    assert [row["index"] for row in rows] == wrong
    assert len(rows) == round((1 - report["exact_match"]) * report["n_sentences"])
    for row in rows:
        example = test[row["index"]]
        assert row["tokens"] == list(example.tokens) and row["gold_intent"] == example.intent
        assert {e["kind"] for e in row["errors"]} <= set(ERROR_KINDS)
        assert row["errors"] or row["intent_correct"] is False
    text = (out / "report.html").read_text(encoding="utf-8")
    page = PageReader(text)
    check_per_slot(page, report)
    assert_fetches_nothing(page, text)
    assert len(page.urls) >= 1  # the model's training curves, embedded


def test_training_puts_the_error_analysis_in_the_artifact(sample_model_dir):
    manifest = json.loads((sample_model_dir / "manifest.json").read_text())
    assert {"errors.jsonl", "report.html"} <= set(manifest["files"])
    report = json.loads((sample_model_dir / "report.json").read_text())
    rows = (sample_model_dir / "errors.jsonl").read_text().splitlines()
    assert len(rows) == round((1 - report["exact_match"]) * report["n_sentences"])
    text = (sample_model_dir / "report.html").read_text(encoding="utf-8")
    page = PageReader(text)
    check_per_slot(page, report)
    assert_fetches_nothing(page, text)
    assert len(page.urls) >= 2  # training curves and the span reliability diagram, written before the page


# --------------------------------------------------------------------------- compare.html


def test_compare_html_holds_the_tables_cells(tmp_path):
    from training.compare import comparison_table

    def run(seed: int, f1: float, single: float, batched: float) -> dict:
        return {"seed": seed, "slot_f1": f1, "intent_accuracy": 0.9, "split": "test", "train_seconds": 10.0 + seed,
                "epochs": 3, "train_sentences_per_second": 100.0, "parameters": 12345,
                "tag_single_per_second": single, "tag_batch64_per_second": batched}

    results = {"bigru": [run(0, 0.91, 1400, 3600), run(1, 0.93, 1500, 3500)], "<crf>": [run(0, 0.9, 1057, 24)]}
    table = comparison_table(results, Path("data"), 2, tmp_path)
    md_rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
               for line in table.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    text = (tmp_path / "compare.html").read_text(encoding="utf-8")
    page = PageReader(text)
    html_rows = [[cell for cell, _ in row] for row in page.tables["comparison"]]
    assert html_rows == md_rows and len(html_rows) == 3
    assert html_rows[2][0] == "<crf>" and "&lt;crf&gt;" in text and html_rows[2][-1] == "24 †"
    assert "† Implausible: &lt;crf&gt;" in text
    assert_fetches_nothing(page, text)
    assert sorted(os.listdir(tmp_path)) == ["compare.html", "compare.md"]
