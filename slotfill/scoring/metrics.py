"""Evaluation metrics: seqeval slot scores, intent accuracy, sentence accuracy and calibration.

Slot scores come from seqeval (1.2.x), in the tag scheme of the data (IOB2, IOB1 or BIOES):

* ``slot_precision`` / ``slot_recall`` / ``slot_f1`` use seqeval's default mode, which is
  compatible with conlleval.pl: an ``I-x`` that follows ``O`` or a different type starts a
  new span, as if it were ``B-x``. This is the number the slot-filling literature reports.
  Both sides are read with :func:`slotfill.schemes.read_spans` (the project's one span reader,
  which is this reading) and written out in IOB2 for seqeval: lossless, so the scores equal
  seqeval's default mode on the tags in their own scheme.
* ``slot_f1_strict`` is seqeval's strict mode in the data's scheme: only well-formed chunks
  count, so an orphan ``I-x`` prediction in IOB2 is no span at all.
* ``slot_f1_macro`` is the unweighted mean of the per-type F1 scores (default mode). Like
  seqeval, it averages over every type that occurs in the gold *or* the predictions, so a
  type that is only ever predicted (support 0) counts with F1 = 0.

Every division by zero (a gold type never predicted, a predicted type absent from the gold)
is resolved with ``zero_division=0``: the score is 0.0 and no ``UndefinedMetricWarning`` is
raised. Tags are checked against the scheme before seqeval sees them, so seqeval's "seems not
to be NE tag" warning and its strict-mode ``ValueError`` cannot occur.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from seqeval.metrics import classification_report
from seqeval.metrics import f1_score as seqeval_f1_score
from seqeval.scheme import IOB1, IOB2, IOBES

from slotfill.schemes import DEFAULT_SCHEME, Span, check_scheme, read_spans, tag_problem, tags_from_spans, validate

__all__ = [
    "evaluate",
    "intent_matches",
    "sentence_matches",
    "expected_calibration_error",
    "reliability_bins",
    "span_confidence_pairs",
]

# seqeval's name for each scheme's strict reading.
_SEQEVAL_SCHEMES = {"IOB2": IOB2, "IOB1": IOB1, "BIOES": IOBES}


# --------------------------------------------------------------------------- intents


def intent_matches(predicted: str | None, gold: str) -> bool:
    """Whether ``predicted`` counts as a correct intent for ``gold``.

    ATIS annotates some utterances with several intents joined by ``#``
    (``atis_flight#atis_airfare``). Following the convention used in the joint
    intent/slot literature on ATIS, a prediction is correct when it equals the whole gold
    string *or any one* of its ``#``-separated parts::

        intent_matches("atis_airfare", "atis_flight#atis_airfare")              -> True
        intent_matches("atis_flight#atis_airfare", "atis_flight#atis_airfare")  -> True
        intent_matches("atis_airfare#atis_flight", "atis_flight#atis_airfare")  -> False
        intent_matches("atis_flight", "atis_flight")                            -> True

    A missing (``None``) or empty prediction never matches.
    """
    if not predicted:
        return False
    if predicted == gold:
        return True
    return predicted in (part for part in gold.split("#") if part)


def sentence_matches(gold_tags: Sequence[str], pred_tags: Sequence[str], gold_intent: str | None,
                     pred_intent: str | None) -> bool:
    """Whether a sentence is an exact match (``exact_match`` counts these; errors.jsonl lists the rest): every
    tag right and, where the sentence has a gold intent, the intent right under :func:`intent_matches`."""
    return list(gold_tags) == list(pred_tags) and (gold_intent is None or intent_matches(pred_intent, gold_intent))


# --------------------------------------------------------------------------- validation


def _as_sentences(name: str, sequences: Sequence[Sequence[str]], scheme: str, valid: bool) -> list[list[str]]:
    """The sequences as lists, every tag well-formed in ``scheme``; with ``valid`` (the gold) every
    sequence valid in it too."""
    if isinstance(sequences, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of tag sequences, not a string")
    out: list[list[str]] = []
    for index, sentence in enumerate(sequences):
        if isinstance(sentence, (str, bytes)):
            raise TypeError(f"{name}: sentence {index} is a string, expected a sequence of tags")
        tags = list(sentence)
        for position, tag in enumerate(tags):
            problem = tag_problem(tag, scheme) if isinstance(tag, str) else f"{tag!r} is not a string"
            if problem is not None:
                raise ValueError(f"{name}: sentence {index}, token {position}: {problem}")
        if valid:
            problems = validate(tags, scheme)
            if problems:
                position, reason = problems[0]
                raise ValueError(f"{name}: sentence {index}, token {position}: invalid {scheme} sequence: {reason}")
        out.append(tags)
    return out


def _check_parallel(gold: list[list[str]], pred: list[list[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"gold has {len(gold)} sentences but predictions have {len(pred)}")
    for index, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {index}: gold has {len(g)} tags but prediction has {len(p)}")


def _as_intents(name: str, intents: Sequence[str | None], n: int) -> list[str | None]:
    if isinstance(intents, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of intent labels, not a string")
    values = list(intents)
    if len(values) != n:
        raise ValueError(f"{name} has {len(values)} entries but there are {n} sentences")
    for index, value in enumerate(values):
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{name}: sentence {index}: intent must be a string or None, got {value!r}")
    return values


# --------------------------------------------------------------------------- evaluate


def evaluate(
    gold_tags: Sequence[Sequence[str]],
    pred_tags: Sequence[Sequence[str]],
    gold_intents: Sequence[str | None] | None = None,
    pred_intents: Sequence[str | None] | None = None,
    scheme: str = DEFAULT_SCHEME,
) -> dict:
    """Score predicted tags (and optionally intents) against the gold, both in ``scheme``.

    Returns a JSON-serialisable dict; every score is a python float in [0, 1]:

    ``slot_precision``, ``slot_recall``, ``slot_f1``
        micro-averaged span scores, seqeval default (conlleval-compatible) mode.
    ``slot_f1_strict``
        micro F1 of seqeval's strict mode in ``scheme``.
    ``slot_f1_macro``
        unweighted mean of the per-type F1 (default mode).
    ``intent_accuracy``
        share of sentences with a gold intent whose predicted intent matches it under
        :func:`intent_matches`; ``None`` when there are no gold intents.
    ``exact_match``
        sentence-level semantic-frame accuracy (JointBERT's "sentence accuracy"): every tag right
        and, where the sentence has a gold intent, the intent right as well.
    ``per_slot``
        ``{type: {"precision", "recall", "f1", "support"}}`` from seqeval's classification
        report (default mode); ``support`` is the number of gold spans (an int).
    ``n_sentences``, ``n_tokens``
        corpus size (tokens counted on the gold side).
    ``scheme``
        the tag scheme the scores were read in.

    A gold entry of ``None`` in ``gold_intents`` means "no intent label for this sentence";
    such sentences are left out of ``intent_accuracy`` and judged on tags alone in
    ``exact_match``. Predicted intents without any gold intents are ignored.

    When neither the gold nor the predictions contain a single span, every slot score is
    0.0 (seqeval's ``zero_division=0`` convention) and ``per_slot`` is empty.

    The gold must be valid in ``scheme``; predictions only need well-formed tags (softmax decoding
    can emit ``O I-x``), which each mode reads as seqeval does.

    Raises ``ValueError`` for mismatched sentence counts, a sentence whose gold and
    predicted lengths differ (naming its index), a tag that is not one of the scheme's, an
    invalid gold sequence, an empty corpus, or gold intents without predicted intents.
    """
    check_scheme(scheme)
    gold = _as_sentences("gold_tags", gold_tags, scheme, valid=True)
    pred = _as_sentences("pred_tags", pred_tags, scheme, valid=False)
    _check_parallel(gold, pred)
    n = len(gold)
    if n == 0:
        raise ValueError("nothing to evaluate: no sentences")

    golds_i: list[str | None] | None = None
    preds_i: list[str | None] | None = None
    if gold_intents is not None:
        golds_i = _as_intents("gold_intents", gold_intents, n)
        if all(value is None for value in golds_i):
            golds_i = None
    if pred_intents is not None:
        preds_i = _as_intents("pred_intents", pred_intents, n)
    if golds_i is not None and preds_i is None:
        raise ValueError("gold_intents given without pred_intents")

    # ---- slots
    gold_spans = [read_spans(tags, scheme) for tags in gold]
    pred_spans = [read_spans(tags, scheme) for tags in pred]
    has_spans = any(gold_spans) or any(pred_spans)
    per_slot: dict[str, dict] = {}
    if has_spans:
        gold_iob2 = [tags_from_spans(len(tags), found, "IOB2") for tags, found in zip(gold, gold_spans)]
        pred_iob2 = [tags_from_spans(len(tags), found, "IOB2") for tags, found in zip(pred, pred_spans)]
        table = classification_report(gold_iob2, pred_iob2, output_dict=True, zero_division=0)
        for name, row in table.items():
            if name.endswith(" avg"):
                continue
            per_slot[name] = {
                "precision": float(row["precision"]),
                "recall": float(row["recall"]),
                "f1": float(row["f1-score"]),
                "support": int(row["support"]),
            }
        micro = table["micro avg"]
        slot_precision = float(micro["precision"])
        slot_recall = float(micro["recall"])
        slot_f1 = float(micro["f1-score"])
        slot_f1_macro = float(table["macro avg"]["f1-score"])
        slot_f1_strict = float(seqeval_f1_score(gold, pred, mode="strict", scheme=_SEQEVAL_SCHEMES[scheme],
                                                average="micro", zero_division=0))
    else:
        slot_precision = slot_recall = slot_f1 = slot_f1_macro = slot_f1_strict = 0.0

    # ---- intents and sentence accuracy
    intent_accuracy: float | None = None
    if golds_i is not None:
        assert preds_i is not None
        judged = [(g, p) for g, p in zip(golds_i, preds_i) if g is not None]
        intent_accuracy = sum(intent_matches(p, g) for g, p in judged) / len(judged)

    # Without gold intents every sentence is judged on its tags alone, as in intent_accuracy.
    gold_for_exact = golds_i if golds_i is not None else [None] * n
    pred_for_exact = preds_i if preds_i is not None else [None] * n
    exact = sum(map(sentence_matches, gold, pred, gold_for_exact, pred_for_exact))

    return {
        "slot_precision": slot_precision,
        "slot_recall": slot_recall,
        "slot_f1": slot_f1,
        "slot_f1_strict": slot_f1_strict,
        "slot_f1_macro": slot_f1_macro,
        "intent_accuracy": intent_accuracy,
        "exact_match": exact / n,
        "per_slot": per_slot,
        "n_sentences": n,
        "n_tokens": sum(len(s) for s in gold),
        "scheme": scheme,
    }


# --------------------------------------------------------------------------- calibration


def _calibration_inputs(confidences, correct, n_bins) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}")
    conf = np.asarray(confidences, dtype=float)
    hits = np.asarray(correct)
    if conf.ndim != 1 or hits.ndim != 1:
        raise ValueError("confidences and correct must be one-dimensional")
    if conf.shape != hits.shape:
        raise ValueError(f"{conf.size} confidences but {hits.size} correctness flags")
    if not np.all(np.isfinite(conf)) or np.any(conf < 0.0) or np.any(conf > 1.0):
        raise ValueError("confidences must be finite and within [0, 1]")
    if hits.dtype != bool:
        if hits.size and not np.all((hits == 0) | (hits == 1)):
            raise ValueError("correct must hold booleans or 0/1 values")
        hits = hits.astype(bool)
    return conf, hits


def _bin_index(conf: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    # Bins are (lo, hi] as in Guo et al. (2017), except that the first one also holds 0.
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], conf, side="left"), edges


def reliability_bins(confidences, correct, n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins over [0, 1] for a reliability diagram.

    Bin ``k`` covers ``(lo, hi]`` with ``lo = k/n_bins`` and ``hi = (k+1)/n_bins``; the first
    bin also takes confidence 0. Each entry is ``{"lo", "hi", "count", "mean_confidence",
    "accuracy"}``; the last two are ``None`` for an empty bin. ``correct`` holds booleans (or
    0/1) saying whether each prediction was right.
    """
    conf, hits = _calibration_inputs(confidences, correct, n_bins)
    index, edges = _bin_index(conf, n_bins)
    bins = []
    for k in range(n_bins):
        mask = index == k
        count = int(mask.sum())
        bins.append(
            {
                "lo": float(edges[k]),
                "hi": float(edges[k + 1]),
                "count": count,
                "mean_confidence": float(conf[mask].mean()) if count else None,
                "accuracy": float(hits[mask].mean()) if count else None,
            }
        )
    return bins


def expected_calibration_error(confidences, correct, n_bins: int = 15) -> float:
    """Expected calibration error: ``sum_B |B|/N * |acc(B) - conf(B)|`` over equal-width bins.

    Uses the same bins as :func:`reliability_bins`. Raises ``ValueError`` for empty input
    (the ECE of no predictions is undefined).
    """
    conf, hits = _calibration_inputs(confidences, correct, n_bins)
    if conf.size == 0:
        raise ValueError("expected_calibration_error needs at least one prediction")
    index, _ = _bin_index(conf, n_bins)
    total = 0.0
    for k in range(n_bins):
        mask = index == k
        count = int(mask.sum())
        if count:
            total += count * abs(float(hits[mask].mean()) - float(conf[mask].mean()))
    return total / conf.size


def span_confidence_pairs(gold_tags: Sequence[Sequence[str]], predicted: Sequence[Sequence[tuple[str, int, int, float]]],
                          scheme: str = DEFAULT_SCHEME) -> tuple[np.ndarray, np.ndarray]:
    """Pair each predicted span's confidence with whether the span is exactly right.

    ``predicted[i]`` holds sentence ``i``'s predicted spans as ``(label, start, end, confidence)`` in
    token positions, ``end`` exclusive. A span is right when the gold (valid tags in ``scheme``) has a
    span with the same label, start and end. Returns ``(confidences, correct)``: a float array (each
    clipped to [0, 1]) and a bool array of equal length, ready for
    :func:`expected_calibration_error` / :func:`reliability_bins`.
    """
    gold = _as_sentences("gold_tags", gold_tags, scheme, valid=True)
    if isinstance(predicted, (str, bytes)) or len(predicted) != len(gold):
        raise ValueError(f"predicted must have one entry per sentence ({len(gold)} sentences)")
    confidences: list[float] = []
    correct: list[bool] = []
    for tags, found in zip(gold, predicted):
        gold_spans: set[Span] = set(read_spans(tags, scheme))
        for label, start, end, confidence in found:
            confidences.append(min(1.0, max(0.0, float(confidence))))
            correct.append((label, start, end) in gold_spans)
    return np.asarray(confidences, dtype=float), np.asarray(correct, dtype=bool)
