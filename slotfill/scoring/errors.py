"""Error analysis: which sentences a tagger got wrong, and how each span went wrong.

Spans are read with :func:`slotfill.schemes.read_spans` (the project's one span reader, the reading
the metrics use), so an error here is exactly a span the slot scores counted as wrong.

The classes of span error
-------------------------

A predicted span with the same label, start and end as a gold span is **correct**; every other span
takes part in exactly one of these (the rule is applied per sentence, after the correct spans are set
aside; spans of one side never overlap each other, so a correct pair overlaps nothing else):

``wrong_boundary``
    a predicted span paired with an overlapping gold span of the same label but other edges;
``wrong_type``
    paired with a gold span of the same edges but another label;
``wrong_boundary_and_type``
    paired with an overlapping gold span whose edges and label both differ;
``spurious``
    a predicted span that overlaps no gold span left;
``missed``
    a gold span that no predicted span overlaps (more precisely, that no predicted span was paired
    with, see below).

One-to-many overlaps: each predicted span is paired with ONE gold span, the overlapping one that
shares the most tokens with it; a tie goes to a gold span of the prediction's own label, then to the
leftmost. So a prediction that splits one gold span in two gives two errors naming that gold span
(each half ``wrong_boundary`` when the labels agree), and a prediction that merges two gold spans is
paired with one of them, while the other, which no prediction was paired with, counts as ``missed``.
Every wrong predicted span is therefore in exactly one error, and every gold span that is not
predicted exactly is in at least one.

A sentence is an error when it is not an exact match (:func:`slotfill.scoring.metrics.sentence_matches`,
the same test as the report's ``exact_match``): some tag differs, or its gold intent is not matched.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slotfill.schemes import DEFAULT_SCHEME, Span, read_spans
from slotfill.scoring.metrics import intent_matches, sentence_matches

__all__ = [
    "ERROR_KINDS",
    "OUTSIDE",
    "SpanError",
    "SentenceErrors",
    "ErrorAnalysis",
    "classify_span_errors",
    "token_types",
    "analyse_errors",
]

ERROR_KINDS = ("missed", "spurious", "wrong_type", "wrong_boundary", "wrong_boundary_and_type")
OUTSIDE = "O"  # the "type" of a token outside every span, in the confusion table


@dataclass(frozen=True)
class SpanError:
    """One span error: ``gold`` is None for ``spurious``, ``predicted`` None for ``missed``."""

    kind: str
    gold: Span | None
    predicted: Span | None


def _overlap(a: Span, b: Span) -> int:
    return max(0, min(a[2], b[2]) - max(a[1], b[1]))


def classify_span_errors(gold: Sequence[Span], predicted: Sequence[Span]) -> list[SpanError]:
    """The span errors of one sentence, in the module docstring's classes; empty when every span is right.

    ``gold`` and ``predicted`` are ``(label, start, end)`` spans (end exclusive), each side free of
    overlaps as :func:`slotfill.schemes.read_spans` gives them. Errors come in token order (by the start
    of the predicted span, or of the gold span for ``missed``).
    """
    correct = set(gold) & set(predicted)
    gold_left = [span for span in gold if span not in correct]
    pred_left = [span for span in predicted if span not in correct]
    errors: list[SpanError] = []
    paired: set[Span] = set()
    for pred in pred_left:
        overlapping = [g for g in gold_left if _overlap(pred, g)]
        if not overlapping:
            errors.append(SpanError("spurious", None, pred))
            continue
        partner = min(overlapping, key=lambda g: (-_overlap(pred, g), g[0] != pred[0], g[1]))
        paired.add(partner)
        same_label = partner[0] == pred[0]
        same_edges = partner[1:] == pred[1:]
        kind = "wrong_boundary" if same_label else "wrong_type" if same_edges else "wrong_boundary_and_type"
        errors.append(SpanError(kind, partner, pred))
    errors += [SpanError("missed", g, None) for g in gold_left if g not in paired]
    errors.sort(key=lambda e: ((e.predicted or e.gold)[1], e.kind == "missed"))
    return errors


def token_types(n_tokens: int, spans: Sequence[Span]) -> list[str]:
    """Each token's slot type: the label of the span covering it, or :data:`OUTSIDE`."""
    types = [OUTSIDE] * n_tokens
    for label, start, end in spans:
        types[start:end] = [label] * (end - start)
    return types


def _span_json(span: Span, tokens: Sequence[str]) -> dict[str, Any]:
    label, start, end = span
    return {"label": label, "start": start, "end": end, "words": " ".join(tokens[start:end])}


