"""Temperature scaling of slot and intent confidences, fitted on the dev split.

One temperature for the slot scores (emissions and CRF transitions are divided by it before
marginals and span probabilities are taken) and one for the intent logits. Labels never change,
only how sure the model says it is. The slot temperature is chosen to minimise the log loss of
the reported *span* confidences against whether each predicted span is exactly right, since
that is the number a dialogue system thresholds on; the intent temperature minimises the usual
negative log-likelihood of the gold intent (Guo et al., 2017).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from slotfill.decoding.reference import softmax
from slotfill.scoring.metrics import expected_calibration_error, intent_matches, reliability_bins, span_confidence_pairs

if TYPE_CHECKING:
    from slotfill.inference.predictor import Predictor

LOG_T_RANGE = (math.log(0.05), math.log(20.0))
# Slot temperatures below 1/4 multiply CRF scores past what float32 forward-backward can hold
# (its per-step sums underflow); no trained tagger here has needed less than 0.5.
SLOT_LOG_T_RANGE = (math.log(0.25), math.log(20.0))
EPS = 1e-6


def golden_section(objective: Callable[[float], float], lo: float, hi: float, iterations: int = 40) -> float:
    """Minimiser of a unimodal function on [lo, hi]."""
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = objective(c), objective(d)
    for _ in range(iterations):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = objective(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = objective(d)
    return (a + b) / 2.0


class Scores:
    """The network's outputs on a split, computed once and decoded under many temperatures."""

    def __init__(self, predictor: "Predictor", norms: list[list[str]], batch_size: int = 256):
        self.predictor = predictor
        self.batches = [predictor.run_network(norms[start:start + batch_size])
                        for start in range(0, len(norms), batch_size)]

    def spans(self, slot_temperature: float) -> list[list[tuple[str, int, int, float]]]:
        """Predicted (slot, start, end, confidence) spans per sentence."""
        spans = []
        for emissions, _, lengths in self.batches:
            decoded = self.predictor.decode(emissions, None, lengths, temperatures=(slot_temperature, 1.0))
            for found, confidences in zip(decoded.spans, decoded.span_confidence):
                spans.append([(slot, s, e, c) for (slot, s, e), c in zip(found, confidences)])
        return spans

    def intent_probs(self, temperature: float) -> np.ndarray | None:
        if self.batches[0][1] is None:
            return None
        return np.concatenate([softmax(logits / temperature) for _, logits, _ in self.batches])


def _log_loss(confidences: np.ndarray, correct: np.ndarray) -> float:
    p = np.clip(confidences, EPS, 1.0 - EPS)
    return float(-np.mean(np.where(correct, np.log(p), np.log1p(-p))))


