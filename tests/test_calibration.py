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
    assert json.loads((target / "report.json").read_text())["calibration"]["split"] == "test"


def test_calibrate_needs_a_dev_split(sample_model_dir, tmp_path, capsys):
    from training.cli import main as cli_main

    data = tmp_path / "data" / "train"
    data.mkdir(parents=True)
    (data / "seq.in").write_text("book a table\n")
    (data / "seq.out").write_text("O O O\n")
    assert cli_main(["calibrate", "--model", str(sample_model_dir), "--data", str(tmp_path / "data")]) == 2
    assert "calibration needs a valid (dev) split" in capsys.readouterr().err
