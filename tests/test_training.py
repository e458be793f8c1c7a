"""The training pipeline: generalisation, determinism, resume after a kill, clear failures."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from slotfill.errors import ConfigError
from training.config import TrainConfig
from training.pipeline import TrainingError, train

from .conftest import REPO, SMALL_MODEL

TINY = {**SMALL_MODEL, "epochs": 2, "hidden_size": 32}


def quiet(message: str) -> None:
    pass


def test_sample_model_generalises_to_held_out_sentences(sample_model_dir):
    report = json.loads((sample_model_dir / "report.json").read_text())
    assert report["split"] == "test"
    # The test split uses filler values never seen in training.
    assert report["slot_f1"] >= 0.90, report["slot_f1"]
    assert report["intent_accuracy"] >= 0.90
    assert set(report["per_slot"]) >= {"cuisine", "party_size", "date", "time", "location"}


def test_metrics_history_and_curves(sample_model_dir):
    lines = (sample_model_dir / "training" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == list(range(1, SMALL_MODEL["epochs"] + 1))
    assert all(0.0 <= r["dev_slot_f1"] <= 1.0 and r["train_loss"] > 0 for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]
    assert (sample_model_dir / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_same_seed_gives_identical_weights_and_other_seed_does_not(sample_dir, tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(sample_dir, tmp_path / name, overrides=TINY, seed=seed, progress=False, log=quiet)
        runs[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def test_resume_after_sigkill_matches_uninterrupted_run(sample_dir, tmp_path):
    settings = [f"{k}={v}" for k, v in {**TINY, "epochs": 4}.items()]
    reference = tmp_path / "reference"
    train(sample_dir, reference, overrides={**TINY, "epochs": 4}, seed=3, progress=False, log=quiet)

    out = tmp_path / "killed"
    command = [sys.executable, "-m", "training.cli", "train", "--data", str(sample_dir), "--out", str(out), "--seed", "3",
               "--quiet", "--set", *settings]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = out / "training" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    assert process.poll() is None, "training finished before it could be killed"
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (out / "manifest.json").exists()

    resumed = subprocess.run(command + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    epochs = [json.loads(line)["epoch"] for line in metrics.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


def test_existing_output_is_not_overwritten_by_accident(sample_dir, sample_model_dir):
    before = (sample_model_dir / "model.safetensors").read_bytes()
    with pytest.raises(ConfigError, match="already holds"):
        train(sample_dir, sample_model_dir, overrides=TINY, progress=False, log=quiet)
    assert (sample_model_dir / "model.safetensors").read_bytes() == before


def test_nan_loss_stops_with_a_clear_error(sample_dir, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("table " + " ".join(["nan"] * 50) + "\n")
    with pytest.raises(TrainingError, match="loss became nan at epoch 1"):
        train(sample_dir, tmp_path / "out", overrides={**TINY, "word_vectors": str(vectors), "singleton_unk": 0.0},
              progress=False, log=quiet)


def test_word_vectors_with_wrong_dimension_name_file_and_line(sample_dir, tmp_path):
    vectors = tmp_path / "vectors.txt"
    vectors.write_text("table " + " ".join(["0.1"] * 50) + "\nchair 0.1 0.2\n")
    with pytest.raises(Exception, match=r"vectors.txt:2: expected a word and 50 numbers"):
        train(sample_dir, tmp_path / "out", overrides={**TINY, "word_vectors": str(vectors)}, progress=False, log=quiet)


def test_config_file_and_overrides(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"cell": "gru", "hidden_size": 128, "tokenizer": {"split_clitics": True}}))
    config = TrainConfig.from_file(path)
    config.apply_overrides(["hidden_size=64", "bidirectional=false", "lr=0.01"])
    assert (config.cell, config.hidden_size, config.bidirectional, config.lr) == ("gru", 64, False, 0.01)
    path.write_text(json.dumps({"hiden_size": 3}))
    with pytest.raises(ConfigError, match="unknown setting 'hiden_size'"):
        TrainConfig.from_file(path)
    with pytest.raises(ConfigError, match="epochs must be int"):
        TrainConfig().apply_overrides(["epochs=many"])
    bad = TrainConfig()
    bad.cell = "transformer"
    with pytest.raises(ConfigError, match="cell: must be one of"):
        bad.validate()


def test_folder_without_valid_split_holds_out_part_of_train(tmp_path, sample_dir):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for name in ("seq.in", "seq.out", "label"):
        (data / "train" / name).write_text((sample_dir / "train" / name).read_text())
    messages = []
    result = train(data, tmp_path / "out", overrides=TINY, progress=False, log=messages.append)
    assert any("holding out" in m for m in messages)
    assert result.report["split"] == "valid"
