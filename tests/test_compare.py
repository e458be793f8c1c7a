"""slotfill compare: configurations x seeds -> Markdown table and JSON."""

from __future__ import annotations

import json
import re
import statistics
import time
from pathlib import Path

import pytest

from slotfill.errors import ConfigError
from training.compare import run_comparison
from training.config import TrainConfig

from .conftest import SMALL_MODEL


def test_compare_table_over_configs_and_seeds(sample_dir, tmp_path):
    base = TrainConfig.from_dict({**SMALL_MODEL, "epochs": 2, "hidden_size": 32})
    messages: list[str] = []
    table = run_comparison(sample_dir, tmp_path, base, configs=["gru", "bilstm-crf"], seeds=2, log=messages.append)
    # A line as each run starts and one as it ends: configuration, seed, slot F1, duration, time left.
    assert [m.split(": ", 2)[1] for m in messages] == [
        "run 1/4", "run 1/4", "run 2/4", "run 2/4", "run 3/4", "run 3/4", "run 4/4", "run 4/4"]
    assert messages[0] == "compare: run 1/4: gru seed 0 ..."
    finished = messages[1::2]
    assert re.fullmatch(r"compare: run 1/4: gru seed 0: slot F1 \d+\.\d\d, \d+s \(training \d+s\); "
                        r"about \d+(m\d\ds|s) left", finished[0]), finished[0]
    assert finished[3].startswith("compare: run 4/4: bilstm-crf seed 1: slot F1 ") and finished[3].endswith("; done")
    lines = table.splitlines()
    assert lines[0] == f"Data: `{sample_dir}` (test split), 2 seed(s) per configuration, mean ± std."

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split("|")]

    header = cells(next(line for line in lines if line.startswith("| configuration")))
    assert header == ["configuration", "slot F1", "intent acc.", "train time (s)", "parameters", "tag/s (1)",
                      "tag/s (64)"]
    rows = {row[0]: dict(zip(header, row)) for row in map(cells, lines) if row[0] in ("gru", "bilstm-crf")}
    assert list(rows) == ["gru", "bilstm-crf"]
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert set(saved["results"]) == {"gru", "bilstm-crf"}
    for name, row in rows.items():
        runs = saved["results"][name]
        assert [r["seed"] for r in runs] == [0, 1]
        run_dirs = [tmp_path / name / f"seed{seed}" for seed in (0, 1)]
        reports = [json.loads((run / "report.json").read_text()) for run in run_dirs]
        # Every cell is what the runs' own reports and cards say, as mean ± sample std over the seeds.
        for key, column in (("slot_f1", "slot F1"), ("intent_accuracy", "intent acc.")):
            assert [r[key] for r in runs] == [report[key] for report in reports]
            values = [100 * report[key] for report in reports]
            assert row[column] == f"{statistics.fmean(values):.2f} ± {statistics.stdev(values):.2f}"
        cards = [json.loads((run / "model_card.json").read_text()) for run in run_dirs]
        assert row["parameters"] == f"{cards[0]['parameters']:,}" and cards[0]["parameters"] == cards[1]["parameters"]
        assert [round(r["train_seconds"], 2) for r in runs] == [card["train_seconds"] for card in cards]
        assert row["train time (s)"] == f"{statistics.mean(r['train_seconds'] for r in runs):.0f}"
        assert row["tag/s (1)"] == f"{statistics.mean(r['tag_single_per_second'] for r in runs):,.0f}"
        assert row["tag/s (64)"] == f"{statistics.mean(r['tag_batch64_per_second'] for r in runs):,.0f}"
        # The seeds are the runs' own: different seeds, different weights.
        weights = [(run / "model.safetensors").read_bytes() for run in run_dirs]
        assert weights[0] != weights[1]
        assert [card["training"]["seed"] for card in cards] == [0, 1]
    assert (tmp_path / "compare.md").read_text().strip() == table.strip()
    # each run is a complete artifact of its configuration
    config = json.loads((tmp_path / "bilstm-crf" / "seed1" / "config.json").read_text())
    assert config["cell"] == "lstm" and config["decoder"] == "crf" and config["bidirectional"] is True
    config = json.loads((tmp_path / "gru" / "seed0" / "config.json").read_text())
    assert config["cell"] == "gru" and config["bidirectional"] is False and config["decoder"] == "softmax"
    assert config["hidden_size"] == 32  # the base settings under each configuration's


