"""Self-contained HTML pages: an evaluation report (report.html) and the comparison table (compare.html).

A page fetches nothing: its CSS is inline and its figures are PNGs embedded as base64 ``data:`` URIs, so
it can be mailed, archived or opened offline and always shows what it showed when it was written. Every
piece of text (tokens, labels, titles) goes through :func:`html.escape`: a token ``<script>`` is shown,
never run. Pages are plain f-strings; no template engine.

Numbers are read from the same report dict that report.json holds (no recomputation), shown in percent
with two decimals as in report.txt; each cell also carries the exact value in ``data-value`` so a test
or a script can read the page without rounding.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from pathlib import Path

from slotfill.scoring.errors import ERROR_KINDS, OUTSIDE, ErrorAnalysis, SentenceErrors
from slotfill.scoring.reporting import headline_labels, pct, sorted_slots

__all__ = ["FIGURES", "html_page", "html_table", "report_html", "find_figures", "comparison_html"]

# The PNGs a report embeds when it finds them (training and `slotfill calibrate` write them into a model
# folder), with their captions, in page order.
FIGURES = (
    ("training_curves.png", "Training curves: losses and dev scores per epoch (the kept epoch marked)"),
    ("reliability_span.png", "Reliability of slot span confidences, before and after calibration"),
    ("reliability_intent.png", "Reliability of intent confidences, before and after calibration"),
)

WORST_SENTENCES = 50

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 80em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.zero { color: #bbb; }
td.diagonal { background: #e6f4e6; }
td.off { background: #fbe3e3; }
caption { text-align: left; font-style: italic; padding-bottom: 0.3em; }
.sentence { border-top: 1px solid #ddd; padding: 0.5em 0; }
.side { margin: 0.2em 0; line-height: 2; }
.side b { display: inline-block; width: 6em; }
mark { padding: 0.1em 0.2em; border-radius: 0.2em; border: 2px solid; background: none; }
mark .label { font-size: 0.7em; vertical-align: sub; margin-left: 0.2em; }
mark.correct { border-color: #2a2; background: #e6f4e6; }
mark.missed { border-color: #e80; background: #fff1dc; }
mark.spurious { border-color: #d22; background: #fbe3e3; }
mark.wrong_type { border-color: #92c; background: #f3e3fb; }
mark.wrong_boundary { border-color: #26c; background: #e3ecfb; }
mark.wrong_boundary_and_type { border-color: #842; background: #f1e6dc; }
.intent-wrong { color: #d22; font-weight: bold; }
figure img { max-width: 100%; }
"""

_KIND_MEANING = {
    "correct": "the same label, start and end on both sides",
    "missed": "a gold span no prediction was paired with (none overlaps it, or the one that does covers a "
              "gold span it shares more tokens with)",
    "spurious": "a predicted span that overlaps no gold span",
    "wrong_type": "the same edges as the gold span, another label",
    "wrong_boundary": "overlaps a gold span of the same label, other edges",
    "wrong_boundary_and_type": "overlaps a gold span of another label, other edges",
}


def html_page(title: str, body: str) -> str:
    """A complete, self-contained HTML document: ``title`` (escaped here) and ``body`` (already HTML)."""
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{escape(title)}</title>\n'
            f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{escape(title)}</h1>\n{body}\n</body>\n</html>\n")


def _cell(value, tag: str = "td") -> str:
    """A cell from a plain value (escaped) or from ``(text, attributes)``: attributes are a dict of
    HTML attributes (values escaped), e.g. ``{"class": "num", "data-value": 0.5}``."""
    if isinstance(value, tuple):
        text, attributes = value
        attrs = "".join(f' {name}="{escape(str(v))}"' for name, v in attributes.items())
        return f"<{tag}{attrs}>{escape(str(text))}</{tag}>"
    return f"<{tag}>{escape(str(value))}</{tag}>"


