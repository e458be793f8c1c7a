"""The service refuses to become ready on a corrupt or hostile artifact, and says which file and why."""

from __future__ import annotations

import json
import pickle
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from service_testlib import REPO, clean_env

from service.app import create_app
from service.settings import Settings
from slotfill.artifact.artifact import MANIFEST
from slotfill.errors import ArtifactError
from tests.tampering import CASES as TAMPERED
from tests.tampering import graph_computing_one_label_less, rehash


def truncate_weights(d: Path) -> None:
    data = (d / "model.safetensors").read_bytes()
    (d / "model.safetensors").write_bytes(data[: len(data) // 2])


def flip_a_byte(d: Path) -> None:
    data = bytearray((d / "model.onnx").read_bytes())
    data[len(data) // 3] ^= 0x10
    (d / "model.onnx").write_bytes(bytes(data))


def wrong_manifest(d: Path) -> None:
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["vocab.json"]["sha256"] = "0" * 64
    (d / MANIFEST).write_text(json.dumps(manifest))


def absurd_vocabulary(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["vocab_size"] = 10**9
    (d / "config.json").write_text(json.dumps(config))
    rehash(d, "config.json")


def absurd_hidden_size(d: Path) -> None:
    config = json.loads((d / "config.json").read_text())
    config["hidden_size"] = 10**6
    (d / "config.json").write_text(json.dumps(config))
    rehash(d, "config.json")


def pickle_as_safetensors(d: Path) -> None:
    (d / "model.safetensors").write_bytes(pickle.dumps({"weights": [1.0, 2.0]}))
    rehash(d, "model.safetensors")


def path_outside(d: Path) -> None:
    manifest = json.loads((d / MANIFEST).read_text())
    manifest["files"]["../outside.json"] = {"sha256": "0" * 64, "bytes": 2}
    (d / MANIFEST).write_text(json.dumps(manifest))


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "truncated weights": (truncate_weights, r"model\.safetensors: \d+ bytes, the manifest says"),
    "flipped byte in the graph": (flip_a_byte, r"model\.onnx: sha256 does not match"),
    "wrong manifest": (wrong_manifest, r"vocab\.json: sha256 does not match"),
    "vocabulary of 10^9": (absurd_vocabulary, r"vocab_size: 1000000000 exceeds the limit"),
    "hidden size of 10^6": (absurd_hidden_size, r"hidden_size: 1000000 exceeds the limit"),
    "pickle renamed to .safetensors": (pickle_as_safetensors, r"model\.safetensors: not a safetensors file"),
    "path outside the model directory": (path_outside, r"not a plain name inside the model directory"),
}


@pytest.fixture()
def copy_of(model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(model_dir, target)
    return target


@pytest.mark.parametrize("case", sorted(CASES))
def test_app_does_not_start_on_a_hostile_artifact(case: str, copy_of: Path, monkeypatch) -> None:
    corrupt, message = CASES[case]
    corrupt(copy_of)
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("something unpickled the artifact"))
    app = create_app(Settings(model_dir=copy_of))
    with pytest.raises(ArtifactError, match=message):
        with TestClient(app):  # runs the lifespan, which loads (and verifies) the model
            pytest.fail("the app became ready")
    assert app.state.model.ready is False and app.state.model.predictor is None


@pytest.mark.parametrize("case", ["vocabulary of 10^9", "flipped byte in the graph"])
def test_server_process_exits_with_the_reason(case: str, copy_of: Path) -> None:
    corrupt, message = CASES[case]
    corrupt(copy_of)
    result = subprocess.run([sys.executable, "-m", "service", "--model", str(copy_of)], cwd=REPO, env=clean_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert re.search(message, result.stderr), result.stderr


SERVE_COMMANDS = {"python -m service": [sys.executable, "-m", "service"],
                  "slotfill serve": [sys.executable, "-m", "training.cli", "serve"]}
PREFIX = {"python -m service": "error: ", "slotfill serve": "slotfill serve: error: "}


@pytest.mark.parametrize("case", sorted(TAMPERED))
@pytest.mark.parametrize("command", sorted(SERVE_COMMANDS))
def test_serve_refuses_a_bad_artifact_in_one_line_before_starting(command: str, case: str, copy_of: Path) -> None:
    """Checked before uvicorn starts (nothing listens, nothing allocates): exit 2, one line naming the file."""
    corrupt, message = TAMPERED[case]
    corrupt(copy_of)
    result = subprocess.run([*SERVE_COMMANDS[command], "--model", str(copy_of), "--port", "1", "--backend", "torch"],
                            cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(PREFIX[command]) and re.search(message, lines[0]), result.stderr


@pytest.mark.parametrize("case", ["hidden 4096, 2 layers", "graph with one label less", "lone surrogate in the card"])
def test_app_refuses_at_startup_a_tampered_artifact(case: str, copy_of: Path) -> None:
    corrupt, message = TAMPERED[case]
    corrupt(copy_of)
    app = create_app(Settings(model_dir=copy_of))
    with pytest.raises(ArtifactError, match=message):
        with TestClient(app):
            pytest.fail("the app became ready")
    assert app.state.model.predictor is None


def test_a_graph_that_computes_other_widths_is_refused_at_warm_up(copy_of: Path) -> None:
    """It loads (its declarations fit the config), so only the warm-up sentence can keep it out of service."""
    graph_computing_one_label_less(copy_of)
    app = create_app(Settings(model_dir=copy_of, backend="onnx"))
    with pytest.raises(ArtifactError, match=r"model\.onnx: output 'emissions' has shape \[\d+, \d+, 14\]"):
        with TestClient(app):
            pytest.fail("the app became ready")
    assert app.state.model.predictor is None
