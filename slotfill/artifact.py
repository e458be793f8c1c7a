"""Model artifacts on disk: atomic writes, safetensors weights, and a sha256 manifest.

An artifact directory holds::

    config.json         TaggerConfig (architecture, label ids)
    model.safetensors   weights (never a pickle)
    tokenizer.json      TokenizerConfig, so serving tokenises exactly as training did
    vocab.json          word vocabulary
    chars.json          character vocabulary
    labels.txt          slot labels, one per line, in id order
    intents.txt         intents, one per line, in id order (empty for slot-only models)
    model_card.json     name, version, creation time, training settings, library version
    report.json/.txt    evaluation report (when the model was evaluated)
    model.onnx          optional ONNX graph of the network (``slotfill export --format onnx``),
                        for the torch-free serving backend
    manifest.json       sha256 and size of every file above; written last

Loading verifies the manifest before reading anything else, refuses names that
leave the directory, and checks sizes and tensor shapes before allocating.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from typing import TYPE_CHECKING

from safetensors import SafetensorError

from . import __version__
from .errors import ArtifactError
from .fileio import MAX_JSON_BYTES, atomic_write_bytes, atomic_write_json, atomic_write_text, read_json

if TYPE_CHECKING:  # torch is needed to save or load into a module, not to read weights as arrays
    import numpy as np
    import torch

__all__ = ["atomic_write_bytes", "atomic_write_json", "atomic_write_text", "read_json", "save_weights",
           "load_weights", "load_arrays", "write_manifest", "extend_manifest", "verify_manifest", "sha256_file"]

MANIFEST = "manifest.json"
FORMAT = "slotfill-artifact"
FORMAT_VERSION = 1
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json", "vocab.json", "chars.json",
                  "labels.txt", "intents.txt", "model_card.json")
ONNX_FILE = "model.onnx"  # optional: the graph `slotfill export --format onnx` writes
ONNX_INT8_FILE = "model.int8.onnx"  # optional: its int8 copy (`--quantize int8`)
QUANTIZATION_FILE = "quantization.json"  # how the int8 copy compared with the float graph
MAX_SAFETENSORS_HEADER = 16 * 1024 * 1024
_DTYPES = ("F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL")


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
        if dtype not in _DTYPES or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise ArtifactError(f"{path}: tensor {name!r} has unsupported dtype or shape")
        if not (0 <= begin <= end <= data_len):
            raise ArtifactError(f"{path}: tensor {name!r} lies outside the file (truncated?)")
    return header


def _check_header(path: Path, header: dict[str, Any], expected: dict[str, tuple[int, ...]],
                  wanted: Iterable[str]) -> None:
    """The file holds exactly the tensors ``expected`` names, and each ``wanted`` one has the expected shape."""
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
    if not manifest_path.is_file():
        raise ArtifactError(f"{directory}: no {MANIFEST}; not a slotfill model, or its export did not finish")
    raw = manifest_path.read_bytes() if manifest_path.stat().st_size <= MAX_JSON_BYTES else b""
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ArtifactError(f"{manifest_path}: not valid JSON") from None
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
