"""Inference backends: what runs the network for a :class:`~slotfill.inference.predictor.Predictor`.

An engine maps padded id arrays to emissions and intent logits, both NumPy; everything around
it (tokenising, featurising, CRF decoding, spans) is shared NumPy/Python code, so the backends
give the same answers (a test checks labels are identical and scores agree to 1e-4).

* ``torch``: the :class:`~slotfill.models.tagger.SlotTagger` module.
* ``onnx``: the artifact's ``model.onnx`` under onnxruntime. This path never imports torch, so
  a service installed with ``pip install slotfill[serve]`` runs without it.
* ``onnx-int8``: the same with ``model.int8.onnx``, the graph's int8 copy (see
  :mod:`slotfill.artifact.onnx_quantize`): faster, and measured rather than exact; only when asked for.

``auto`` picks onnx when the manifest lists a graph and onnxruntime is installed, else torch.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from slotfill.artifact.artifact import ONNX_FILE, ONNX_INT8_FILE, graph_inputs, graph_outputs, load_arrays
from slotfill.decoding.reference import CRFTables, constraint_mask
from slotfill.errors import ArtifactError, ConfigError

if TYPE_CHECKING:
    from slotfill.artifact.artifact import Artifact
    from slotfill.models.tagger import SlotTagger
    from slotfill.text.features import Featurizer
    from slotfill.text.subwords import SubwordAligner

BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
# How many of the vocabulary's most frequent words get their character features precomputed when an
# onnx engine loads (64 channels: 12.8 MB at most; SNIPS has about 11,000 words).
KNOWN_WORDS = 50_000
GRAPH_FILES = {"onnx": ONNX_FILE, "onnx-int8": ONNX_INT8_FILE}


class Engine(Protocol):
    """Everything a :class:`~slotfill.inference.predictor.Predictor` asks of the backend that runs its network."""

    name: str

    def run_tokens(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Normalised tokens (each list non-empty) -> float32 emissions (B, T, K), intent logits (B, I) or
        None, and lengths (B,) int64."""
        ...

    def crf_tables(self) -> CRFTables | None:
        """The CRF's constrained scores (float64), or None for a softmax decoder."""
        ...


class TorchEngine:
    name = "torch"

    def __init__(self, model: "SlotTagger", featurizer: "Featurizer", aligner: "SubwordAligner | None" = None,
                 states: "Mapping[tuple[str, ...], np.ndarray] | None" = None):
        self.model = model.eval()
        self.featurizer = featurizer
        self.aligner = aligner  # sub-word pieces for a transformer front-end, else None
        # A frozen transformer's word states (T, L, E) of known sentences, by their tokens (training's dev
        # checks); a call whose sentences all have theirs reads them instead of running the transformer.
        self.states = states

    def run_tokens(self, token_lists):
        import torch

        word_ids, char_ids, lengths = self.featurizer.arrays(token_lists)
        subwords = contextual = None
        if self.states is not None and all(tuple(tokens) in self.states for tokens in token_lists):
            from slotfill.models.contextual import pad_states

            contextual = pad_states([self.states[tuple(tokens)] for tokens in token_lists], word_ids.shape[1])
        elif self.aligner is not None:
            subwords = self.aligner.encode(token_lists).tensors()
        with torch.inference_mode():
            out = self.model(torch.from_numpy(word_ids), torch.from_numpy(char_ids), torch.from_numpy(lengths),
                             contextual=contextual, subwords=subwords)
        intents = out.intent_logits.numpy() if out.intent_logits is not None else None
        return out.emissions.numpy(), intents, lengths

    def crf_tables(self) -> CRFTables | None:
        return crf_tables(self.model.crf) if self.model.crf is not None else None


def crf_tables(crf) -> CRFTables:
    """A torch :class:`~slotfill.models.crf.CRF`'s constrained scores as float64 NumPy tables."""
    import torch

    with torch.no_grad():
        transitions, start, end = crf.constrained_scores(torch.float64)
    return CRFTables(transitions.numpy(), start.numpy(), end.numpy())


