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
