"""Temperature scaling of slot and intent confidences, fitted on the dev split.

One temperature for the slot scores (emissions and CRF transitions are divided by it before
marginals and span probabilities are taken) and one for the intent logits. Labels never change,
only how sure the model says it is. The slot temperature is chosen to minimise the log loss of
the reported *span* confidences against whether each predicted span is exactly right, since
that is the number a dialogue system thresholds on; the intent temperature minimises the usual
negative log-likelihood of the gold intent (Guo et al., 2017).

A fitted temperature is applied only when the fit can be trusted (:func:`fit_calibration`):

* the dev split must hold at least :data:`MIN_WRONG` wrong and :data:`MIN_RIGHT` right predictions
  (spans for the slot temperature, top intents for the intent one), otherwise the fit is skipped. The
  log loss of a right prediction always falls as the temperature falls, so the wrong ones alone hold
  the temperature up: with none, the "best" temperature is the lower end of the search range, and with
  a handful it rests on those few. Ten of the rarer outcome per fitted parameter is the usual minimum
  for a logistic fit (Peduzzi et al., 1996), and temperature scaling is a one-parameter logistic
  recalibration.
* the fitted temperature must lower the dev log loss below its value at temperature 1; otherwise
  temperature 1 is kept.
* a temperature on a bound of its search range is applied but flagged: the best one may lie beyond.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
# Least wrong and right dev predictions a temperature is fitted on (see the module docstring).
MIN_WRONG = 10
MIN_RIGHT = 10
# A fitted log-temperature closer than this to an end of its range is "on the bound".
BOUND_TOLERANCE = 1e-3


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


@dataclass
class TemperatureFit:
    """How one temperature (``kind`` "slot" or "intent") was chosen on the dev split.

    ``temperature`` is the one applied (1.0 when the fit was skipped or declined); ``fitted`` the
    minimiser found (None when skipped); ``note`` says why ``temperature`` is not ``fitted``;
    ``warning`` flags a fitted temperature on a bound of the search range.
    """

    kind: str
    temperature: float
    predictions: int  # dev spans (slot) or dev sentences with a gold intent (intent)
    wrong: int
    fitted: float | None = None
    log_loss_at_1: float | None = None
    log_loss_fitted: float | None = None
    note: str | None = None
    warning: str | None = None

    @property
    def applied(self) -> bool:
        return self.note is None

    def to_dict(self) -> dict[str, Any]:
        data = {"temperature": self.temperature, "applied": self.applied, "dev_predictions": self.predictions,
                "dev_wrong": self.wrong, "fitted_temperature": self.fitted,
                "dev_log_loss_at_1": self.log_loss_at_1, "dev_log_loss_fitted": self.log_loss_fitted}
        if self.note:
            data["note"] = self.note
        if self.warning:
            data["warning"] = self.warning
        return data

    def describe(self) -> str:
        """One line for a log: the temperature applied, and why when it is not the fitted one."""
        if self.note:
            return f"{self.kind} temperature 1 ({self.note})"
        return (f"{self.kind} temperature {self.temperature:.3f} (dev log loss {self.log_loss_at_1:.4f} at 1 -> "
                f"{self.log_loss_fitted:.4f}, on {self.predictions} dev {self._unit()})")

    def _unit(self) -> str:
        return "spans" if self.kind == "slot" else "intents"


def _fit_one(kind: str, objective: Callable[[float], float], log_range: tuple[float, float], predictions: int,
             wrong: int, iterations: int) -> TemperatureFit:
    """Fit one temperature by golden-section search of ``objective`` (of log T) and decide whether to apply it."""
    unit = "spans" if kind == "slot" else "intents"
    right = predictions - wrong
    if wrong < MIN_WRONG or right < MIN_RIGHT:
        return TemperatureFit(kind, 1.0, predictions, wrong, note=(
            f"not fitted: the dev split has {wrong} wrong and {right} right predicted {unit}; a fit needs at "
            f"least {MIN_WRONG} wrong and {MIN_RIGHT} right ones"))
    lo, hi = log_range
    log_t = golden_section(objective, lo, hi, iterations=iterations)
    fitted = round(math.exp(log_t), 6)
    at_1, at_fit = objective(0.0), objective(math.log(fitted))
    fit = TemperatureFit(kind, fitted, predictions, wrong, fitted=fitted, log_loss_at_1=round(at_1, 6),
                         log_loss_fitted=round(at_fit, 6) if math.isfinite(at_fit) else None)
    if log_t - lo < BOUND_TOLERANCE or hi - log_t < BOUND_TOLERANCE:
        end = "lower" if log_t - lo < BOUND_TOLERANCE else "upper"
        fit.warning = (f"the fitted {kind} temperature {fitted:.3f} is on the {end} bound of its search range "
                       f"[{math.exp(lo):.3g}, {math.exp(hi):.3g}]: the best temperature may lie beyond it")
    if not at_fit < at_1:
        fit.temperature = 1.0
        fit.note = (f"not applied: the fitted temperature {fitted:.3f} does not lower the dev log loss "
                    f"({at_fit:.4f} against {at_1:.4f} at temperature 1)")
    return fit


@dataclass
class Calibration:
    """The outcome of :func:`fit_calibration`: one :class:`TemperatureFit` per kind of confidence."""

    slot: TemperatureFit
    intent: TemperatureFit | None  # None for a model or data without intents

    @property
    def temperatures(self) -> dict[str, float]:
        """What ``calibration.json`` stores and the predictor applies."""
        return {"slot_temperature": self.slot.temperature,
                "intent_temperature": self.intent.temperature if self.intent is not None else 1.0}

    def fits(self) -> list[TemperatureFit]:
        return [fit for fit in (self.slot, self.intent) if fit is not None]

    def summary(self) -> dict[str, Any]:
        """For report.json's ``calibration`` entry: each fit, and its notes and warnings as sentences."""
        data: dict[str, Any] = {"fits": {fit.kind: fit.to_dict() for fit in self.fits()}}
        notes = [f"{fit.kind} temperature {fit.note}" for fit in self.fits() if fit.note]
        warnings = [fit.warning for fit in self.fits() if fit.warning]
        if notes:
            data["notes"] = notes
        if warnings:
            data["warnings"] = warnings
        return data


