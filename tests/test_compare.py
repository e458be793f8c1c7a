"""slotfill compare: configurations x seeds -> Markdown table and JSON."""

from __future__ import annotations

import json

import pytest

from slotfill.errors import ConfigError
from training.compare import run_comparison
from training.config import TrainConfig

from .conftest import SMALL_MODEL


def test_compare_table_over_configs_and_seeds(sample_dir, tmp_path):
    base = TrainConfig()
    for key, value in {**SMALL_MODEL, "epochs": 2, "hidden_size": 32}.items():
        base.set(key, value)
    table = run_comparison(sample_dir, tmp_path, base, configs=["gru", "bilstm-crf"], seeds=2, log=lambda m: None)
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith("| configuration"))
    assert "slot F1" in header and "tag/s (1)" in header
    rows = {line.split("|")[1].strip(): line for line in lines if line.startswith("| gru") or line.startswith("| bilstm")}
    assert set(rows) == {"gru", "bilstm-crf"}
    assert all("±" in row for row in rows.values())
    saved = json.loads((tmp_path / "compare.json").read_text())
    runs = saved["results"]["gru"]
    assert [r["seed"] for r in runs] == [0, 1]
    assert runs[0]["slot_f1"] != runs[1]["slot_f1"] or runs[0]["train_seconds"] != runs[1]["train_seconds"]
    assert (tmp_path / "compare.md").read_text().strip() == table.strip()
    # each run is a complete artifact of its configuration
    config = json.loads((tmp_path / "bilstm-crf" / "seed1" / "config.json").read_text())
    assert config["decoder"] == "crf" and config["bidirectional"] is True
    config = json.loads((tmp_path / "gru" / "seed0" / "config.json").read_text())
    assert config["cell"] == "gru" and config["bidirectional"] is False and config["decoder"] == "softmax"


def test_compare_rejects_unknown_configuration(sample_dir, tmp_path):
    with pytest.raises(ConfigError, match="unknown configuration"):
        run_comparison(sample_dir, tmp_path, TrainConfig(), configs=["transformer-xl"], seeds=1)


def test_a_distilled_configuration_needs_its_teacher_listed_first(tmp_path):
    from slotfill.errors import ConfigError
    from training.compare import run_comparison
    from training.config import TrainConfig

    with pytest.raises(ConfigError, match="needs minilm-bilstm-crf listed before it"):
        run_comparison(tmp_path, tmp_path / "out", TrainConfig(), configs=["bilstm-crf-distilled"], seeds=1)
