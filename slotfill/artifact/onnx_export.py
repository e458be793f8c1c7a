"""``slotfill export --format onnx``: write ``model.onnx`` beside the weights, checked against torch.

The graph (see :mod:`slotfill.artifact.onnx_graph`) is built from the artifact's own weights, run under
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

from slotfill.artifact.artifact import ONNX_FILE, Artifact, LoadedModel, extend_manifest, load_arrays
from slotfill.artifact.files import atomic_write_bytes
from slotfill.errors import ArtifactError

TOLERANCE = 1e-4
# The seeded synthetic sentences (up to 40 random words) are a stress test beyond the check data:
# through a long recurrence over nonsense, float32 rounding alone moves emissions of a correct graph
# by ~2e-4 (a unidirectional LSTM on SNIPS), so they are held to labels identical and this bound.
SYNTHETIC_TOLERANCE = 1e-3


@dataclass
class ExportCheck:
    sentences: int  # check data (e.g. the test split) plus synthetic sentences
    tokens: int
    max_emission_diff: float  # on the check data (0.0 without any)
    max_intent_diff: float
    labels_identical: bool  # on every sentence
    intents_identical: bool
    synthetic_max_emission_diff: float = 0.0


def synthetic_sentences(vocabulary: Sequence[str], count: int = 256, seed: int = 0) -> list[list[str]]:
    """Seeded check sentences of 1..40 tokens: known words, unseen words and odd characters."""
    rng = random.Random(seed)
    words = [w for w in vocabulary if w] or ["a"]
    extra = ["zzqx", "Ünïcødé", "東京", "🙂", "x" * 60, "a-b", "1234", "'s"]
    return [[rng.choice(words) if rng.random() < 0.85 else rng.choice(extra) for _ in range(rng.randint(1, 40))]
            for _ in range(count)]


@dataclass
class _Comparison:
    tokens: int = 0
    emission: float = 0.0
    intent: float = 0.0
    labels: bool = True
    intents: bool = True


def _compare(torch_predictor, onnx_predictor, sentences: list[list[str]], batch_size: int) -> _Comparison:
    result = _Comparison()
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start:start + batch_size]
        expected_em, expected_int, _ = torch_predictor.run_network(chunk)
        got_em, got_int, _ = onnx_predictor.run_network(chunk)
        for row, sentence in enumerate(chunk):  # padded positions are not compared: no decoder reads them
            n = len(sentence)
            result.tokens += n
            result.emission = max(result.emission, float(np.abs(expected_em[row, :n] - got_em[row, :n]).max()))
        if expected_int is not None:
            result.intent = max(result.intent, float(np.abs(expected_int - got_int).max()))
        expected_labels = torch_predictor.predict_labels(chunk)
        got_labels = onnx_predictor.predict_labels(chunk)
        result.labels &= expected_labels[0] == got_labels[0]
        result.intents &= expected_labels[1] == got_labels[1]
    return result


def check_graph(model_dir: Path, graph: bytes, sentences: list[list[str]], tolerance: float = TOLERANCE,
                batch_size: int = 64, synthetic: Sequence[list[str]] = (),
                synthetic_tolerance: float = SYNTHETIC_TOLERANCE) -> ExportCheck:
    """Run ``graph`` and the torch model on ``sentences`` (normalised tokens, held to ``tolerance``)
    and ``synthetic`` ones (held to ``synthetic_tolerance``); labels and intents must be identical."""
    from slotfill.inference.engines import OnnxEngine
    from slotfill.inference.predictor import Predictor

    loaded = LoadedModel.from_pretrained(model_dir)
    torch_predictor = Predictor(loaded, model_dir)
    onnx_predictor = Predictor(loaded, model_dir, OnnxEngine(loaded, threads=1, graph=graph))
    data = _compare(torch_predictor, onnx_predictor, sentences, batch_size)
    stress = _compare(torch_predictor, onnx_predictor, list(synthetic), batch_size)
    result = ExportCheck(len(sentences) + len(synthetic), data.tokens + stress.tokens, data.emission, data.intent,
                         data.labels and stress.labels, data.intents and stress.intents, stress.emission)
    problems = []
    for name, compared, allowed in (("", data, tolerance), ("on synthetic sentences, ", stress, synthetic_tolerance)):
        if compared.emission > allowed:
            problems.append(f"{name}emissions differ by up to {compared.emission:.2e} (allowed {allowed:g})")
        if compared.intent > allowed:
            problems.append(f"{name}intent logits differ by up to {compared.intent:.2e} (allowed {allowed:g})")
    if not result.labels_identical:
        problems.append("decoded labels differ")
    if not result.intents_identical:
        problems.append("predicted intents differ")
    if problems:
        raise ArtifactError(f"{model_dir}: the ONNX graph does not reproduce the torch model "
                            f"({'; '.join(problems)}); nothing was written")
    return result


def export_onnx(model_dir: str | Path, check_sentences: list[list[str]] | None = None,
                tolerance: float = TOLERANCE) -> ExportCheck:
    """Build, check and write ``model.onnx``; returns the check's figures.

    ``check_sentences`` are normalised token lists (e.g. a test split); seeded synthetic sentences
    drawn from the vocabulary are always checked as well.
    """
    from slotfill.artifact.onnx_graph import build_graph

    model_dir = Path(model_dir)
    artifact = Artifact.from_pretrained(model_dir)
    config = artifact.config
    weights = load_arrays(model_dir / "model.safetensors", config.weight_shapes())
    graph = build_graph(config, weights).SerializeToString()
    sentences = [list(s) for s in (check_sentences or []) if s]
    result = check_graph(model_dir, graph, sentences, tolerance,
                         synthetic=synthetic_sentences(artifact.featurizer.words.itos[2:]))
    atomic_write_bytes(model_dir / ONNX_FILE, graph)
    extend_manifest(model_dir, artifact.manifest, [ONNX_FILE])
    return result