def html_table(headers: Sequence, rows: Iterable[Sequence], *, table_id: str | None = None,
               caption: str | None = None, row_attributes: Sequence[Mapping[str, str]] | None = None) -> str:
    """An HTML table: a header row, then one ``<tr>`` per row; cells as :func:`_cell` takes them.

    Every row must have as many cells as there are headers (``ValueError`` otherwise), as in
    :func:`slotfill.scoring.reporting.markdown_table`.
    """
    out = [f'<table id="{escape(table_id)}">' if table_id else "<table>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(_cell(h, "th") for h in headers) + "</tr></thead>\n<tbody>")
    for index, row in enumerate(rows):
        if len(row) != len(headers):
            raise ValueError(f"row {index} has {len(row)} cells, expected {len(headers)}")
        extra = row_attributes[index] if row_attributes else {}
        attrs = "".join(f' {k}="{escape(str(v))}"' for k, v in extra.items())
        out.append(f"<tr{attrs}>" + "".join(_cell(value) for value in row) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _score(value, key: str) -> tuple[str, dict]:
    return pct(value), {"class": "num", "data-key": key, "data-value": "" if value is None else repr(float(value))}


def _headline(report: Mapping) -> str:
    rows = [[label, _score(report.get(key), key)] for key, label in headline_labels(report)]
    if "n_sentences" in report:
        rows.append(["Sentences", (report["n_sentences"], {"class": "num", "data-key": "n_sentences",
                                                          "data-value": report["n_sentences"]})])
    if "n_tokens" in report:
        rows.append(["Tokens", (report["n_tokens"], {"class": "num", "data-key": "n_tokens",
                                                    "data-value": report["n_tokens"]})])
    return html_table(["metric", "%"], rows, table_id="overall",
                      caption="Overall scores in percent (seqeval default mode unless marked strict).")


def _per_slot(report: Mapping) -> str:
    slots = sorted_slots(report.get("per_slot") or {})
    if not slots:
        return "<p>No slot spans in the gold or the predictions.</p>"
    def support(row: Mapping) -> tuple[int, dict]:
        value = int(row.get("support", 0))
        return value, {"class": "num", "data-key": "support", "data-value": value}

    rows = [[name, _score(row.get("precision"), "precision"), _score(row.get("recall"), "recall"),
             _score(row.get("f1"), "f1"), support(row)] for name, row in slots]
    return html_table(["slot", "precision", "recall", "f1", "support"], rows, table_id="per-slot",
                      caption="Per slot type, by support (gold spans); precision, recall and F1 in percent.",
                      row_attributes=[{"data-slot": name} for name, _ in slots])


def _confusion(analysis: ErrorAnalysis) -> str:
    types = analysis.confusion_types()
    rows = []
    for gold in types:
        row: list = [(gold, {"data-gold": gold})]
        for pred in types:
            count = analysis.confusion.get(gold, {}).get(pred, 0)
            kind = "zero" if not count else "diagonal" if gold == pred else "off"
            row.append((count, {"class": f"num {kind}", "data-gold": gold, "data-predicted": pred}))
        rows.append(row)
    return html_table(["gold \\ predicted", *types], rows, table_id="confusion",
                      caption=f"Token-level confusion of slot types: each token counts once, in the row of the "
                              f"gold span covering it and the column of the predicted span covering it "
                              f"({OUTSIDE} where no span covers it). Spans are read in the data's tag scheme.")


def _error_counts(analysis: ErrorAnalysis) -> str:
    rows = [[(kind, {"class": kind}), _KIND_MEANING[kind],
             (analysis.error_counts.get(kind, 0), {"class": "num", "data-kind": kind})] for kind in ERROR_KINDS]
    rows.append(["intent", "a sentence whose predicted intent does not match its gold intent",
                 (analysis.intent_errors, {"class": "num", "data-kind": "intent"})])
    wrong = len(analysis.sentences)
    return (f"<p>{wrong} of {analysis.n_sentences} sentences are not exact matches (a tag or the intent wrong); "
            f"errors.jsonl holds each of them.</p>\n"
            + html_table(["error", "meaning", "count"], rows, table_id="error-counts",
                         caption="Span errors by class (each predicted span that is wrong is in exactly one; "
                                 "a prediction overlapping several gold spans is paired with the one it shares "
                                 "the most tokens with) and intent errors."))


def _side(sentence: SentenceErrors, side: str) -> str:
    """The sentence's tokens with one side's spans marked; each mark names its error class."""
    spans = sentence.gold_spans if side == "gold" else sentence.predicted_spans
    starts = {start: (label, start, end) for label, start, end in spans}
    out, i, tokens = [], 0, sentence.tokens
    while i < len(tokens):
        if i in starts:
            label, start, end = starts[i]
            kind = sentence.kind_of(starts[i], side)
            out.append(f'<mark class="{kind}" data-side="{side}" data-kind="{kind}" data-label="{escape(label)}" '
                       f'data-start="{start}" data-end="{end}">{escape(" ".join(tokens[start:end]))}'
                       f'<span class="label">{escape(label)}</span></mark>')
            i = end
        else:
            out.append(escape(tokens[i]))
            i += 1
    return " ".join(out)


def _intent(sentence: SentenceErrors, side: str) -> str:
    if sentence.gold_intent is None:
        return ""
    value = sentence.gold_intent if side == "gold" else sentence.predicted_intent
    wrong = side == "predicted" and not sentence.intent_correct
    css = ' class="intent-wrong"' if wrong else ""
    return f' <span{css} data-intent="{escape(str(value))}">[{escape(str(value))}]</span>'


def _worst(analysis: ErrorAnalysis, limit: int) -> str:
    worst = analysis.worst(limit)
    if not worst:
        return "<p>Every sentence is an exact match.</p>"
    legend = " ".join(f'<mark class="{kind}">{kind}</mark>' for kind in ("correct", *ERROR_KINDS))
    parts = [f"<p>The {len(worst)} sentences with the most span errors (a wrong intent breaks ties), of "
             f"{len(analysis.sentences)} that are not exact matches. Marks: {legend}</p>"]
    for sentence in worst:
        errors = "; ".join(
            f"{error.kind}: " + " → ".join(f"{side} {escape(span[0])} [{span[1]}, {span[2]})"
                                           for side, span in (("gold", error.gold), ("predicted", error.predicted))
                                           if span)
            for error in sentence.errors) or "no span errors"
        parts.append(f'<div class="sentence" data-index="{sentence.index}">'
                     f'<div>#{sentence.index}: {len(sentence.errors)} span error(s): {errors}</div>'
                     f'<div class="side"><b>gold</b> {_side(sentence, "gold")}{_intent(sentence, "gold")}</div>'
                     f'<div class="side"><b>predicted</b> {_side(sentence, "predicted")}'
                     f'{_intent(sentence, "predicted")}</div></div>')
    return "\n".join(parts)


def find_figures(folders: Iterable[str | Path]) -> list[tuple[str, bytes]]:
    """The :data:`FIGURES` found, as ``(caption, png bytes)``: each from the first folder that holds it."""
    folders = [Path(folder) for folder in folders]
    found = []
    for name, caption in FIGURES:
        for folder in folders:
            path = folder / name
            if path.is_file():
                found.append((f"{caption} ({path})", path.read_bytes()))
                break
    return found


def _figures(figures: Sequence[tuple[str, bytes]]) -> str:
    return "\n".join(f'<figure><img alt="{escape(caption)}" src="data:image/png;base64,'
                     f'{base64.b64encode(png).decode("ascii")}"><figcaption>{escape(caption)}</figcaption></figure>'
                     for caption, png in figures)


def report_html(report: Mapping, analysis: ErrorAnalysis, *, title: str | None = None,
                figures: Sequence[tuple[str, bytes]] = (), worst: int = WORST_SENTENCES) -> str:
    """report.html: the report's overall and per-slot scores, the token-level confusion of slot types, the
    span errors by class, the ``worst`` sentences with their spans marked, and ``figures`` (``(caption,
    png)`` pairs, see :func:`find_figures`) embedded."""
    title = title or "Evaluation report"
    split = f" on the {report['split']} split" if "split" in report else ""
    sections = [
        f"<p>Scores{split} in the {escape(str(report.get('scheme', '')))} tag scheme; errors.jsonl beside this "
        f"page lists every sentence that is not an exact match.</p>",
        "<h2>Scores</h2>", _headline(report), _per_slot(report),
        "<h2>Errors</h2>", _error_counts(analysis),
        "<h2>Slot type confusion</h2>", _confusion(analysis),
        "<h2>Worst sentences</h2>", _worst(analysis, worst),
    ]
    if figures:
        sections += ["<h2>Figures</h2>", _figures(figures)]
    return html_page(title, "\n".join(sections))


def comparison_html(intro: str, headers: Sequence[str], rows: Sequence[Sequence[str]], notes: str = "") -> str:
    """compare.html: ``slotfill compare``'s table (the cells of compare.md, as given) on a self-contained page,
    with the sentence above it (``intro``) and any footnote (``notes``), both plain text."""
    body = f"<p>{escape(intro)}</p>\n" + html_table(headers, rows, table_id="comparison")
    if notes:
        body += f"\n<p>{escape(notes)}</p>"
    return html_page("slotfill compare", body)