def fit_calibration(predictor: "Predictor", norms: list[list[str]], gold_tags: Sequence[Sequence[str]],
                    gold_intents: Sequence[str | None] | None) -> Calibration:
    """Fit the slot and intent temperatures on this (dev) split, and decide which to apply (see the module
    docstring)."""
    scores = Scores(predictor, norms)
    scheme = predictor.config.scheme

    def slot_objective(log_t: float) -> float:
        with np.errstate(all="ignore"):  # an underflowing temperature scores as infinitely bad, not as a warning
            confidences, correct = span_confidence_pairs(gold_tags, scores.spans(math.exp(log_t)), scheme)
            loss = _log_loss(confidences, correct) if confidences.size else 0.0
        return loss if math.isfinite(loss) else math.inf

    _, correct = span_confidence_pairs(gold_tags, scores.spans(1.0), scheme)
    slot = _fit_one("slot", slot_objective, SLOT_LOG_T_RANGE, int(correct.size), int((~correct).sum()),
                    iterations=25)
    intent = None
    if gold_intents is not None and predictor.intents and any(g is not None for g in gold_intents):
        def intent_objective(log_t: float) -> float:
            _, _, gold_p = intent_pairs(scores.intent_probs(math.exp(log_t)), predictor.intents, gold_intents)
            return float(-np.mean(np.log(np.clip(gold_p, 1e-12, 1.0)))) if gold_p.size else 0.0

        _, right, _ = intent_pairs(scores.intent_probs(1.0), predictor.intents, gold_intents)
        intent = _fit_one("intent", intent_objective, LOG_T_RANGE, int(right.size), int((~right).sum()),
                          iterations=40)
    return Calibration(slot, intent)


def fit_temperatures(predictor: "Predictor", norms: list[list[str]], gold_tags: Sequence[Sequence[str]],
                     gold_intents: Sequence[str | None] | None) -> dict[str, float]:
    """Temperatures that calibrate ``predictor``'s confidences on this (dev) split (1.0 where a fit was
    skipped or declined: see :func:`fit_calibration`)."""
    return fit_calibration(predictor, norms, gold_tags, gold_intents).temperatures


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
    the report gains a ``calibration`` entry, with each fit and any notes and warnings). Returns that
    entry."""
    from pathlib import Path

    from slotfill.artifact.artifact import CALIBRATION_FILE, extend_manifest
    from slotfill.artifact.files import atomic_write_json
    from slotfill.data import load_corpus
    from slotfill.errors import DataError
    from slotfill.inference.predictor import Predictor
    from slotfill.scoring.reporting import add_to_report
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

    calibration = fit_calibration(predictor, *split(corpus.valid))
    temperatures = calibration.temperatures
    result = calibration_report(predictor, *split(corpus.test or corpus.valid), temperatures)
    result.update(calibration.summary())
    result["split"] = "test" if corpus.test else "valid"
    artifact = predictor.loaded
    atomic_write_json(model_dir / CALIBRATION_FILE, temperatures)
    if artifact.report is not None and "report.json" in artifact.manifest["files"]:
        add_to_report(model_dir, {"calibration": result})
    extend_manifest(model_dir, artifact.manifest, [CALIBRATION_FILE])
    return result