def test_compare_rejects_unknown_configuration(sample_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown configuration"):
        run_comparison(sample_dir, tmp_path, TrainConfig(), configs=["transformer-xl"], seeds=1)


def test_a_distilled_configuration_needs_its_teacher_listed_first(tmp_path):
    from slotfill.errors import ConfigError
    from training.compare import run_comparison
    from training.config import TrainConfig

    with pytest.raises(ConfigError, match="needs minilm-bilstm-crf listed before it"):
        run_comparison(tmp_path, tmp_path / "out", TrainConfig(), configs=["bilstm-crf-distilled"], seeds=1)


def test_a_distilled_row_takes_a_teacher_per_seed_from_the_settings(small_corpus, tmp_path):
    """--set distill_from=.../seed{seed}: each seed's student learns from that seed's teacher, trained
    elsewhere, with the row's own transfer set (one slot-substituted copy of each sentence)."""
    from training.pipeline import train

    small = {**SMALL_MODEL, "epochs": 1, "hidden_size": 16, "export_onnx": False, "calibrate": False}
    for seed in (0, 1):
        train(small_corpus, tmp_path / "teachers" / f"seed{seed}", overrides=small, seed=seed, progress=False,
              log=lambda m: None)
    base = TrainConfig.from_dict({**small, "distill_from": str(tmp_path / "teachers" / "seed{seed}")})
    run_comparison(small_corpus, tmp_path / "out", base, configs=["bilstm-crf-distilled-mpnet"], seeds=2,
                   log=lambda m: None)
    for seed in (0, 1):
        card = json.loads((tmp_path / "out" / "bilstm-crf-distilled-mpnet" / f"seed{seed}" / "model_card.json")
                          .read_text())
        assert card["training"]["distill_from"] == str(tmp_path / "teachers" / f"seed{seed}")
        assert card["training"]["augment"] == 1 and card["augmented_sentences"] > 0


def test_compare_logs_to_stderr_by_default(sample_dir, tmp_path, capsys):
    """The progress lines go to standard error (the table is what standard output is for), flushed as
    they come, so they show while `slotfill compare ... | tee` runs."""
    import inspect

    from training.compare import _log_to_stderr

    assert inspect.signature(run_comparison).parameters["log"].default is _log_to_stderr
    _log_to_stderr("compare: run 1/2: gru seed 0 ...")
    captured = capsys.readouterr()
    assert captured.err == "compare: run 1/2: gru seed 0 ...\n" and captured.out == ""


class _Disturbed:
    """A predictor whose every call costs 1 ms per sentence plus 0.2 ms, except one call of 64 that is
    held up for 0.3 s (another process on the core, a collection), as a single timed pass would record."""

    def __init__(self) -> None:
        self.singles = 0
        self.disturbed = False

    def predict_tokens(self, token_lists):
        self.singles += len(token_lists) == 1
        # The first call of 64 after the sentences were tagged one at a time: inside the first timed pass.
        if len(token_lists) == 64 and self.singles > 8 and not self.disturbed:
            self.disturbed = True
            time.sleep(0.3)
        time.sleep(0.0002 + 0.00001 * len(token_lists))
        return [None] * len(token_lists)


def test_tagging_speed_is_not_thrown_off_by_one_disturbed_pass():
    from training.compare import tagging_speed

    sentences = [["a", "b"]] * 128
    single, batched = tagging_speed(_Disturbed(), sentences, passes=3)
    # Undisturbed, calls of 64 take ~1 ms each: well over 20,000 sentences/s; the held-up pass alone gives
    # under 500. One at a time, ~0.21 ms a call: under 5,000 sentences/s.
    assert batched > 5000 > single, (single, batched)
    # A single pass measures the disturbance.
    _, once = tagging_speed(_Disturbed(), sentences, passes=1)
    assert once < 500


def test_a_table_row_slower_in_batches_than_one_at_a_time_is_flagged():
    from training.compare import comparison_table

    def run(single: float, batched: float) -> dict:
        return {"seed": 0, "slot_f1": 0.9, "intent_accuracy": None, "split": "test", "train_seconds": 10.0,
                "epochs": 3, "train_sentences_per_second": 100.0, "parameters": 1000,
                "tag_single_per_second": single, "tag_batch64_per_second": batched}

    table = comparison_table({"bigru": [run(1400, 3600)], "bigru-crf": [run(1057, 24)]}, Path("data"), 1)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| bigru")}
    assert rows["bigru-crf"].rstrip(" |").endswith("24 †") and "†" not in rows["bigru"]
    assert table.rstrip().splitlines()[-1].startswith("† Implausible: bigru-crf tagged fewer sentences per second "
                                                      "in calls of 64 than one at a time")
    plain = comparison_table({"bigru": [run(1400, 3600)]}, Path("data"), 1)
    assert "†" not in plain
