"""``slotfill export --format onnx --quantize int8``: an int8 copy of the ONNX graph, measured before it is kept.

onnxruntime's dynamic quantisation stores the recurrent and output-layer weights as int8 and
quantises activations on the fly (``DynamicQuantizeLSTM``, ``MatMulInteger``); on this project's
CPUs the recurrent layers, which take most of a request's arithmetic, run about twice as fast.
Unlike ``model.onnx`` the result is not equal to the torch model to 1e-4: int8 weights move the
scores by ~1e-1. So it is measured rather than required to be exact: decoded labels and intents
are compared with the float graph's on check sentences (the test split), slot F1 of both is
computed when those sentences have gold labels, and the graph is refused if they agree on fewer
than ``min_agreement`` of the tokens. The figures go into ``quantization.json``; the manifest then
lists both files. The service uses the graph only when asked (backend ``onnx-int8``).
GRU and plain RNN layers have no dynamically quantised operator in onnxruntime: for them only the
output layers are quantised, and the gain is small.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from slotfill.artifact.artifact import ONNX_FILE, ONNX_INT8_FILE, QUANTIZATION_FILE, Artifact, extend_manifest
from slotfill.artifact.files import atomic_write_bytes, atomic_write_json
from slotfill.errors import ArtifactError

MIN_AGREEMENT = 0.995


@dataclass
class QuantizationCheck:
    method: str
    sentences: int
    tokens: int
    label_agreement: float  # fraction of tokens whose decoded label equals the float graph's
    intent_agreement: float | None
    slot_f1_float: float | None  # on the check sentences, when gold labels were given
    slot_f1_int8: float | None
    graph_bytes_float: int
    graph_bytes_int8: int


def quantize_graph(graph_path: Path) -> bytes:
    """Dynamic int8 quantisation of an ONNX file; returns the new graph's bytes."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # quantize_dynamic advises "pre-processing" through the root logger, which would also install a
    # stderr handler on it (logging.warning calls basicConfig); the graph needs no pre-processing.
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory() as scratch:
            target = Path(scratch) / ONNX_INT8_FILE
            quantize_dynamic(str(graph_path), str(target), op_types_to_quantize=["LSTM", "MatMul", "Gemm"],
                             weight_type=QuantType.QInt8)
            return target.read_bytes()
    finally:
        root.setLevel(level)
        root.removeHandler(quiet)


def quantize_onnx(model_dir: str | Path, sentences: Sequence[Sequence[str]],
                  gold: Sequence[Sequence[str]] | None = None,
                  min_agreement: float = MIN_AGREEMENT) -> QuantizationCheck:
    """Write ``model.int8.onnx`` and ``quantization.json`` beside an artifact's checked ``model.onnx``.

    ``sentences`` are normalised token lists to compare the two graphs on (at least one);
    ``gold`` their gold labels (optional, for slot F1).
    """
    from slotfill.inference.engines import OnnxEngine
    from slotfill.inference.predictor import Predictor

    model_dir = Path(model_dir)
    artifact = Artifact.from_pretrained(model_dir)
    if not artifact.has_onnx:
        raise ArtifactError(f"{model_dir}: quantising needs the float graph {ONNX_FILE} first; "
                            f"run `slotfill export --model {model_dir} --format onnx`")
    sentences = [list(s) for s in sentences if s]
    if not sentences:
        raise ArtifactError(f"{model_dir}: quantising needs check sentences (--data) to measure the int8 graph on")
    if gold is not None and len(gold) != len(sentences):
        raise ValueError("gold labels must match the sentences one to one")
    graph = quantize_graph(model_dir / ONNX_FILE)
    reference = Predictor(artifact, model_dir, OnnxEngine(artifact, threads=1))
    quantized = Predictor(artifact, model_dir, OnnxEngine(artifact, threads=1, graph=graph, name="onnx-int8"))
    expected_labels, expected_intents = reference.predict_labels(sentences)
    got_labels, got_intents = quantized.predict_labels(sentences)
    tokens = sum(len(s) for s in sentences)
    same = sum(a == b for row_a, row_b in zip(expected_labels, got_labels) for a, b in zip(row_a, row_b))
    intent_agreement = None
    if artifact.config.num_intents:
        intent_agreement = sum(a == b for a, b in zip(expected_intents, got_intents)) / len(sentences)
    f1_float = f1_int8 = None
    if gold is not None:
        from slotfill.scoring.metrics import evaluate

        gold_lists = [list(g) for g in gold]
        scheme = artifact.config.scheme
        f1_float = evaluate(gold_lists, expected_labels, scheme=scheme)["slot_f1"]
        f1_int8 = evaluate(gold_lists, got_labels, scheme=scheme)["slot_f1"]
    check = QuantizationCheck(method="onnxruntime quantize_dynamic, int8 weights (LSTM, MatMul, Gemm)",
                              sentences=len(sentences), tokens=tokens, label_agreement=same / tokens,
                              intent_agreement=intent_agreement, slot_f1_float=f1_float, slot_f1_int8=f1_int8,
                              graph_bytes_float=(model_dir / ONNX_FILE).stat().st_size,
                              graph_bytes_int8=len(graph))
    if check.label_agreement < min_agreement:
        raise ArtifactError(f"{model_dir}: the int8 graph decodes {100 * check.label_agreement:.2f}% of "
                            f"{tokens} check tokens like the float graph (at least {100 * min_agreement:g}% "
                            "required); nothing was written")
    atomic_write_bytes(model_dir / ONNX_INT8_FILE, graph)
    atomic_write_json(model_dir / QUANTIZATION_FILE, asdict(check))
    extend_manifest(model_dir, artifact.manifest, [ONNX_INT8_FILE, QUANTIZATION_FILE])
    return check
