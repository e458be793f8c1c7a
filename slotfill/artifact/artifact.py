"""A model artifact on disk: save and load, safetensors weights, a sha256 manifest.

An artifact directory holds::

    config.json             TaggerConfig (architecture, label ids); with the weights, the tagger's own
    model.safetensors       weights (never a pickle); SlotTagger.save_pretrained writes both
    tokenizer.json          TokenizerConfig, so serving tokenises exactly as training did
    vocab.json              word vocabulary
    chars.json              character vocabulary
    labels.txt              slot labels, one per line, in id order
    intents.txt             intents, one per line, in id order (empty for slot-only models)
    model_card.json         name, version, creation time, training settings, library version
    report.json, .txt       evaluation report (when the model was evaluated; scoring.reporting.write_report)
    errors.jsonl            the sentences of that evaluation that are not exact matches, span errors classed
    report.html             the report as a self-contained page (confusion, worst sentences, plots); with
                            errors.jsonl when the evaluation's predictions were at hand (training writes both)
    calibration.json        confidence temperatures (when calibrated; scoring.calibration)
    encoder_tokenizer.json  the transformer front-end's tokenizer (contextual models only)
    model.onnx              ONNX graph of the network (`slotfill export --format onnx`; training writes it
                            by default), for the torch-free serving backend
    model.int8.onnx         its int8 copy (`--quantize int8`), with
    quantization.json       how the int8 graph compared with the float one
    manifest.json           sha256 and size of every file above that is present; written last

:meth:`LoadedModel.save_pretrained` writes one; :meth:`Artifact.from_pretrained` reads everything but
the network (no torch) and :meth:`LoadedModel.from_pretrained` the network too. Loading verifies the
manifest before reading anything else, refuses names that leave the directory, and checks sizes and
tensor shapes before allocating. Exporting (``onnx_export``, ``onnx_quantize``) and calibrating add
their files and rewrite the manifest with :func:`extend_manifest`.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError

from slotfill import __version__
from slotfill.artifact.files import (MAX_JSON_BYTES, atomic_write_bytes, atomic_write_json, atomic_write_text,
                                     check_strings, read_json, read_text)
from slotfill.errors import ArtifactError, ConfigError
from slotfill.models.config import TaggerConfig
from slotfill.text.features import Featurizer
from slotfill.text.tokenizer import TokenizerConfig
from slotfill.text.vocab import Vocab

if TYPE_CHECKING:  # torch is needed to save or load into a module, not to read weights as arrays
    import numpy as np
    import torch

    from slotfill.models.tagger import SlotTagger
    from slotfill.scoring.errors import ErrorAnalysis
    from slotfill.text.subwords import SubwordAligner

MANIFEST = "manifest.json"
FORMAT = "slotfill-artifact"
FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.json", "chars.json",
                  "labels.txt", "intents.txt", "model_card.json")
ONNX_FILE = "model.onnx"  # optional: the graph `slotfill export --format onnx` writes
ONNX_INT8_FILE = "model.int8.onnx"  # optional: its int8 copy (`--quantize int8`)
QUANTIZATION_FILE = "quantization.json"  # how the int8 copy compared with the float graph
CALIBRATION_FILE = "calibration.json"  # optional: confidence temperatures
ENCODER_TOKENIZER = "encoder_tokenizer.json"  # the transformer front-end's tokenizer (tokenizers JSON)
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024
_DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
# The most parameters a config may imply (2 GB of float32). The largest model this library trains is far
# below it (a BiLSTM-CRF over SNIPS has about 3M, with a MiniLM front-end about 26M); the cap is there so
# that a config.json asking for billions is refused before a module is built, not by the allocator.
MAX_PARAMETERS = 500_000_000


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- weights
def save_weights(model: "torch.nn.Module", path: str | Path) -> None:
    from safetensors.torch import save as save_safetensors_bytes

    tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}
    atomic_write_bytes(path, save_safetensors_bytes(tensors))


def read_safetensors_header(path: Path) -> dict[str, Any]:
    """Parse and sanity-check a safetensors header without loading any tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise ArtifactError(f"{path}: truncated safetensors file ({size} bytes)")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(MAX_SAFETENSORS_HEADER, size - 8):
                raise ArtifactError(f"{path}: not a safetensors file (header length {header_len} is impossible"
                                    f" for a {size}-byte file; a pickle or other format renamed?)")
            raw = handle.read(header_len)
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ArtifactError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise ArtifactError(f"{path}: not a safetensors file (header is not an object)")
    data_len = size - 8 - header_len
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            dtype = entry["dtype"]
            shape = entry["shape"]
        except (TypeError, KeyError, ValueError):
            raise ArtifactError(f"{path}: malformed entry for tensor {name!r}") from None
        if (dtype not in _DTYPES or not isinstance(shape, list)
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise ArtifactError(f"{path}: tensor {name!r} has unsupported dtype or shape")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_len):
            raise ArtifactError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
        if end - begin != _DTYPES[dtype] * _count(shape):
            raise ArtifactError(f"{path}: tensor {name!r} holds {end - begin} bytes, its shape {shape} and dtype "
                                f"{dtype} need {_DTYPES[dtype] * _count(shape)}")
    _check_tensors_fill_the_file(path, header, data_len)
    return header


