"""Finishing a run: the best epoch's weights evaluated on dev and test, confidence calibration, the
artifact, its plots and its ONNX graph."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import slotfill
from slotfill.artifact.artifact import LoadedModel
from slotfill.artifact.files import atomic_write_json
from slotfill.data import Example
from slotfill.errors import ArtifactError
from slotfill.inference.engines import TorchEngine
from slotfill.inference.predictor import Predictor
from slotfill.models.tagger import SlotTagger
from slotfill.scoring.errors import ErrorAnalysis, analyse_errors
from slotfill.scoring.metrics import evaluate as evaluate_tags
from slotfill.scoring.reporting import plot_training_curves

from . import distributed
from .prepare import TrainingData, normalise_examples

if TYPE_CHECKING:
    from .loop import LoopOutcome


@dataclass
class TrainResult:
    out_dir: Path
    report: dict[str, Any]
    dev_report: dict[str, Any]
    epochs: int
    train_seconds: float
    sentences_per_second: float
    parameters: int
    history: list[dict[str, Any]] = field(default_factory=list)


def model_card(data: TrainingData) -> dict[str, Any]:
    """The artifact's model_card.json: the model's identity, its training settings and data."""
    cfg = data.config
    card = {"name": cfg.name, "version": cfg.version,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "library_version": slotfill.__version__, "training": cfg.to_dict(), "data": str(data.data_dir),
            "train_sentences": len(data.train_examples), "augmented_sentences": len(data.augmented)}
    if data.encoder_source is not None:
        # Which pretrained encoder, by the feature cache's key: a student distilled from this model reads
        # the frozen encoder's states of these training sentences from the cache instead of encoding again.
        card["encoder"] = {"name": data.encoder_source["name"], "sha256": data.encoder_sha256,
                           "frozen": not cfg.contextual_finetune}
    return card


def predictor(model: SlotTagger, data: TrainingData, *, frozen_states: bool = False) -> Predictor:
    """A predictor of the model being trained, reading text as the artifact will; with ``frozen_states``,
    a frozen transformer's word states of the dev sentences come from the training cache."""
    loaded = LoadedModel(model=model, featurizer=data.featurizer, tokenizer=data.tokenizer, card=model_card(data),
                         aligner=data.aligner)
    states = data.frozen_states if frozen_states else None
    return Predictor(loaded, engine=TorchEngine(model, data.featurizer, data.aligner, states=states))


def evaluate(model: SlotTagger, data: TrainingData, examples: list[Example], *,
             frozen_states: bool = False) -> dict[str, Any]:
    """Slot and intent metrics of ``model`` on ``examples`` (the dev split every epoch, then dev and test).
    ``frozen_states``: read a frozen transformer's cached dev states (the epochs' checks) instead of running
    it (the final reports, as the artifact will)."""
    return evaluate_with_errors(model, data, examples, frozen_states=frozen_states, errors=False)[0]


def evaluate_with_errors(model: SlotTagger, data: TrainingData, examples: list[Example], *,
                         frozen_states: bool = False, errors: bool = True
                         ) -> tuple[dict[str, Any], ErrorAnalysis | None]:
    """:func:`evaluate`'s report and, with ``errors``, the error analysis of the same predictions (the final
    report's errors.jsonl and report.html)."""
    if next(model.parameters()).device.type != "cpu":
        # The Predictor decodes with NumPy: evaluate a CPU copy of a model trained on a GPU.
        model = copy.deepcopy(model).cpu()
    was_training = model.training
    model.eval()
    norms = normalise_examples(examples, data.tokenizer)
    pred_tags, pred_intents = predictor(model, data, frozen_states=frozen_states).predict_labels(
        norms, batch_size=data.config.eval_batch_size)
    model.train(was_training)
    has_intents = bool(data.intents) and any(e.intent is not None for e in examples)
    scored = ([list(e.tags) for e in examples], pred_tags, [e.intent for e in examples] if has_intents else None,
              pred_intents if has_intents else None)
    report = evaluate_tags(*scored, scheme=data.config.model.scheme)
    analysis = analyse_errors([list(e.tokens) for e in examples], *scored, scheme=data.config.model.scheme) \
        if errors else None
    return report, analysis


