"""slotfill compare: configurations x seeds -> Markdown table and JSON."""

from __future__ import annotations

import json
import statistics

import pytest

from slotfill.errors import ConfigError
from training.compare import run_comparison
from training.config import TrainConfig

from .conftest import SMALL_MODEL


def test_compare_table_over_configs_and_seeds(sample_dir, tmp_path):
    base = TrainConfig.from_dict({**SMALL_MODEL, "epochs": 2, "hidden_size": 32})
    table = run_comparison(sample_dir, tmp_path, base, configs=["gru", "bilstm-crf"], seeds=2, log=lambda m: None)
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
