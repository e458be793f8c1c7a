"""Exported artifacts: exact round trip, and refusal of anything corrupt, tampered or hostile."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from slotfill.artifact.artifact import MANIFEST, LoadedModel, sha256_file, verify_manifest
from slotfill.errors import ArtifactError
from slotfill.inference.predictor import Predictor

from .tampering import rehash

UTTERANCES = ["book a table for four at an italian place tomorrow at 7pm",
              "find me a cheap thai restaurant in san francisco", "cancel my reservation at the golden dragon"]


@pytest.fixture()
def artifact(sample_model_dir, tmp_path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(sample_model_dir, target)
    return target


def test_artifact_layout(sample_model_dir):
    names = {p.name for p in sample_model_dir.iterdir()}
    assert {"config.json", "model.safetensors", "vocab.json", "chars.json", "labels.txt", "intents.txt",
            "tokenizer.json", "model_card.json", "report.json", "report.txt", MANIFEST} <= names
    manifest = json.loads((sample_model_dir / MANIFEST).read_text())
    assert manifest["library_version"]
    for name, entry in manifest["files"].items():
        assert sha256_file(sample_model_dir / name) == entry["sha256"]
    report = json.loads((sample_model_dir / "report.json").read_text())
    for key in ("slot_precision", "slot_recall", "slot_f1", "slot_f1_strict", "intent_accuracy", "exact_match",
                "per_slot"):
        assert key in report
    assert 0.0 <= report["slot_f1"] <= 1.0


def test_loaded_predictions_equal_in_memory_model(sample_model_dir):
    loaded = LoadedModel.from_pretrained(sample_model_dir)
    first = Predictor(loaded).predict_texts(UTTERANCES)
    again = Predictor.load(sample_model_dir, backend="torch").predict_texts(UTTERANCES)  # onnx: tests/test_onnx.py
    assert first == again
    # and the raw network outputs are bit-identical after a save/load cycle
    words, chars, lengths = loaded.featurizer.batch([u.split() for u in UTTERANCES])
    reloaded = LoadedModel.from_pretrained(sample_model_dir)
    with torch.inference_mode():
        assert torch.equal(loaded.model(words, chars, lengths).emissions, reloaded.model(words, chars, lengths).emissions)


def test_flipped_byte_in_weights_is_refused(artifact):
    path = artifact / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.safetensors: sha256 does not match"):
        Predictor.load(artifact)


def test_truncated_weights_are_refused(artifact):
    path = artifact / "model.safetensors"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ArtifactError, match="truncated or replaced"):
        Predictor.load(artifact)


def test_truncated_weights_with_matching_manifest_are_refused(artifact):
    path = artifact / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-64])
    rehash(artifact, "model.safetensors")
    with pytest.raises(ArtifactError, match="outside the file"):
        Predictor.load(artifact)


def test_pickle_renamed_to_safetensors_is_refused_without_unpickling(artifact, monkeypatch):
    payload = pickle.dumps({"weights": [1, 2, 3]})
    (artifact / "model.safetensors").write_bytes(payload)
    rehash(artifact, "model.safetensors")

    def forbidden(*args, **kwargs):
        raise AssertionError("the loader must never unpickle")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    with pytest.raises(ArtifactError, match="not a safetensors file"):
        Predictor.load(artifact)


@pytest.mark.parametrize("key,value", [("vocab_size", 10**9), ("hidden_size", 10**6)])
def test_absurd_config_sizes_are_refused_before_allocation(artifact, key, value):
    config = json.loads((artifact / "config.json").read_text())
    config[key] = value
    (artifact / "config.json").write_text(json.dumps(config))
    rehash(artifact, "config.json")
    with pytest.raises(ArtifactError, match=f"{key}: {value} exceeds the limit"):
        Predictor.load(artifact)


@pytest.mark.parametrize("name", ["../outside.txt", "/etc/passwd", "sub/dir.json"])
def test_manifest_names_outside_the_directory_are_refused(artifact, name):
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"][name] = {"sha256": "0" * 64, "bytes": 1}
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="not a plain name inside the model directory"):
        verify_manifest(artifact)


def test_symlinked_file_is_refused(artifact, tmp_path):
    outside = tmp_path / "elsewhere.json"
    shutil.copy(artifact / "model_card.json", outside)
    (artifact / "model_card.json").unlink()
    (artifact / "model_card.json").symlink_to(outside)
    with pytest.raises(ArtifactError, match="symbolic links"):
        Predictor.load(artifact)


def test_wrong_manifest_and_missing_manifest(artifact):
    manifest = json.loads((artifact / MANIFEST).read_text())
    manifest["files"]["vocab.json"]["sha256"] = "f" * 64
    (artifact / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="vocab.json: sha256 does not match"):
        Predictor.load(artifact)
    (artifact / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        Predictor.load(artifact)


def test_labels_file_must_agree_with_config(artifact):
    (artifact / "labels.txt").write_text("O\nB-x\n")
    rehash(artifact, "labels.txt")
    with pytest.raises(ArtifactError, match="labels.txt: does not match"):
        Predictor.load(artifact)


def test_missing_directory():
    with pytest.raises(ArtifactError, match="no such model directory"):
        Predictor.load(Path("/nonexistent/model"))