def _check_tensors_fill_the_file(path: Path, header: dict[str, Any], data_len: int) -> None:
    """The tensors lie end to end and fill the file, as the format requires: the loader reads the whole file,
    so bytes no tensor accounts for would be read for nothing (a few tensors ahead of gigabytes of padding)."""
    ranges = sorted(tuple(entry["data_offsets"]) for name, entry in header.items() if name != "__metadata__")
    position = 0
    for begin, end in ranges:
        if begin != position:
            raise ArtifactError(f"{path}: its tensors overlap or leave a gap at byte {min(begin, position)} of the "
                                f"data")
        position = end
    if position != data_len:
        raise ArtifactError(f"{path}: {data_len - position} bytes after its last tensor")


def _count(shape: Iterable[int]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _check_header(path: Path, header: dict[str, Any], expected: dict[str, tuple[int, ...]],
                  wanted: Iterable[str], dtypes: dict[str, str] | None = None) -> None:
    """The file holds exactly the tensors ``expected`` names, and each ``wanted`` one has the expected shape
    (and, when ``dtypes`` gives them, the expected safetensors dtype)."""
    present = {k for k in header if k != "__metadata__"}
    missing = sorted(set(expected) - present)
    unexpected = sorted(present - set(expected))
    if missing or unexpected:
        raise ArtifactError(f"{path}: weights do not match the config (missing: {missing[:5]}, "
                            f"unexpected: {unexpected[:5]})")
    for name in wanted:
        if name not in expected:
            raise ArtifactError(f"{path}: the config implies no tensor {name!r}")
        if list(header[name]["shape"]) != list(expected[name]):
            raise ArtifactError(f"{path}: tensor {name!r} has shape {header[name]['shape']}, the config implies "
                                f"{list(expected[name])}")
        if dtypes is not None and header[name]["dtype"] != dtypes[name]:
            raise ArtifactError(f"{path}: tensor {name!r} is {header[name]['dtype']}, the model holds {dtypes[name]}")


def expected_tensors(config: TaggerConfig) -> tuple[dict[str, tuple[int, ...]], dict[str, str]] | None:
    """Shapes and safetensors dtypes of every tensor the config implies, without allocating any.

    A recurrent tagger's come from :meth:`TaggerConfig.weight_shapes` (all float32); a transformer
    front-end's from building the module on torch's ``meta`` device, which has shapes but no storage.
    None when that needs torch and torch is missing (such a model cannot run here anyway).
    """
    if not config.contextual_dim:
        shapes = config.weight_shapes()
        return shapes, dict.fromkeys(shapes, "F32")
    try:
        import torch
    except ImportError:
        return None
    from slotfill.models.tagger import SlotTagger

    names = {torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
             torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
             torch.bool: "BOOL"}
    with torch.device("meta"):
        state = SlotTagger(config).state_dict()
    return ({name: tuple(t.shape) for name, t in state.items()},
            {name: names.get(t.dtype, str(t.dtype)) for name, t in state.items()})


def check_parameter_count(path: Path, shapes: dict[str, tuple[int, ...]]) -> int:
    """The number of parameters ``shapes`` add up to, refused above :data:`MAX_PARAMETERS`."""
    total = sum(_count(shape) for shape in shapes.values())
    if total > MAX_PARAMETERS:
        raise ArtifactError(f"{path}: the model would have {total:,} parameters, more than the limit "
                            f"{MAX_PARAMETERS:,}")
    return total


def check_weights(directory: Path, config: TaggerConfig) -> int | None:
    """The parameter count the config implies is under the cap, and ``model.safetensors``' header lists exactly
    the tensors it implies, with their shapes and dtypes; reads the header only. Returns the count (None when
    it cannot be known here, see :func:`expected_tensors`)."""
    expected = expected_tensors(config)
    if expected is None:
        return None
    shapes, dtypes = expected
    total = check_parameter_count(directory / "config.json", shapes)
    path = directory / "model.safetensors"
    _check_header(path, read_safetensors_header(path), shapes, shapes, dtypes)
    return total


def load_weights(model: "torch.nn.Module", path: str | Path) -> None:
    """Load weights after checking every name, dtype and shape against the model."""
    from safetensors.torch import load as load_safetensors_bytes

    path = Path(path)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    _check_header(path, read_safetensors_header(path), expected, expected)
    try:
        state = load_safetensors_bytes(path.read_bytes())
    except SafetensorError as exc:
        raise ArtifactError(f"{path}: unreadable safetensors file ({exc})") from None
    model.load_state_dict(state, strict=True)


def load_arrays(path: str | Path, expected: dict[str, tuple[int, ...]],
                names: Iterable[str] | None = None) -> dict[str, "np.ndarray"]:
    """Read weights as NumPy arrays (no torch), after checking names and shapes against ``expected``.

    ``expected`` maps every tensor name to the shape the model config implies; the header is
    checked before any tensor is read, so a hostile file cannot make this allocate. ``names``
    reads only those tensors (default: all).
    """
    from safetensors import safe_open

    path = Path(path)
    header = read_safetensors_header(path)
    wanted = list(expected) if names is None else list(names)
    _check_header(path, header, expected, wanted)
    for name in wanted:
        if header[name]["dtype"] == "BF16":  # NumPy has no bfloat16
            raise ArtifactError(f"{path}: tensor {name!r} is bfloat16, which the NumPy reader cannot hold")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            return {name: handle.get_tensor(name) for name in wanted}
    except SafetensorError as exc:
        raise ArtifactError(f"{path}: unreadable safetensors file ({exc})") from None


# ----------------------------------------------------------------------------- ONNX graphs
def graph_inputs(config: TaggerConfig) -> list[str]:
    """The inputs of the graph ``onnx_graph`` builds for ``config``, in order."""
    if config.uses_char_cnn:
        return ["word_ids", "word_chars", "known_chars", "char_index", "lengths"]
    return ["word_ids", "lengths"]


def graph_outputs(config: TaggerConfig) -> dict[str, tuple[int, str]]:
    """Output name -> (size of its last dimension, what that counts) of the graph ``onnx_graph`` builds."""
    outputs = {"emissions": (config.num_labels, "slot labels")}
    if config.num_intents:
        outputs["intent_logits"] = (config.num_intents, "intents")
    if config.uses_char_cnn:
        outputs["word_char_features"] = (config.char_channels, "character channels")
    return outputs


def check_graph(path: Path, config: TaggerConfig, parameters: int | None) -> None:
    """An ONNX file declares the inputs and outputs the config implies, keeps all its weights inside itself, and
    holds no more of them than the model could need; reads the protobuf only, before onnxruntime sees it."""
    from slotfill.artifact.onnx_header import read_graph_summary

    # An int8 copy adds scales and zero points to the float weights' count; twice it is more than enough.
    limit = 2 * (parameters if parameters is not None else MAX_PARAMETERS) + 1_000_000
    graph = read_graph_summary(path, max_bytes=8 * limit + 64 * 1024 * 1024)  # float64 weights + the nodes
    if graph.external:
        raise ArtifactError(f"{path}: initializer {graph.external[0]!r} keeps its data in another file, which a "
                            f"model directory does not allow")
    inputs = [name for name in graph.inputs if name not in graph.initializers]
    if inputs != graph_inputs(config):
        raise ArtifactError(f"{path}: inputs {inputs}, config.json implies {graph_inputs(config)}")
    outputs = graph_outputs(config)
    if list(graph.outputs) != list(outputs):
        raise ArtifactError(f"{path}: outputs {list(graph.outputs)}, config.json implies {list(outputs)}")
    for name, (size, what) in outputs.items():
        dims = graph.outputs[name]
        if not dims or dims[-1] != size:
            found = dims[-1] if dims else "no"
            raise ArtifactError(f"{path}: output {name!r} has {found!r} columns, config.json has {size} {what}")
    if graph.initializer_elements > limit:
        raise ArtifactError(f"{path}: its initializers hold {graph.initializer_elements:,} numbers, more than "
                            f"the {limit:,} a model of this config could need")


# ----------------------------------------------------------------------------- manifest
def _check_member_name(directory: Path, name: Any) -> Path:
    if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
            or "\x00" in name or Path(name).is_absolute()):
        raise ArtifactError(f"{directory / MANIFEST}: file name {name!r} is not a plain name inside the model directory")
    path = directory / name
    if path.is_symlink():
        raise ArtifactError(f"{path}: symbolic links are not allowed in a model directory")
    return path