@dataclass
class SentenceErrors:
    """A sentence that is not an exact match: its spans on both sides, its span errors and its intents."""

    index: int
    tokens: list[str]
    gold_spans: list[Span]
    predicted_spans: list[Span]
    errors: list[SpanError]
    gold_intent: str | None = None
    predicted_intent: str | None = None

    @property
    def text(self) -> str:
        return " ".join(self.tokens)

    @property
    def intent_correct(self) -> bool | None:
        """None when the sentence has no gold intent (it is judged on its tags alone)."""
        return None if self.gold_intent is None else intent_matches(self.predicted_intent, self.gold_intent)

    def kind_of(self, span: Span, side: str) -> str:
        """``correct`` or the class of the first error naming ``span`` on ``side`` (gold or predicted)."""
        for error in self.errors:
            if (error.gold if side == "gold" else error.predicted) == span:
                return error.kind
        return "correct"

    def to_json(self) -> dict[str, Any]:
        """One line of errors.jsonl."""
        tokens = self.tokens
        return {
            "index": self.index,
            "text": self.text,
            "tokens": list(tokens),
            "gold_spans": [_span_json(s, tokens) for s in self.gold_spans],
            "predicted_spans": [_span_json(s, tokens) for s in self.predicted_spans],
            "errors": [{"kind": e.kind,
                        "gold": None if e.gold is None else _span_json(e.gold, tokens),
                        "predicted": None if e.predicted is None else _span_json(e.predicted, tokens)}
                       for e in self.errors],
            "gold_intent": self.gold_intent,
            "predicted_intent": self.predicted_intent,
            "intent_correct": self.intent_correct,
        }


@dataclass
class ErrorAnalysis:
    """The error analysis of one evaluation: the sentences that are not exact matches (in corpus order),
    the span errors by class and the token-level confusion of slot types (``O`` included)."""

    n_sentences: int
    sentences: list[SentenceErrors] = field(default_factory=list)
    error_counts: dict[str, int] = field(default_factory=dict)
    intent_errors: int = 0
    # confusion[gold type][predicted type] = tokens; every token of the corpus is counted once
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)

    def worst(self, limit: int = 50) -> list[SentenceErrors]:
        """Up to ``limit`` sentences with the most span errors (a wrong intent breaks ties), then in order."""
        ranked = sorted(self.sentences, key=lambda s: (-len(s.errors), s.intent_correct is not False, s.index))
        return ranked[:limit]

    def jsonl(self) -> str:
        """errors.jsonl: one JSON object per sentence that is not an exact match."""
        import json

        return "".join(json.dumps(s.to_json(), ensure_ascii=False) + "\n" for s in self.sentences)

    def confusion_types(self) -> list[str]:
        """The confusion table's types: ``O`` first, then the slot types by name."""
        names = set(self.confusion) | {p for row in self.confusion.values() for p in row}
        return [OUTSIDE] * (OUTSIDE in names) + sorted(names - {OUTSIDE})


def analyse_errors(tokens: Sequence[Sequence[str]], gold_tags: Sequence[Sequence[str]],
                   pred_tags: Sequence[Sequence[str]], gold_intents: Sequence[str | None] | None = None,
                   pred_intents: Sequence[str | None] | None = None, scheme: str = DEFAULT_SCHEME) -> ErrorAnalysis:
    """Analyse predictions as :func:`slotfill.scoring.metrics.evaluate` scores them (same arguments, plus
    each sentence's ``tokens`` for the text): the sentences that are not exact matches with their span
    errors, the counts by class, and the token-level confusion of slot types."""
    if not len(tokens) == len(gold_tags) == len(pred_tags):
        raise ValueError(f"{len(tokens)} token lists, {len(gold_tags)} gold and {len(pred_tags)} predicted tag lists")
    n = len(gold_tags)
    # As in evaluate: predicted intents count only against gold ones.
    golds_i = list(gold_intents) if gold_intents is not None else [None] * n
    preds_i = list(pred_intents) if pred_intents is not None else [None] * n
    analysis = ErrorAnalysis(n_sentences=n)
    kinds: Counter[str] = Counter({kind: 0 for kind in ERROR_KINDS})
    confusion: dict[str, Counter[str]] = {}
    sentences = zip(tokens, gold_tags, pred_tags, golds_i, preds_i)
    for index, (words, gold, pred, g_intent, p_intent) in enumerate(sentences):
        gold_spans, pred_spans = read_spans(gold, scheme), read_spans(pred, scheme)
        for g_type, p_type in zip(token_types(len(gold), gold_spans), token_types(len(pred), pred_spans)):
            confusion.setdefault(g_type, Counter())[p_type] += 1
        if sentence_matches(gold, pred, g_intent, p_intent):
            continue
        sentence = SentenceErrors(index, list(words), gold_spans, pred_spans,
                                  classify_span_errors(gold_spans, pred_spans), g_intent, p_intent)
        kinds.update(error.kind for error in sentence.errors)
        analysis.intent_errors += sentence.intent_correct is False
        analysis.sentences.append(sentence)
    analysis.error_counts = {kind: kinds[kind] for kind in ERROR_KINDS}
    analysis.confusion = {g: dict(row) for g, row in confusion.items()}
    return analysis