class Finisher:
    """Rank 0 turns the trained model into the artifact in ``out_dir``; every rank gets the reports."""

    def __init__(self, data: TrainingData, out_dir: Path, state_dir: Path, *, dist: distributed.Dist,
                 log: Callable[[str], None]):
        self.data = data
        self.config = data.config
        self.out_dir = out_dir
        self.state_dir = state_dir
        self.dist = dist
        self.log = log

    def run(self, model: SlotTagger, outcome: LoopOutcome) -> TrainResult:
        state, summary = outcome.state, None
        if self.dist.is_main:
            model = model.cpu()
            model.load_state_dict(outcome.best)
            model.eval()
            dev_report, errors = evaluate_with_errors(model, self.data, self.data.valid_examples)
            dev_report["split"] = "valid"
            report = dev_report
            if self.data.test_examples:
                report, errors = evaluate_with_errors(model, self.data, self.data.test_examples)
                report["split"] = "test"
            report["best_epoch"] = state.best_epoch
            report["tokenizer_check"] = self.data.tokenizer_check.to_dict()
            temperatures = self.calibrate(model, report)
            atomic_write_json(self.state_dir / "dev_report.json", dev_report)
            # The plots first: report.html, written with the artifact, embeds them.
            plot_training_curves(self.state_dir / "metrics.jsonl", self.out_dir / "training_curves.png",
                                 best_epoch=state.best_epoch)
            if "calibration" in report:
                self.plot_calibration(report["calibration"])
            self.save_artifact(model, report, temperatures, best_epoch=state.best_epoch,
                               train_seconds=state.train_seconds, errors=errors)
            self.export_onnx(model)
            summary = {"report": report, "dev_report": dev_report, "history": outcome.history}
        summary = self.dist.broadcast_json(summary)
        speed = state.sentences / state.train_seconds if state.train_seconds else 0.0
        return TrainResult(out_dir=self.out_dir, report=summary["report"], dev_report=summary["dev_report"],
                           epochs=state.epoch, train_seconds=state.train_seconds, sentences_per_second=speed,
                           parameters=model.num_parameters(), history=summary["history"])

    def save_artifact(self, model: SlotTagger, report: dict[str, Any], temperatures: dict[str, float] | None, *,
                      best_epoch: int, train_seconds: float, errors: ErrorAnalysis | None = None) -> None:
        """Write the artifact (weights, vocabularies, config, card, report and, with ``errors``, its error
        analysis: errors.jsonl and report.html) into ``out_dir``."""
        card = model_card(self.data)
        card.update(best_epoch=best_epoch, train_seconds=round(train_seconds, 2), parameters=model.num_parameters())
        LoadedModel(model=model, featurizer=self.data.featurizer, tokenizer=self.data.tokenizer, card=card,
                    report=report, calibration=temperatures, aligner=self.data.aligner).save_pretrained(
            self.out_dir, report_title=f"{self.config.name} on {self.data.data_dir} ({report['split']})",
            report_errors=errors)

    def calibrate(self, model: SlotTagger, report: dict[str, Any]) -> dict[str, float] | None:
        """Fit confidence temperatures on dev; add ECE before/after on the report's split, each fit and
        its notes and warnings to ``report``; log what was applied and why."""
        data = self.data
        if not self.config.calibrate or not data.valid_examples:
            return None
        from slotfill.scoring.calibration import calibration_report, fit_calibration

        def split(examples: list[Example]):
            intents = [e.intent for e in examples] if data.intents else None
            return normalise_examples(examples, data.tokenizer), [list(e.tags) for e in examples], intents

        model_predictor = predictor(model, data)
        calibration = fit_calibration(model_predictor, *split(data.valid_examples))
        temperatures = calibration.temperatures
        evaluated = data.test_examples or data.valid_examples
        report["calibration"] = calibration_report(model_predictor, *split(evaluated), temperatures)
        report["calibration"].update(calibration.summary())
        result, where = report["calibration"], report["split"]
        for fit, ece in ((calibration.slot, "span"), (calibration.intent, "intent")):
            if fit is None:
                continue
            change = ""
            if f"{ece}_ece_before" in result:
                change = f"; {ece} ECE on {where} {result[f'{ece}_ece_before']:.4f} -> {result[f'{ece}_ece_after']:.4f}"
            self.log(f"confidence calibration: {fit.describe()}{change}")
            if fit.warning:
                self.log(f"warning: confidence calibration: {fit.warning}")
        return temperatures

    def plot_calibration(self, calibration: dict[str, Any]) -> None:
        from slotfill.scoring.reporting import plot_reliability

        for kind, temperature in (("span", "slot_temperature"), ("intent", "intent_temperature")):
            if f"{kind}_bins_before" in calibration:
                plot_reliability(calibration[f"{kind}_bins_before"], calibration[f"{kind}_bins_after"],
                                 self.out_dir / f"reliability_{kind}.png",
                                 f"{kind} confidence, temperature {calibration[temperature]:.3f}")

    def export_onnx(self, model: SlotTagger) -> None:
        """Add model.onnx to the artifact, checked against torch on the test (or dev) split."""
        if not self.config.export_onnx:
            return
        if model.config.contextual_dim:
            self.log("ONNX export skipped: the model reads contextual (transformer) features")
            return
        from slotfill.artifact.onnx_export import export_onnx

        data = self.data
        try:
            check = export_onnx(self.out_dir, normalise_examples(data.test_examples or data.valid_examples,
                                                                 data.tokenizer))
        except ArtifactError as exc:  # the artifact itself is complete and valid; only the graph is left out
            self.log(f"warning: model.onnx not written, the artifact will serve on the torch backend: {exc}")
            return
        self.log(f"wrote model.onnx: labels identical on {check.sentences} sentences, max emission difference "
                 f"{check.max_emission_diff:.1e} (check split), {check.synthetic_max_emission_diff:.1e} (synthetic)")