def write_manifest(directory: Path, names: Iterable[str], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Hash ``names`` and write ``manifest.json`` last, so a complete manifest implies complete files."""
    files = {}
    for name in sorted(names):
        path = _check_member_name(directory, name)
        files[name] = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "library_version": __version__,
                "files": files, **(extra or {})}
    atomic_write_json(directory / MANIFEST, manifest)
    return manifest


def extend_manifest(directory: Path, manifest: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
    """Rewrite ``manifest`` (as :func:`verify_manifest` returned it) to also vouch for ``names``,
    keeping its other entries; until the atomic rename the old manifest stays valid."""
    extra = {k: v for k, v in manifest.items() if k not in ("format", "format_version", "library_version", "files")}
    return write_manifest(directory, set(manifest["files"]) | set(names), extra=extra)


def verify_manifest(directory: str | Path) -> tuple[dict[str, Any], str]:
    """Check every file listed in the manifest; returns (manifest, sha256 of the manifest)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such model directory")
    manifest_path = directory / MANIFEST
    if manifest_path.is_symlink():  # the file that vouches for the others must be the directory's own
        raise ArtifactError(f"{manifest_path}: symbolic links are not allowed in a model directory")
    if not manifest_path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST}; not a slotfill model, or its export did not finish")
    raw = manifest_path.read_bytes() if manifest_path.stat().st_size <= MAX_JSON_BYTES else b""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ArtifactError(f"{manifest_path}: not valid JSON") from None
    check_strings(manifest_path, manifest)
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT or not isinstance(manifest.get("files"), dict):
        raise ArtifactError(f"{manifest_path}: not a slotfill manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{manifest_path}: format version {manifest.get('format_version')!r} is not supported"
                            f" (this slotfill reads version {FORMAT_VERSION})")
    files = manifest["files"]
    for name in REQUIRED_FILES:
        if name not in files:
            raise ArtifactError(f"{manifest_path}: does not list required file {name}")
    for name, entry in files.items():
        path = _check_member_name(directory, name)
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str) or not isinstance(entry.get("bytes"), int):
            raise ArtifactError(f"{manifest_path}: malformed entry for {name}")
        if not path.is_file():
            raise ArtifactError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise ArtifactError(f"{path}: {size} bytes, the manifest says {entry['bytes']} (truncated or replaced)")
        if sha256_file(path) != entry["sha256"]:
            raise ArtifactError(f"{path}: sha256 does not match the manifest (file modified or corrupted)")
    return manifest, hashlib.sha256(raw).hexdigest()