def intent_pairs(probs: np.ndarray, intents: list[str], gold: Sequence[str | None]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top confidence, whether the top intent is right, and the gold intent's probability
    (multi-intent gold labels ``a#b``: the best of their parts), over sentences with a gold intent."""
    index = {name: i for i, name in enumerate(intents)}
    top, right, gold_p = [], [], []
    for row, name in enumerate(gold):
        if name is None:
            continue
        best = int(probs[row].argmax())
        top.append(float(probs[row, best]))
        right.append(intent_matches(intents[best], name))
        parts = [index[part] for part in {name, *name.split("#")} if part in index]
        gold_p.append(max((float(probs[row, i]) for i in parts), default=0.0))
    return np.asarray(top), np.asarray(right, dtype=bool), np.asarray(gold_p)


def fit_temperatures(predictor: "Predictor", norms: list[list[str]], gold_tags: Sequence[Sequence[str]],
                     gold_intents: Sequence[str | None] | None) -> dict[str, float]:
    """Temperatures that calibrate ``predictor``'s confidences on this (dev) split."""
    scores = Scores(predictor, norms)

    def slot_objective(log_t: float) -> float:
        with np.errstate(all="ignore"):  # an underflowing temperature scores as infinitely bad, not as a warning
            confidences, correct = span_confidence_pairs(gold_tags, scores.spans(math.exp(log_t)),
                                                         predictor.config.scheme)
            loss = _log_loss(confidences, correct) if confidences.size else 0.0
        return loss if math.isfinite(loss) else math.inf

    slot_t = math.exp(golden_section(slot_objective, *SLOT_LOG_T_RANGE, iterations=25))
    intent_t = 1.0
    if gold_intents is not None and predictor.intents and any(g is not None for g in gold_intents):
        def intent_objective(log_t: float) -> float:
            _, _, gold_p = intent_pairs(scores.intent_probs(math.exp(log_t)), predictor.intents, gold_intents)
            return float(-np.mean(np.log(np.clip(gold_p, 1e-12, 1.0)))) if gold_p.size else 0.0

        intent_t = math.exp(golden_section(intent_objective, *LOG_T_RANGE))
    return {"slot_temperature": round(slot_t, 6), "intent_temperature": round(intent_t, 6)}


def calibration_report(predictor: "Predictor", norms: list[list[str]], gold_tags: Sequence[Sequence[str]],
                       gold_intents: Sequence[str | None] | None, temperatures: dict[str, float],
                       n_bins: int = 15) -> dict[str, Any]:
    """Expected calibration error and reliability bins, before (temperature 1) and after scaling."""
    scores = Scores(predictor, norms)
    report: dict[str, Any] = dict(temperatures)
    for when, slot_t, intent_t in (("before", 1.0, 1.0),
                                   ("after", temperatures["slot_temperature"], temperatures["intent_temperature"])):
        confidences, correct = span_confidence_pairs(gold_tags, scores.spans(slot_t), predictor.config.scheme)
        if confidences.size:
            report[f"span_ece_{when}"] = expected_calibration_error(confidences, correct, n_bins)
            report[f"span_bins_{when}"] = reliability_bins(confidences, correct, n_bins)
        probs = scores.intent_probs(intent_t)
        if probs is not None and gold_intents is not None and predictor.intents:
            top, right, _ = intent_pairs(probs, predictor.intents, gold_intents)
            if top.size:
                report[f"intent_ece_{when}"] = expected_calibration_error(top, right, n_bins)
                report[f"intent_bins_{when}"] = reliability_bins(top, right, n_bins)
    report["spans"] = int(sum(len(s) for s in scores.spans(1.0)))
    return report


def calibrate_artifact(model_dir, data_dir, backend: str = "auto") -> dict[str, Any]:
    """Fit temperatures on ``data_dir``'s dev split, evaluate on its test split (dev when there is
    none), and write them into the artifact (``calibration.json``, listed in a rewritten manifest;
    the report gains a ``calibration`` entry). Returns that entry."""
    from pathlib import Path

    from slotfill.artifact.artifact import CALIBRATION_FILE, extend_manifest
    from slotfill.artifact.files import atomic_write_json
    from slotfill.data import load_corpus
    from slotfill.errors import DataError
    from slotfill.inference.predictor import Predictor
    from slotfill.text.tokenizer import normalize_token

    model_dir = Path(model_dir)
    predictor = Predictor.load(model_dir, backend=backend)
    corpus = load_corpus(data_dir, scheme=predictor.config.scheme, tokenizer_config=predictor.tokenizer_config)
    if not corpus.valid:
        raise DataError("calibration needs a valid (dev) split", data_dir)

    def split(examples):
        norms = [[normalize_token(t, predictor.tokenizer_config) or t for t in e.tokens] for e in examples]
        intents = [e.intent for e in examples] if predictor.intents else None
        return norms, [list(e.tags) for e in examples], intents

    temperatures = fit_temperatures(predictor, *split(corpus.valid))
    result = calibration_report(predictor, *split(corpus.test or corpus.valid), temperatures)
    result["split"] = "test" if corpus.test else "valid"
    artifact = predictor.loaded
    atomic_write_json(model_dir / CALIBRATION_FILE, temperatures)
    if artifact.report is not None and "report.json" in artifact.manifest["files"]:
        atomic_write_json(model_dir / "report.json", {**artifact.report, "calibration": result})
    extend_manifest(model_dir, artifact.manifest, [CALIBRATION_FILE])
    return result
