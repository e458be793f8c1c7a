"""``slotfill export --format onnx``: write ``model.onnx`` beside the weights, checked against torch.

The graph (see :mod:`slotfill.onnx_graph`) is built from the artifact's own weights, run under
onnxruntime on check sentences next to the torch model, and written only if every decoded label
is identical and every emission and intent logit agrees within ``tolerance``. Then the manifest
is rewritten to vouch for it; until that rename the old manifest stays valid (it simply does not
list the graph), so a reader never sees a half-exported artifact.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .artifact import ONNX_FILE, atomic_write_bytes, extend_manifest, load_arrays
from .errors import ArtifactError
from .model_io import load_model, read_artifact

TOLERANCE = 1e-4


@dataclass
class ExportCheck:
    sentences: int
    tokens: int
    max_emission_diff: float
    max_intent_diff: float
    labels_identical: bool
    intents_identical: bool


def synthetic_sentences(vocabulary: Sequence[str], count: int = 256, seed: int = 0) -> list[list[str]]:
    """Seeded check sentences of 1..40 tokens: known words, unseen words and odd characters."""
    rng = random.Random(seed)
    words = [w for w in vocabulary if w] or ["a"]
    extra = ["zzqx", "Ünïcødé", "東京", "🙂", "x" * 60, "a-b", "1234", "'s"]
    return [[rng.choice(words) if rng.random() < 0.85 else rng.choice(extra) for _ in range(rng.randint(1, 40))]
            for _ in range(count)]


def check_graph(model_dir: Path, graph: bytes, sentences: list[list[str]], tolerance: float = TOLERANCE,
                batch_size: int = 64) -> ExportCheck:
    """Run ``graph`` and the torch model on ``sentences`` (normalised tokens); compare outputs and labels."""
    from .engines import OnnxEngine, TorchEngine
    from .predictor import Predictor

    loaded = load_model(model_dir)
    torch_predictor = Predictor(loaded, model_dir, TorchEngine(loaded.model))
    onnx_predictor = Predictor(loaded, model_dir, OnnxEngine(loaded, threads=1, graph=graph))
    worst_emission, worst_intent, same_labels, same_intents, tokens = 0.0, 0.0, True, True, 0
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        arrays = loaded.featurizer.arrays(chunk)
        expected_em, expected_int = torch_predictor.engine.run(*arrays)
        got_em, got_int = onnx_predictor.engine.run(*arrays)
        for row, sentence in enumerate(chunk):  # padded positions are not compared: no decoder reads them
            n = len(sentence)
            tokens += n
            worst_emission = max(worst_emission, float(np.abs(expected_em[row, :n] - got_em[row, :n]).max()))
        if expected_int is not None:
            worst_intent = max(worst_intent, float(np.abs(expected_int - got_int).max()))
        expected_labels = torch_predictor.predict_labels(chunk)
        got_labels = onnx_predictor.predict_labels(chunk)
        same_labels &= expected_labels[0] == got_labels[0]
        same_intents &= expected_labels[1] == got_labels[1]
    result = ExportCheck(len(sentences), tokens, worst_emission, worst_intent, same_labels, same_intents)
    problems = []
    if worst_emission > tolerance:
        problems.append(f"emissions differ by up to {worst_emission:.2e}")
    if worst_intent > tolerance:
        problems.append(f"intent logits differ by up to {worst_intent:.2e}")
    if not same_labels:
        problems.append("decoded labels differ")
    if not same_intents:
        problems.append("predicted intents differ")
    if problems:
        raise ArtifactError(f"{model_dir}: the ONNX graph does not reproduce the torch model ({'; '.join(problems)}"
                            f", tolerance {tolerance:g}); nothing was written")
    return result


def export_onnx(model_dir: str | Path, check_sentences: list[list[str]] | None = None,
                tolerance: float = TOLERANCE) -> ExportCheck:
    """Build, check and write ``model.onnx``; returns the check's figures.

    ``check_sentences`` are normalised token lists (e.g. a test split); seeded synthetic sentences
    drawn from the vocabulary are always checked as well.
    """
    from .onnx_graph import build_graph

    model_dir = Path(model_dir)
    artifact = read_artifact(model_dir)
    config = artifact.config
    weights = load_arrays(model_dir / "model.safetensors", config.weight_shapes())
    graph = build_graph(config, weights).SerializeToString()
    sentences = synthetic_sentences(artifact.featurizer.words.itos[2:])
    sentences += [list(s) for s in (check_sentences or []) if s]
    result = check_graph(model_dir, graph, sentences, tolerance)
    atomic_write_bytes(model_dir / ONNX_FILE, graph)
    extend_manifest(model_dir, artifact.manifest, [ONNX_FILE])
    return result
