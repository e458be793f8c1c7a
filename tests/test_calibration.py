"""Temperature scaling: fitted on dev, stored in the artifact, applied to confidences only."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from slotfill.artifact.artifact import MANIFEST, sha256_file
from slotfill.data import load_corpus
from slotfill.decoding.reference import DISALLOWED, CRFTables
from slotfill.errors import ArtifactError
from slotfill.inference.predictor import Predictor
from slotfill.scoring.calibration import Scores, _log_loss, fit_temperatures, golden_section
from slotfill.scoring.metrics import span_confidence_pairs
from slotfill.text.tokenizer import normalize_token

UTTERANCES = ["book a table for four at an italian place tomorrow at 7pm",
              "find me a cheap thai restaurant in san francisco"]


def test_golden_section_finds_the_minimum():
    assert golden_section(lambda x: (x - 1.3) ** 2, -5.0, 5.0) == pytest.approx(1.3, abs=1e-6)
    assert golden_section(lambda x: abs(math.exp(x) - 0.2), math.log(0.05), math.log(20)) == pytest.approx(
        math.log(0.2), abs=1e-5)


def test_scaled_tables_keep_forbidden_moves_forbidden():
    tables = CRFTables(np.array([[1.0, DISALLOWED], [2.0, -4.0]]), np.array([0.5, DISALLOWED]), np.array([3.0, 1.0]))
    half = tables.scaled(0.5)
    np.testing.assert_array_equal(half.transitions, [[0.5, DISALLOWED], [1.0, -2.0]])
    np.testing.assert_array_equal(half.start, [0.25, DISALLOWED])
    np.testing.assert_array_equal(half.end, [1.5, 0.5])


def test_training_stores_temperatures_that_lower_the_log_loss(sample_model_dir, sample_dir):
    manifest = json.loads((sample_model_dir / MANIFEST).read_text())
    assert "calibration.json" in manifest["files"]
    stored = json.loads((sample_model_dir / "calibration.json").read_text())
    report = json.loads((sample_model_dir / "report.json").read_text())["calibration"]
    assert report["slot_temperature"] == stored["slot_temperature"]
    for key in ("span_ece_before", "span_ece_after", "intent_ece_before", "intent_ece_after"):
        assert 0.0 <= report[key] <= 1.0
    assert (sample_model_dir / "reliability_span.png").stat().st_size > 1000

    predictor = Predictor.load(sample_model_dir)
    assert (predictor.slot_temperature, predictor.intent_temperature) == (stored["slot_temperature"],
                                                                            stored["intent_temperature"])
    corpus = load_corpus(sample_dir, tokenizer_config=predictor.tokenizer_config)
    dev = corpus.valid
    norms = [[normalize_token(t, predictor.tokenizer_config) or t for t in e.tokens] for e in dev]
    gold = [list(e.tags) for e in dev]
    scores = Scores(predictor, norms)

    def loss(temperature: float) -> float:
        return _log_loss(*span_confidence_pairs(gold, scores.spans(temperature)))

    fitted = stored["slot_temperature"]
    assert loss(fitted) <= loss(1.0) + 1e-9
    assert loss(fitted) <= min(loss(fitted * 1.5), loss(fitted / 1.5)) + 1e-9, "a minimum, not just an improvement"
    # Refitting on the same data gives the same temperatures (up to the onnx backend's float
    # differences from the torch model that training fitted with).
    refit = fit_temperatures(predictor, norms, gold, [e.intent for e in dev])
    assert refit == pytest.approx(stored, rel=1e-3)


def test_temperatures_change_confidences_but_never_labels(sample_model_dir):
    predictor = Predictor.load(sample_model_dir)
    calibrated = predictor.predict_texts(UTTERANCES)
    predictor.set_temperatures(1.0, 1.0)
    raw = predictor.predict_texts(UTTERANCES)
    predictor.set_temperatures(3.0, 3.0)
    softened = predictor.predict_texts(UTTERANCES)
    for a, b, c in zip(calibrated, raw, softened):
        assert [t.label for t in a.tokens] == [t.label for t in b.tokens] == [t.label for t in c.tokens]
        assert a.intent.name == b.intent.name == c.intent.name
        # A higher temperature spreads the probability: the top intent is less certain.
        assert c.intent.confidence < b.intent.confidence
    assert [t.confidence for t in softened[0].tokens] != [t.confidence for t in raw[0].tokens]


def test_absurd_temperatures_are_refused(sample_model_dir, tmp_path):
    target = tmp_path / "model"
    shutil.copytree(sample_model_dir, target)
    (target / "calibration.json").write_text(json.dumps({"slot_temperature": 0, "intent_temperature": "hot"}))
    manifest = json.loads((target / MANIFEST).read_text())
    manifest["files"]["calibration.json"] = {"sha256": sha256_file(target / "calibration.json"),
                                             "bytes": (target / "calibration.json").stat().st_size}
    (target / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="calibration.json: slot_temperature and intent_temperature"):
        Predictor.load(target)


def test_calibrate_command_rewrites_the_artifact(sample_model_dir, tmp_path, capsys):
    from training.cli import main as cli_main

    target = tmp_path / "model"
    shutil.copytree(sample_model_dir, target)
    (target / "calibration.json").write_text(json.dumps({"slot_temperature": 1.0, "intent_temperature": 1.0}))
    png = tmp_path / "reliability.png"
    # a hand-edited file is refused by the manifest
    with pytest.raises(ArtifactError, match="calibration.json: .*(truncated or replaced|sha256 does not match)"):
        Predictor.load(target)
    shutil.copy(sample_model_dir / "calibration.json", target / "calibration.json")
    assert cli_main(["calibrate", "--model", str(target), "--data", "sample", "--png", str(png)]) == 0
    out = capsys.readouterr().out
    assert "span ECE on test:" in out and png.stat().st_size > 1000
    predictor = Predictor.load(target)  # the manifest vouches for the new files
    stored = json.loads((target / "calibration.json").read_text())
    assert predictor.slot_temperature == stored["slot_temperature"]
    report = json.loads((target / "report.json").read_text())
    assert report["calibration"]["split"] == "test"
    # written as write_report writes a report (sorted keys, indent 2); the other entries and the text report
    # are as training left them
    assert (target / "report.json").read_text() == json.dumps(report, indent=2, sort_keys=True,
                                                              ensure_ascii=False) + "\n"
    before = json.loads((sample_model_dir / "report.json").read_text())
    assert {k: v for k, v in report.items() if k != "calibration"} == {
        k: v for k, v in before.items() if k != "calibration"}
    assert (target / "report.txt").read_bytes() == (sample_model_dir / "report.txt").read_bytes()


def test_calibrate_needs_a_dev_split(sample_model_dir, tmp_path, capsys):
    from training.cli import main as cli_main

    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "seq.in").write_text("book a table\n")
    (data / "seq.out").write_text("O O O\n")
    assert cli_main(["calibrate", "--model", str(sample_model_dir), "--data", str(tmp_path / "data")]) == 2
    assert "calibration needs a valid (dev) split" in capsys.readouterr().err


def test_a_temperature_that_lowers_the_dev_log_loss_is_applied():
    from slotfill.scoring.calibration import _fit_one

    fit = _fit_one("slot", lambda log_t: (log_t - 0.3) ** 2, (math.log(0.25), math.log(20.0)), 500, 40,
                   iterations=40)
    assert fit.applied and fit.note is None and fit.warning is None
    assert fit.temperature == fit.fitted == pytest.approx(math.exp(0.3), rel=1e-4)
    assert fit.log_loss_fitted < fit.log_loss_at_1 == pytest.approx(0.09)
    assert fit.describe().startswith(f"slot temperature {math.exp(0.3):.3f} (dev log loss 0.0900 at 1 -> 0.0000")


def test_a_temperature_that_does_not_lower_the_dev_log_loss_is_not_applied():
    """A search that lands on a worse point than temperature 1 (here: the objective's best value is at 1
    exactly, out of the search's sight) keeps temperature 1 and says why."""
    from slotfill.scoring.calibration import _fit_one

    def objective(log_t: float) -> float:
        return 0.05 if log_t == 0.0 else 0.1 + (log_t - 1.0) ** 2

    fit = _fit_one("intent", objective, (math.log(0.05), math.log(20.0)), 300, 25, iterations=40)
    assert fit.temperature == 1.0 and not fit.applied
    assert fit.fitted == pytest.approx(math.e, rel=1e-4)
    assert fit.note == (f"not applied: the fitted temperature {math.e:.3f} does not lower the dev log loss "
                        "(0.1000 against 0.0500 at temperature 1)")
    assert fit.describe() == f"intent temperature 1 ({fit.note})"
    assert fit.to_dict()["applied"] is False and fit.to_dict()["note"] == fit.note


def test_a_temperature_on_a_bound_of_the_search_range_is_flagged():
    from slotfill.scoring.calibration import _fit_one

    low, high = math.log(0.25), math.log(20.0)
    fit = _fit_one("slot", lambda log_t: log_t, (low, high), 500, 40, iterations=40)  # best: as low as allowed
    assert fit.applied and fit.temperature == pytest.approx(0.25, rel=1e-4)
    assert fit.warning == ("the fitted slot temperature 0.250 is on the lower bound of its search range "
                           "[0.25, 20]: the best temperature may lie beyond it")
    fit = _fit_one("slot", lambda log_t: -log_t, (low, high), 500, 40, iterations=40)
    assert "on the upper bound" in fit.warning and fit.temperature == pytest.approx(20.0, rel=1e-4)


@pytest.mark.parametrize(("predictions", "wrong"), [(500, 9), (15, 6), (2000, 1995), (0, 0)])
def test_too_few_wrong_or_right_dev_predictions_skip_the_fit(predictions, wrong):
    from slotfill.scoring.calibration import MIN_RIGHT, MIN_WRONG, _fit_one

    called = []
    fit = _fit_one("slot", lambda log_t: called.append(log_t) or log_t ** 2, (-1.0, 1.0), predictions, wrong,
                   iterations=10)
    assert not called, "no search without enough data"
    assert fit.temperature == 1.0 and fit.fitted is None and not fit.applied
    assert fit.note == (f"not fitted: the dev split has {wrong} wrong and {predictions - wrong} right predicted "
                        f"spans; a fit needs at least {MIN_WRONG} wrong and {MIN_RIGHT} right ones")


def test_calibration_summary_for_the_report():
    from slotfill.scoring.calibration import Calibration, TemperatureFit

    slot = TemperatureFit("slot", 1.0, 700, 4, note="not fitted: too few")
    intent = TemperatureFit("intent", 0.05, 300, 12, fitted=0.05, log_loss_at_1=0.2, log_loss_fitted=0.1,
                            warning="on the lower bound")
    summary = Calibration(slot, intent).summary()
    assert Calibration(slot, intent).temperatures == {"slot_temperature": 1.0, "intent_temperature": 0.05}
    assert summary["notes"] == ["slot temperature not fitted: too few"]
    assert summary["warnings"] == ["on the lower bound"]
    assert summary["fits"]["slot"]["applied"] is False and summary["fits"]["intent"]["applied"] is True
    assert summary["fits"]["intent"]["dev_wrong"] == 12
