"""Small file helpers with no heavy imports: atomic writes and bounded JSON reads."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from slotfill.errors import ArtifactError

# Metadata files are small; refuse anything bigger before parsing it.
MAX_JSON_BYTES = 64 * 1024 * 1024


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same directory + fsync + rename.

    Readers see either the old file or the complete new one, never a partial write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; keep an existing file's mode, else the usual 0644.
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, data: Any) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_text(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> str:
    """A small text file of an artifact, refused in one line when missing, too large or not UTF-8."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    if size > max_bytes:
        raise ArtifactError(f"{path}: {size} bytes is too large for a metadata file (limit {max_bytes})")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ArtifactError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:  # a directory in its place, no permission: still one line naming the file
        raise ArtifactError(f"{path}: cannot be read ({exc.strerror})") from None


def read_json(path: str | Path, *, max_bytes: int = MAX_JSON_BYTES) -> Any:
    """A JSON metadata file; refused when it is not UTF-8 JSON, nests absurdly deep, or holds a string the
    service could not echo back (a lone surrogate from a ``\\ud800`` escape)."""
    path = Path(path)
    text = read_text(path, max_bytes=max_bytes)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc})") from None
    except RecursionError:
        raise ArtifactError(f"{path}: JSON nested too deeply") from None
    check_strings(path, data)
    return data


def check_strings(path: str | Path, value: Any, where: str = "") -> None:
    """Every string in ``value`` (keys too) encodes as UTF-8: JSON escapes can smuggle in lone surrogates,
    which would fail only later, when an answer that echoes them is encoded. Iterative, so depth is no risk."""
    pending = [(where, value)]
    while pending:
        where, item = pending.pop()
        if isinstance(item, str):
            _check_string(path, where, item)
        elif isinstance(item, dict):
            for key, child in item.items():
                name = f"{where}.{key}" if where else str(key)
                if isinstance(key, str):
                    _check_string(path, f"{name} (the key)", key)
                pending.append((name, child))
        elif isinstance(item, (list, tuple)):
            pending.extend((f"{where}[{i}]", child) for i, child in enumerate(item))


def _check_string(path: str | Path, where: str, text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        field = where.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace") or "the document"
        raise ArtifactError(f"{path}: {field}: lone surrogate U+{ord(text[exc.start]):04X} at character "
                            f"{exc.start} is not valid Unicode") from None