class OnnxEngine:
    """onnxruntime on the CPU; ``threads`` intra-op threads (1 suits a service that runs requests
    in parallel; 0 lets onnxruntime choose). ``graph``: serialised ONNX bytes to use instead of the
    artifact's ``model.onnx`` (the exporter checks a graph before writing it). ``name``: ``onnx`` runs
    ``model.onnx``, ``onnx-int8`` its int8 copy ``model.int8.onnx``."""

    def __init__(self, artifact: "Artifact", threads: int = 1, graph: bytes | None = None, name: str = "onnx"):
        import onnxruntime as ort

        self.name = name  # "onnx" (model.onnx) or "onnx-int8" (model.int8.onnx)
        config = artifact.config
        directory = artifact.directory
        graph_file = GRAPH_FILES[name]
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # warnings about unused initialisers etc. are not the user's concern
        try:
            self.session = ort.InferenceSession(graph if graph is not None else str(directory / graph_file),
                                                options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
            raise ArtifactError(f"{directory / graph_file}: onnxruntime cannot load it ({exc})") from None
        self._chars = config.uses_char_cnn
        self._where = directory / graph_file
        expected_inputs = graph_inputs(config)
        inputs = [i.name for i in self.session.get_inputs()]
        if inputs != expected_inputs:
            raise ArtifactError(f"{self._where}: inputs {inputs}, expected {expected_inputs}")
        names = [o.name for o in self.session.get_outputs()]
        self._outputs = ["emissions", "intent_logits"] if config.num_intents else ["emissions"]  # what a call reads
        self._widths = graph_outputs(config)
        if names != list(self._widths):
            raise ArtifactError(f"{self._where}: outputs {names}, expected {list(self._widths)}")
        self.featurizer = artifact.featurizer
        self._no_known = np.zeros((0, config.char_channels), dtype=np.float32)
        # The character features of the vocabulary's most frequent words, encoded once here (row i is word
        # id i), so that a call only runs the character CNN on words outside them.
        self._known_chars = self._encode_words(self.featurizer.words.itos[:KNOWN_WORDS]) if self._chars else None
        self._tables: CRFTables | None = None
        if config.decoder == "crf":
            shapes = config.weight_shapes()
            weights = load_arrays(directory / "model.safetensors", shapes,
                                  names=[n for n in shapes if n.startswith("crf.")])
            self._tables = CRFTables.build(weights["crf.transitions"], weights.get("crf.start_transitions"),
                                           weights.get("crf.end_transitions"),
                                           constraint_mask(config.scheme, config.id2label))

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        results = self.session.run(self._outputs, feeds)
        # The graph's declared shapes were checked at load, but a graph may compute other ones; a wrong width
        # must stop here, named, rather than index out of range in the decoder (the loader's warm-up meets it).
        for name, result in zip(self._outputs, results):
            width, what = self._widths[name]
            if result.ndim < 2 or result.shape[-1] != width:
                raise ArtifactError(f"{self._where}: output {name!r} has shape {list(result.shape)}, the model "
                                    f"has {width} {what}")
        return results[0], (results[1] if len(results) > 1 else None)

    # onnxruntime's LSTM runs every row of a batch to the batch's longest length (torch's packed
    # sequences stop each row at its own), so large batches go in chunks of similar lengths.
    CHUNK = 16

    def run_tokens(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """Normalised tokens (each list non-empty) -> emissions, intent logits, lengths (B,); more than
        :attr:`CHUNK` sentences go through the graph in chunks of similar lengths."""
        if len(token_lists) <= self.CHUNK:
            return self._run_tokens(token_lists)
        lens = np.fromiter((len(tokens) for tokens in token_lists), dtype=np.int64, count=len(token_lists))
        order = np.argsort(lens, kind="stable")
        emissions = intent_logits = None
        for start in range(0, len(token_lists), self.CHUNK):
            rows = order[start:start + self.CHUNK]
            chunk_em, chunk_intents, _ = self._run_tokens([token_lists[i] for i in rows])
            if emissions is None:
                emissions = np.zeros((len(token_lists), int(lens.max()), chunk_em.shape[2]), dtype=chunk_em.dtype)
                if chunk_intents is not None:
                    intent_logits = np.empty((len(token_lists), chunk_intents.shape[1]), dtype=chunk_intents.dtype)
            emissions[rows, : chunk_em.shape[1]] = chunk_em
            if intent_logits is not None:
                intent_logits[rows] = chunk_intents
        return emissions, intent_logits, lens

    def _run_tokens(self, token_lists: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """One pass of the graph. Word ids and character rows come from one dictionary lookup per token: a
        word among the precomputed ones reuses its character features, and every other distinct word of the
        call is encoded once. The emissions equal those of encoding every position (a test checks)."""
        featurizer = self.featurizer
        if not self._chars:
            word_ids, _, lengths = featurizer.arrays(token_lists, chars=False)
            return *self._run({"word_ids": word_ids, "lengths": lengths}), lengths
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        steps = int(lengths.max())
        get, unknown = featurizer.words.stoi.get, featurizer.words.unk_id
        known = len(self._known_chars)
        fresh: dict[str, int] = {}
        word_rows, char_rows = [], []
        for tokens in token_lists:
            ids, rows = [], []
            for token in tokens:
                index = get(token)
                if index is not None and index < known:
                    ids.append(index)
                    rows.append(index)
                    continue
                ids.append(unknown if index is None else index)
                row = fresh.get(token)
                if row is None:
                    row = fresh[token] = known + len(fresh)
                rows.append(row)
            pad = [0] * (steps - len(tokens))
            word_rows.append(ids + pad)
            char_rows.append(rows + pad)  # padded positions read row 0; the graph zeroes them
        feeds = {"word_ids": np.array(word_rows, dtype=np.int64), "word_chars": featurizer.char_matrix(list(fresh)),
                 "known_chars": self._known_chars, "char_index": np.array(char_rows, dtype=np.int64),
                 "lengths": lengths}
        return *self._run(feeds), lengths

    def _encode_words(self, words: Sequence[str], chunk: int = 2048) -> np.ndarray:
        """(len(words), channels) float32 character features, the graph's own character CNN."""
        parts = [self._no_known]
        for start in range(0, len(words), chunk):
            feeds = {"word_ids": np.ones((1, 1), dtype=np.int64), "word_chars": self.featurizer.char_matrix(
                words[start:start + chunk]), "known_chars": self._no_known,
                "char_index": np.zeros((1, 1), dtype=np.int64), "lengths": np.ones(1, dtype=np.int64)}
            parts.append(self.session.run(["word_char_features"], feeds)[0])
        return np.ascontiguousarray(np.concatenate(parts), dtype=np.float32)

    def crf_tables(self) -> CRFTables | None:
        return self._tables


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def resolve_backend(artifact: "Artifact", backend: str = "auto") -> str:
    """Which backend ``backend`` means for this artifact here; a clear error when it cannot run."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    where = artifact.directory
    if backend == "auto":
        if artifact.has_onnx and onnxruntime_available():
            return "onnx"
        if torch_available():
            return "torch"
        if not artifact.has_onnx:
            raise ArtifactError(f"{where}: has no ONNX graph and torch is not installed; export one with "
                                f"`slotfill export --model {where} --format onnx` where torch is installed")
        raise ConfigError("neither onnxruntime nor torch is installed: pip install 'slotfill[serve]'")
    if backend in GRAPH_FILES:
        if artifact.config is not None and artifact.config.contextual_dim:
            raise ConfigError(f"{where}: a model with a transformer front-end runs on the torch backend only")
        listed = artifact.has_onnx if backend == "onnx" else artifact.has_int8
        if not listed:
            how = "" if backend == "onnx" else " --quantize int8 --data DATA"
            raise ArtifactError(f"{where}: backend {backend} needs {GRAPH_FILES[backend]} listed in the manifest; "
                                f"create it with `slotfill export --model {where} --format onnx{how}`")
        if not onnxruntime_available():
            raise ConfigError(f"backend {backend} needs onnxruntime: pip install 'slotfill[serve]'")
        return backend
    if not torch_available():
        raise ConfigError("backend torch needs torch: pip install 'slotfill[train]'")
    return "torch"
