"""The training pipeline: generalisation, determinism, resume after a kill, clear failures."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slotfill.errors import ConfigError, SlotfillError
from slotfill.inference.predictor import Predictor
from slotfill.models.config import TaggerConfig
from training.checkpoint import checkpoint_epoch
from training.config import TrainConfig
from training.loop import TrainingError
from training.pipeline import train
from training.prepare import TrainingData

from .conftest import REPO, SMALL_MODEL

TINY = {**SMALL_MODEL, "epochs": 2, "hidden_size": 32}
KILL_IN_CHECKPOINT = REPO / "tests" / "helpers" / "kill_in_checkpoint.py"


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
    # The best epoch is picked by its selection score, dev slot F1 + 0.001 x dev intent accuracy:
    # an epoch is marked best exactly when its score beats every earlier one.
    best_so_far = -1.0
    for record in records:
        assert record["selection_score"] == record["dev_slot_f1"] + 1e-3 * record["dev_intent_accuracy"]
        assert record.get("best", False) == (record["selection_score"] > best_so_far)
        best_so_far = max(best_so_far, record["selection_score"])
    best = max(records, key=lambda r: (r["selection_score"], -r["epoch"]))
    assert json.loads((sample_model_dir / "report.json").read_text())["best_epoch"] == best["epoch"]


def test_same_seed_gives_identical_weights_and_other_seed_does_not(sample_dir, tmp_path):
    runs = {}
    for name, seed in (("a", 1), ("b", 1), ("c", 2)):
        train(sample_dir, tmp_path / name, overrides=TINY, seed=seed, progress=False, log=quiet)
        runs[name] = (tmp_path / name / "model.safetensors").read_bytes()
    assert runs["a"] == runs["b"]
    assert runs["a"] != runs["c"]


def _complete_epochs(metrics) -> list[int]:
    epochs = []
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            epochs.append(json.loads(line)["epoch"])
        except ValueError:
            break  # the kill cut this line short
    return epochs


def test_resume_after_repeated_sigkills_matches_uninterrupted_run(sample_dir, tmp_path):
    """SIGKILL a run at seeded random moments (once, deterministically, inside a checkpoint write) and
    resume it each time: it always resumes from the last complete checkpoint and ends byte-identical."""
    epochs = 4
    started = time.monotonic()
    reference = tmp_path / "reference"
    train(sample_dir, reference, overrides={**TINY, "epochs": epochs}, seed=3, progress=False, log=quiet)
    epoch_seconds = (time.monotonic() - started) / epochs  # this machine's pace, evaluation included

    out = tmp_path / "killed"
    state_dir = out / "training"
    last, metrics = state_dir / "last.safetensors", state_dir / "metrics.jsonl"
    arguments = ["train", "--data", str(sample_dir), "--out", str(out), "--seed", "3",
                 "--set", *[f"{k}={v}" for k, v in {**TINY, "epochs": epochs}.items()]]

    def launch(*extra: str, kill_in_checkpoint: int | None = None) -> tuple[subprocess.Popen, Path]:
        log = tmp_path / f"launch{len(list(tmp_path.glob('launch*.log')))}.log"
        command = [sys.executable, "-m", "training.cli"]
        if kill_in_checkpoint is not None:
            command = [sys.executable, str(KILL_IN_CHECKPOINT), str(kill_in_checkpoint), "--"]
        with log.open("w") as stderr:
            process = subprocess.Popen(command + arguments + list(extra), cwd=REPO, stdout=subprocess.DEVNULL,
                                       stderr=stderr)
        return process, log

    def resumed_from(log: Path) -> int | None:
        found = [int(line.split()[3]) for line in log.read_text().splitlines() if line.startswith("resuming after epoch")]
        assert len(found) <= 1
        return found[0] if found else None

    # 1. Killed inside the write of epoch 2's checkpoint, after epoch 2's metrics line went out: half a
    # temp file is left beside the complete checkpoint of epoch 1.
    process, log = launch(kill_in_checkpoint=2)
    assert process.wait(timeout=300) == -signal.SIGKILL
    assert checkpoint_epoch(last) == 1
    assert len(list(state_dir.glob(".last.safetensors.*.tmp"))) == 1
    assert _complete_epochs(metrics) == [1, 2]

    # 2. Three more kills, at seeded random moments of the training loop.
    rng = random.Random(6)
    for _ in range(3):
        committed = checkpoint_epoch(last)
        process, log = launch("--resume")
        deadline = time.monotonic() + 120
        while process.poll() is None and "training lstm" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.02)
        # At most 0.7 epoch each, so the run cannot finish before the last kill.
        time.sleep(rng.uniform(0.0, 0.7) * epoch_seconds)
        assert process.poll() is None, "training finished before it could be killed"
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        # Resumed from the last complete checkpoint, never from the temp file of a write cut short.
        assert resumed_from(log) == committed
        # metrics.jsonl: every committed epoch once, plus at most the line of an uncommitted one.
        now = checkpoint_epoch(last) or 0
        logged = _complete_epochs(metrics)
        assert logged[:now] == list(range(1, now + 1)) and len(logged) <= now + 1
        assert not (out / "manifest.json").exists() or now == epochs

    # 3. The last resume runs to the end.
    committed = checkpoint_epoch(last)
    process, log = launch("--resume")
    assert process.wait(timeout=300) == 0
    assert resumed_from(log) == committed
    assert _complete_epochs(metrics) == list(range(1, epochs + 1))
    assert not list(state_dir.glob(".*.tmp")) and not list(out.glob(".*.tmp"))
    assert (out / "model.safetensors").read_bytes() == (reference / "model.safetensors").read_bytes()
    texts = [line.strip() for line in (sample_dir / "test" / "seq.in").read_text().splitlines()[:50]]
    assert Predictor.load(out).predict_texts(texts) == Predictor.load(reference).predict_texts(texts)


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
    # Architecture settings go to the model's config, the others stay in the training config.
    assert (config.model.cell, config.model.hidden_size, config.model.bidirectional) == ("gru", 64, False)
    assert (config.lr, config.tokenizer) == (0.01, {"split_clitics": True})
    assert TrainConfig().model == TaggerConfig()  # the training defaults are the model's defaults
    with pytest.raises(ConfigError, match="epochs must be int"):
        TrainConfig().apply_overrides(["epochs=many"])
    with pytest.raises(ConfigError, match="hidden_size must be int"):
        TrainConfig().apply_overrides(["hidden_size=wide"])
    bad = TrainConfig()
    bad.model.cell = "transformer"
    with pytest.raises(ConfigError, match="cell: must be one of rnn, lstm, gru"):
        bad.validate()
    bad = TrainConfig()
    bad.set("scheme", "IOBES")
    with pytest.raises(ConfigError, match="scheme: must be one of IOB2, IOB1, BIOES"):
        bad.validate()


def test_config_round_trips_with_the_architecture_nested():
    config = TrainConfig()
    config.apply_overrides(["hidden_size=100", "decoder=softmax", "epochs=3", "tokenizer.split_clitics=true"])
    data = json.loads(json.dumps(config.to_dict()))
    assert data["model"] == {**TaggerConfig().architecture(), "hidden_size": 100, "decoder": "softmax"}
    assert "hidden_size" not in data and data["epochs"] == 3
    assert "vocab_size" not in data["model"] and "id2label" not in data["model"]  # taken from the data
    assert TrainConfig.from_dict(data) == config
    flat = {"hidden_size": 100, "decoder": "softmax", "epochs": 3, "tokenizer": {"split_clitics": True}}
    assert TrainConfig.from_dict(flat) == config


@pytest.mark.parametrize("settings, problem", [
    ({"hiden_size": 100}, "unknown setting 'hiden_size' (did you mean hidden_size?)"),
    ({"epoch": 3}, "unknown setting 'epoch' (did you mean epochs?)"),
    ({"model": {"hiden_size": 100}}, "model: unknown setting 'hiden_size' (did you mean hidden_size?)"),
    ({"model": {"lr": 0.1}}, 'model: lr is a training setting; give it outside "model"'),
    ({"model": 3}, "model must be an object of architecture settings"),
    ({"vocab_size": 100}, "vocab_size is not a setting; the model takes it from the training data"),
])
def test_unknown_settings_are_refused_by_name(tmp_path, settings, problem):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings))
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_file(path)
    assert str(info.value) == f"{path}: {problem}"
    key, value = next(iter(settings.items()))
    if not isinstance(value, dict):
        with pytest.raises(ConfigError) as info:
            TrainConfig().apply_overrides([f"{key}={value}"])
        assert str(info.value) == f"--set: {problem}"


def test_the_model_is_built_from_the_training_configs_architecture_and_the_data(sample_dir):
    config = TrainConfig.from_dict({**TINY, "cell": "gru", "bidirectional": False, "intent_pooling": "mean"})
    data = TrainingData(sample_dir, config, log=quiet)
    model = data.build_model()
    assert model.config == dataclasses.replace(
        config.model, vocab_size=len(data.featurizer.words), num_chars=len(data.featurizer.chars),
        id2label=dict(enumerate(data.labels)), id2intent=dict(enumerate(data.intents)))
    assert (model.config.cell, model.config.hidden_size, model.config.intent_pooling) == ("gru", 32, "mean")
    assert model.encoder.rnn.hidden_size == 32 and not model.encoder.rnn.bidirectional
    assert config.model.vocab_size == 0  # the training config keeps the architecture alone


def _rewrite_checkpoint(path: Path, change) -> None:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as handle:
        meta = json.loads(handle.metadata()["slotfill"])
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    change(meta, tensors)
    save_file(tensors, str(path), metadata={"slotfill": json.dumps(meta)})


def test_resume_names_the_selection_score_and_refuses_incomplete_checkpoints(sample_dir, tmp_path):
    out = tmp_path / "out"
    train(sample_dir, out, overrides=TINY, progress=False, log=quiet)
    records = [json.loads(line) for line in (out / "training" / "metrics.jsonl").read_text().splitlines()]
    best = max(records, key=lambda r: (r["selection_score"], -r["epoch"]))
    before = (out / "model.safetensors").read_bytes()
    messages: list[str] = []
    train(sample_dir, out, overrides=TINY, resume=True, progress=False, log=messages.append)
    assert (f"resuming after epoch 2 (best epoch {best['epoch']}, selection score {best['selection_score']:.5f} = "
            "dev slot F1 + 0.001 x dev intent accuracy)") in messages
    assert (out / "model.safetensors").read_bytes() == before  # the best weights came from the checkpoint

    last = out / "training" / "last.safetensors"
    intact = last.read_bytes()
    damages = {
        "no best weights": lambda meta, tensors: [tensors.pop(k) for k in list(tensors) if k.startswith("best.")],
        "no metrics history": lambda meta, tensors: meta.pop("history"),
        "loop state without the selection score": lambda meta, tensors: meta["state"].pop("selection_score"),
    }
    for what, damage in damages.items():
        last.write_bytes(intact)
        _rewrite_checkpoint(last, damage)
        with pytest.raises(SlotfillError, match=r"last.safetensors: unreadable checkpoint .*delete it to start over"):
            train(sample_dir, out, overrides=TINY, resume=True, progress=False, log=quiet)


def test_folder_without_valid_split_holds_out_part_of_train(tmp_path, sample_dir):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    for name in ("seq.in", "seq.out", "label"):
        (data / "train" / name).write_text((sample_dir / "train" / name).read_text())
    messages = []
    result = train(data, tmp_path / "out", overrides=TINY, progress=False, log=messages.append)
    assert any("holding out" in m for m in messages)
    assert result.report["split"] == "valid"


def test_the_log_says_what_comes_and_how_long_is_left(sample_dir, tmp_path):
    """Before the first epoch: the tokenizer check, how many epochs at most and when early stopping ends the
    run; after each epoch: an estimate of the time left; at the end: both temperatures. --resume on an empty
    --out says it starts from scratch."""
    messages: list[str] = []
    train(sample_dir, tmp_path / "out", overrides={**TINY, "epochs": 3, "patience": 2}, resume=True, progress=False,
          log=messages.append)
    assert messages[0] == ("tokenizer check: 0/2000 training sentences (0.00%) tokenise differently from their text "
                           "as typed (limit 1.00%, max_tokenizer_mismatch)")
    assert messages[1] == (f"--resume: no checkpoint to resume from ({tmp_path / 'out' / 'training' / 'last.safetensors'}"
                           " does not exist); training from scratch")
    plan = ("starting at most 3 epochs, 63 batches of up to 32 sentences each; stopping early after 2 epochs in a row "
            "without a better dev selection score (patience 2)")
    epochs = [m for m in messages if m.startswith("epoch ")]
    assert messages.index(plan) < messages.index(epochs[0])
    records = [json.loads(line) for line in (tmp_path / "out" / "training" / "metrics.jsonl").read_text().splitlines()]
    assert len(epochs) == len(records) >= 2
    first = epochs[0]
    assert first.startswith("epoch 1: ") and "/epoch; at most " in first and first.endswith("left (2 epochs)]")
    last = epochs[-1]
    assert last.endswith("[that was the last epoch]") or last.endswith(
        "[stopping early: 2 epochs in a row without a better dev selection score]")
    calibration = [m for m in messages if m.startswith("confidence calibration: ")]
    assert [m.split(": ", 1)[1].split(" temperature ")[0] for m in calibration] == ["slot", "intent"]
    report = json.loads((tmp_path / "out" / "report.json").read_text())["calibration"]
    stored = json.loads((tmp_path / "out" / "calibration.json").read_text())
    for line, kind in zip(calibration, ("slot", "intent")):
        fit = report["fits"][kind]
        assert fit["temperature"] == stored[f"{kind}_temperature"]
        shown = f"{fit['temperature']:.3f}" if fit["applied"] else f"1 ({fit['note']})"
        assert line.startswith(f"confidence calibration: {kind} temperature {shown}")


def test_patience_p_stops_after_p_epochs_without_a_better_score(sample_dir, tmp_path):
    """With a learning rate too small to change any prediction, no epoch after the first beats it: patience 2
    ends the run after epochs 2 and 3, and the best weights are epoch 1's."""
    result = train(sample_dir, tmp_path / "out", overrides={**TINY, "epochs": 10, "patience": 2, "lr": 1e-12},
                   progress=False, log=quiet)
    records = [json.loads(line) for line in (tmp_path / "out" / "training" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records if "epoch" in r and "selection_score" in r] == [1, 2, 3]
    assert result.report["best_epoch"] == 1


def test_the_time_left_counts_down_to_the_maximum_or_to_early_stopping():
    from training.loop import LoopState, TrainingLoop

    def left(epochs: int, patience: int, epoch: int, bad: int, seconds: list[float]) -> str:
        loop = TrainingLoop(TrainConfig.from_dict({"epochs": epochs, "patience": patience}), None, Path("."),
                            resume=False, dist=None, progress=False, log=quiet)
        return loop._time_left(LoopState(epoch=epoch, bad_epochs=bad), seconds)

    # 36 epochs left at 10 s each; with patience 9 and 2 bad epochs, 7 more bad ones end the run.
    assert left(40, 9, 4, 2, [8.0, 12.0]) == "10s/epoch; at most 6m00s left (36 epochs), 1m10s if no better epoch comes (7 more)"
    assert left(40, 9, 38, 0, [10.0]) == "10s/epoch; at most 20s left (2 epochs)"  # the maximum comes first
    assert left(40, 0, 4, 30, [10.0]) == "10s/epoch; at most 6m00s left (36 epochs)"  # no early stopping
    assert left(40, 9, 40, 0, [10.0]) == "that was the last epoch"
    # Patience 9 stops after the 9th epoch in a row without a better score.
    assert left(40, 9, 20, 8, [10.0]).endswith("10s if no better epoch comes (1 more)")
    assert left(40, 9, 21, 9, [10.0]) == "stopping early: 9 epochs in a row without a better dev selection score"
    assert left(40, 1, 5, 1, [10.0]) == "stopping early: 1 epoch in a row without a better dev selection score"


def test_durations_read_as_a_person_reads_them():
    from training.timing import format_duration, time_left

    assert [format_duration(s) for s in (0.4, 42, 59.6, 185, 3599, 3600, 7620)] == [
        "0s", "42s", "1m00s", "3m05s", "59m59s", "1h00m", "2h07m"]
    assert time_left([10.0, 20.0], 3) == 45.0 and time_left([5.0], 0) == 0.0
    with pytest.raises(ValueError):
        time_left([], 3)


def test_the_sample_recipe_is_what_the_quickstart_trains_with():
    from training.cli import build_parser
    from training.cli._options import train_config

    args = build_parser().parse_args(["train", "--data", "sample", "--config", "sample", "--out", "unused"])
    config = train_config(args)
    assert (config.epochs, config.patience, config.threads) == (15, 4, 1)
    assert config.model == TaggerConfig()  # the default architecture
    assert "--config sample" in (REPO / "scripts" / "quickstart.sh").read_text()


@pytest.mark.slow
def test_the_sample_recipe_trains_a_good_model_quickly_without_worse_calibration(sample_dir, tmp_path):
    """What the quickstart promises: on the sample, test slot F1 >= 0.9 in well under 2 minutes of training,
    and calibration that leaves the test span ECE no worse than it was, or declines with its reason."""
    from slotfill.data.sample import sample_recipe

    config = TrainConfig.from_file(sample_recipe())
    started = time.perf_counter()
    result = train(sample_dir, tmp_path / "out", config=config, progress=False, log=quiet)
    assert time.perf_counter() - started < 120
    assert result.report["split"] == "test" and result.report["slot_f1"] >= 0.9
    calibration = result.report["calibration"]
    fit = calibration["fits"]["slot"]
    assert calibration["span_ece_after"] <= calibration["span_ece_before"] or (not fit["applied"] and fit["note"])