# ----------------------------------------------------------------------------- the artifact
REPORT_FILES = ("report.json", "report.txt", "errors.jsonl", "report.html")  # write_report's, at most
OPTIONAL_FILES = (*REPORT_FILES, CALIBRATION_FILE, ENCODER_TOKENIZER, ONNX_FILE, ONNX_INT8_FILE, QUANTIZATION_FILE)


@dataclass
class Artifact:
    """Everything in a verified artifact except the network itself; needs no torch.

    ``directory`` is None for a model that lives only in memory (during training).
    """

    featurizer: Featurizer
    tokenizer: TokenizerConfig
    card: dict[str, Any]
    report: dict[str, Any] | None = None
    manifest: dict[str, Any] = field(default_factory=dict)
    digest: str = ""
    config: TaggerConfig | None = None
    directory: Path | None = None
    calibration: dict[str, Any] | None = None  # temperatures (see slotfill.scoring.calibration)
    aligner: "SubwordAligner | None" = None  # sub-word pieces for a transformer front-end
    quantization: dict[str, Any] | None = None  # how the int8 graph compared (see slotfill.artifact.onnx_quantize)

    @property
    def has_onnx(self) -> bool:
        """Whether the manifest vouches for an ONNX graph (an unlisted ``model.onnx`` is ignored)."""
        return ONNX_FILE in self.manifest.get("files", {})

    @property
    def has_int8(self) -> bool:
        """Whether the manifest vouches for the int8 graph (see :mod:`slotfill.artifact.onnx_quantize`)."""
        return ONNX_INT8_FILE in self.manifest.get("files", {})

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "Artifact":
        """Verify an artifact and read everything but the network (no torch).

        Raises :class:`ArtifactError` naming the problem; never unpickles.
        """
        directory = Path(directory)
        manifest, digest = verify_manifest(directory)
        config = read_config(directory / "config.json", TaggerConfig)
        tokenizer = read_config(directory / "tokenizer.json", TokenizerConfig)
        check_network(directory, config, manifest)
        words = Vocab.load(directory / "vocab.json")
        chars = Vocab.load(directory / "chars.json")
        if len(words) != config.vocab_size:
            raise ArtifactError(f"{directory / 'vocab.json'}: {len(words)} words, config.json says {config.vocab_size}")
        if len(chars) != config.num_chars:
            raise ArtifactError(f"{directory / 'chars.json'}: {len(chars)} characters, config.json says "
                                f"{config.num_chars}")
        if _lines(directory / "labels.txt") != [config.id2label[i] for i in range(config.num_labels)]:
            raise ArtifactError(f"{directory / 'labels.txt'}: does not match id2label in config.json")
        if _lines(directory / "intents.txt") != [config.id2intent[i] for i in range(config.num_intents)]:
            raise ArtifactError(f"{directory / 'intents.txt'}: does not match id2intent in config.json")
        card = read_json(directory / "model_card.json")
        if not isinstance(card, dict):
            raise ArtifactError(f"{directory / 'model_card.json'}: must be a JSON object")
        report = read_json(directory / "report.json") if "report.json" in manifest["files"] else None
        calibration = None
        if CALIBRATION_FILE in manifest["files"]:
            calibration = read_json(directory / CALIBRATION_FILE)
            temperatures = [calibration.get(k) if isinstance(calibration, dict) else None
                            for k in ("slot_temperature", "intent_temperature")]
            if not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 1e-3 <= t <= 1e3
                       for t in temperatures):
                raise ArtifactError(f"{directory / CALIBRATION_FILE}: slot_temperature and intent_temperature must "
                                    f"be numbers between 0.001 and 1000")
        quantization = None
        if QUANTIZATION_FILE in manifest["files"]:
            quantization = read_json(directory / QUANTIZATION_FILE)
            if not isinstance(quantization, dict):
                raise ArtifactError(f"{directory / QUANTIZATION_FILE}: must be a JSON object")
        aligner = None
        if config.contextual_dim:
            from slotfill.text.subwords import SubwordAligner, load_tokenizer, special_tokens

            if ENCODER_TOKENIZER not in manifest["files"]:
                raise ArtifactError(f"{directory}: the model has a transformer front-end but the manifest lists no "
                                    f"{ENCODER_TOKENIZER}")
            encoder_tokenizer = load_tokenizer(directory / ENCODER_TOKENIZER)
            if special_tokens(encoder_tokenizer) != config.contextual_tokens:
                raise ArtifactError(f"{directory / ENCODER_TOKENIZER}: its special tokens do not match "
                                    f"contextual_tokens in config.json")
            aligner = SubwordAligner(encoder_tokenizer, config.contextual_tokens, config.contextual_window)
        return cls(featurizer=Featurizer(words, chars, config.max_word_chars), tokenizer=tokenizer, card=card,
                   report=report, manifest=manifest, digest=digest, config=config, directory=directory,
                   calibration=calibration, aligner=aligner, quantization=quantization)


