"""An artifact is checked whole (weights' header, parameter count, ONNX graph, echoed strings) before any of its
network is built, and every loader refuses a bad one in one line naming the file and the problem."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from slotfill.artifact.artifact import MAX_PARAMETERS, Artifact, LoadedModel, expected_tensors
from slotfill.errors import ArtifactError
from slotfill.inference.predictor import Predictor
from slotfill.models.config import TaggerConfig
from slotfill.models.tagger import SlotTagger

from .conftest import REPO
from .tampering import CASES, big_recurrent_layer, graph_computing_one_label_less


@pytest.fixture()
def copy_of(sample_model_dir: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(sample_model_dir, target)
    return target


def slotfill(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, capture_output=True, text=True,
                          input=stdin, timeout=300)


def assert_one_line_refusal(result: subprocess.CompletedProcess, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(message, lines[0]), result.stderr


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_every_backend_refuses_a_bad_artifact_by_name(case: str, backend: str, copy_of: Path) -> None:
    corrupt, message = CASES[case]
    corrupt(copy_of)
    with pytest.raises(ArtifactError, match=message):
        Predictor.load(copy_of, backend=backend)


@pytest.mark.parametrize("case", sorted(CASES))
def test_slotfill_tag_refuses_a_bad_artifact_in_one_line(case: str, copy_of: Path) -> None:
    corrupt, message = CASES[case]
    corrupt(copy_of)
    result = slotfill("tag", "--model", str(copy_of), stdin="book a table\n")
    assert_one_line_refusal(result, r"^slotfill tag: error: .*" + message)


def test_slotfill_evaluate_refuses_a_bad_artifact_in_one_line(copy_of: Path) -> None:
    corrupt, message = CASES["graph with one label less"]
    corrupt(copy_of)
    result = slotfill("evaluate", "--model", str(copy_of), "--data", "sample", "--backend", "torch")
    assert_one_line_refusal(result, r"^slotfill evaluate: error: .*" + message)


def test_a_graph_that_computes_other_widths_than_it_declares_is_stopped_by_name(copy_of: Path) -> None:
    graph_computing_one_label_less(copy_of)
    predictor = Predictor.load(copy_of, backend="onnx")  # its declarations agree with the config
    message = r"model\.onnx: output 'emissions' has shape \[1, 3, 14\], the model has 15 slot labels"
    with pytest.raises(ArtifactError, match=message):
        predictor.predict_texts(["book a table"])
    result = slotfill("tag", "--model", str(copy_of), stdin="book a table\n")  # auto: the onnx backend
    assert_one_line_refusal(result, r"^slotfill tag: error: .*" + message)


def test_a_big_config_is_refused_before_anything_is_allocated(copy_of: Path) -> None:
    """hidden_size 4096 with 2 layers once cost 2.4 GB before the weights were compared with the config."""
    big_recurrent_layer(copy_of)
    tracemalloc.start()
    try:
        with pytest.raises(ArtifactError, match="more than the limit"):
            LoadedModel.from_pretrained(copy_of)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"{peak / 2**20:.0f} MiB traced before the refusal"


def test_the_tagger_refuses_weights_that_do_not_fit_before_building(copy_of: Path, monkeypatch) -> None:
    """SlotTagger.from_pretrained, called alone, checks the header before the module exists."""
    CASES["weights of another hidden size"][0](copy_of)
    monkeypatch.setattr(SlotTagger, "__init__", lambda *a, **k: pytest.fail("built the module first"))
    with pytest.raises(ArtifactError, match="the config implies"):
        SlotTagger.from_pretrained(copy_of)


def test_expected_tensors_are_the_modules_own(sample_model_dir: Path) -> None:
    config = Artifact.from_pretrained(sample_model_dir).config
    shapes, dtypes = expected_tensors(config)
    state = SlotTagger(config).state_dict()
    assert shapes == {name: tuple(t.shape) for name, t in state.items()}
    assert set(dtypes.values()) == {"F32"}


def test_the_parameter_cap_sits_above_every_model_this_library_trains() -> None:
    """The default recipe on a 5M-word vocabulary (config.py's limit) stays under the cap."""
    config = TaggerConfig(vocab_size=5_000_000, num_chars=2000, id2label={0: "O"}, word_dim=50)
    assert sum(_count(s) for s in config.weight_shapes().values()) < MAX_PARAMETERS


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def test_a_graph_larger_than_its_model_could_need_is_refused_unread(sample_model_dir: Path, monkeypatch) -> None:
    from slotfill.artifact.onnx_header import read_graph_summary

    graph = sample_model_dir / "model.onnx"
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail(f"read {self}"))
    with pytest.raises(ArtifactError, match=r"model\.onnx: [\d,]+ bytes, more than the 1,000 a graph of this model"):
        read_graph_summary(graph, max_bytes=1000)