@dataclass
class LoadedModel(Artifact):
    """An artifact with its torch network loaded (``config`` is the model's)."""

    model: "SlotTagger | None" = None

    def __post_init__(self) -> None:
        if self.model is None:
            raise TypeError("LoadedModel needs a model")
        self.config = self.model.config

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> "LoadedModel":
        """Verify and load an artifact with its torch network. Raises :class:`ArtifactError`; never unpickles."""
        from slotfill.models.tagger import SlotTagger

        artifact = Artifact.from_pretrained(directory)
        model = SlotTagger.from_pretrained(artifact.directory)
        fields = {name: getattr(artifact, name) for name in ("featurizer", "tokenizer", "card", "report", "manifest",
                                                             "digest", "directory", "calibration", "aligner",
                                                             "quantization")}
        return cls(**fields, model=model)

    def save_pretrained(self, directory: str | Path, report_title: str | None = None,
                        report_errors: "ErrorAnalysis | None" = None) -> dict[str, Any]:
        """Write every file of the artifact atomically, the manifest last; returns the manifest. A reader that
        finds a manifest whose hashes match knows the whole artifact is complete.

        The network's config.json and weights come from :meth:`SlotTagger.save_pretrained`, the report's
        files from :func:`slotfill.scoring.reporting.write_report` (``report_title`` heads report.txt;
        ``report_errors``, the error analysis of the report's predictions, adds errors.jsonl and report.html,
        which embeds the plots already in ``directory``).
        """
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = self.model.config
        # An old manifest must not vouch for files that are about to change, and an old graph, report or
        # calibration would describe other weights.
        (directory / MANIFEST).unlink(missing_ok=True)
        for stale in OPTIONAL_FILES:
            (directory / stale).unlink(missing_ok=True)
        self.model.save_pretrained(directory)
        atomic_write_json(directory / "tokenizer.json", self.tokenizer.to_dict())
        atomic_write_text(directory / "vocab.json", self.featurizer.words.to_json())
        atomic_write_text(directory / "chars.json", self.featurizer.chars.to_json())
        atomic_write_text(directory / "labels.txt", "".join(f"{config.id2label[i]}\n"
                                                            for i in range(config.num_labels)))
        atomic_write_text(directory / "intents.txt", "".join(f"{config.id2intent[i]}\n"
                                                             for i in range(config.num_intents)))
        atomic_write_json(directory / "model_card.json", self.card)
        names = list(REQUIRED_FILES)
        if config.contextual_dim:
            if self.aligner is None:
                raise ValueError("a model with a transformer front-end is saved with its tokenizer (aligner)")
            atomic_write_text(directory / ENCODER_TOKENIZER, self.aligner.tokenizer.to_str())
            names.append(ENCODER_TOKENIZER)
        if self.calibration is not None:
            atomic_write_json(directory / CALIBRATION_FILE, self.calibration)
            names.append(CALIBRATION_FILE)
        if self.report is not None:
            from slotfill.scoring.reporting import write_report

            written = write_report(self.report, directory, title=report_title, errors=report_errors,
                                   figures_from=(directory,))
            names.extend(path.name for path in written)
        return write_manifest(directory, names, extra={"name": self.card.get("name"),
                                                       "version": self.card.get("version")})


def check_network(directory: Path, config: TaggerConfig, manifest: dict[str, Any]) -> None:
    """Everything that describes the network agrees with config.json, before any of it is built or loaded:
    the parameter count, the weights' header, and each ONNX graph the manifest lists."""
    parameters = check_weights(directory, config)
    if config.contextual_dim:  # such a model runs on torch only; no graph is read
        return
    for name in (ONNX_FILE, ONNX_INT8_FILE):
        if name in manifest["files"]:
            check_graph(directory / name, config, parameters)


def read_config(path: Path, kind: type) -> Any:
    """``kind.from_dict`` of a JSON file, its errors naming the file."""
    data = read_json(path)
    try:
        return kind.from_dict(data)
    except ConfigError as exc:
        raise ArtifactError(f"{path}: {exc}") from None
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        # from_dict names the key for every value it expects to meet; a shape it did not foresee (a number where
        # a list goes) still names the file, in one line.
        raise ArtifactError(f"{path}: not a valid {path.name} ({type(exc).__name__}: {exc})") from None


def _lines(path: Path) -> list[str]:
    return read_text(path).splitlines()
