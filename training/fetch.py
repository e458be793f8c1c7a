"""Download the ATIS and SNIPS benchmark splits, verified by SHA-256.

Source: the splits of Goo et al. (2018) as published in the GitHub repository
MiuLab/SlotGated-SLU at commit 61f0307, folder ``data/<name>/<split>/<file>``.
Every file is checked against the hash table below (computed from the files of
that commit), so a changed upstream, a bad mirror or a truncated download is
refused instead of silently producing different benchmark numbers.

Downloads go into a temporary folder inside the cache and are renamed into
place only when every file verifies; a failed or tampered download leaves
nothing behind. Cached files that verify are not downloaded again.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from slotfill.errors import SlotfillError

DEFAULT_BASE_URL = "https://raw.githubusercontent.com/MiuLab/SlotGated-SLU/61f0307/data"
SPLITS = ("train", "valid", "test")
FILES = ("seq.in", "seq.out", "label")
TIMEOUT_S = 60


@dataclass(frozen=True)
class Dataset:
    """One benchmark: its files (``split/file`` -> sha256) and utterance counts per split."""

    name: str
    sha256: dict[str, str]
    sizes: dict[str, int]


DATASETS: dict[str, Dataset] = {
    "atis": Dataset(
        name="atis",
        sha256={
            "train/seq.in": "3a670980841b21ab39088b2595efc17d487cdc45769c075a3e5f9458bba28c7f",
            "train/seq.out": "14c7131bd66562f797dbd7189bc7358f0cf354c6afb0785a9ab973c35b58f34c",
            "train/label": "d0a771547665eecbdf9f96ea015ef07d1f6ee9f063e861020dafabb3c2a04377",
            "valid/seq.in": "c7435b96e7948393608c34819628e863c5338f11ca68e8f896d2cc041d8e17f8",
            "valid/seq.out": "83ccff3e36f83a993f8e5b5b82adf3256076f234abda4d784051381d7ac76922",
            "valid/label": "06957cfe6fdffac84f8280bc3a1f8ca85c85631b363817aa4543aac611f8addf",
            "test/seq.in": "4b2119fc59c37f9398c6605db435d4f467505009e6ee3e5af04fed09f39dc397",
            "test/seq.out": "a4690d6bceadc06876d1ff99bc401744aa981cb321e598ae12a3859d7be53254",
            "test/label": "ce4bfe6590d9498e1078f30b4137d3e8b3e94277b444b26360c0bf2e9e282761",
        },
        sizes={"train": 4478, "valid": 500, "test": 893},
    ),
    "snips": Dataset(
        name="snips",
        sha256={
            "train/seq.in": "04ad1e3f2121d83c6478f9a4b17d2dbdc21d06d6127f73cb7af835ed733f9855",
            "train/seq.out": "fd5f2121d8055827e5d6b3d3bac30f3d7e94e82a5d437751960cbdd9e1b4f6d3",
            "train/label": "bfd7df6cf9dd76c5da5d8b61bc85f90386197bdd3d7510c1d324c051537b962f",
            "valid/seq.in": "64e0f6d8ad8aab3a3828164d7d53731a0993d3ca1aed437ceaca6d3d568d410e",
            "valid/seq.out": "712e6d34feb8d52d208b820a5f8bae6e6ff990f08374507dfde22de389088319",
            "valid/label": "9c1dd041216f647bcfca838aaf1a48eb5781e4404256d31ff07cd38a5436c52f",
            "test/seq.in": "c1e341173fcea2951a8ca371956a6f81c76de87b9583c62eb87edd6158fa3a7c",
            "test/seq.out": "58c07c9097d5e1f78889765c2a535a160f6455b90b3142055c8051847afcca47",
            "test/label": "37a26da3ad079bb41c42c85a3a8f827eb47efec4c5917ce5d08f4b2736e4f830",
        },
        sizes={"train": 13084, "valid": 700, "test": 700},
    ),
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(dataset_dir: str | Path, name: str) -> list[str]:
    """Relative paths of the files in ``dataset_dir`` that are missing or differ from the table."""
    dataset = _dataset(name)
    root = Path(dataset_dir)
    return [
        rel for rel, digest in dataset.sha256.items() if not (root / rel).is_file() or _sha256(root / rel) != digest
    ]


def _dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise SlotfillError(f"unknown dataset {name!r}; available: {', '.join(DATASETS)}") from None


def _download(url: str, target: Path) -> None:
    """Stream ``url`` into ``target``; any failure becomes a one-line SlotfillError."""
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, target.open("wb") as out:
            shutil.copyfileobj(response, out)
    except urllib.error.HTTPError as error:
        error.close()  # an HTTPError holds the open response; don't leak its socket
        raise SlotfillError(f"download failed: {url}: HTTP {error.code} {error.reason}") from None
    except urllib.error.URLError as error:
        raise SlotfillError(f"download failed: {url}: {error.reason}") from None
    except (OSError, ValueError) as error:  # timeouts, resets, malformed URLs
        raise SlotfillError(f"download failed: {url}: {error}") from None


def fetch(name: str, cache_dir: str | Path, mirror: str | None = None) -> Path:
    """Make ``<cache_dir>/<name>/{train,valid,test}/{seq.in,seq.out,label}`` exist and verify; return that folder.

    ``mirror`` replaces the base URL: files are read from ``{mirror}/{name}/{split}/{file}``
    (any URL urllib opens, including ``file://``).
    """
    dataset = _dataset(name)
    cache_dir = Path(cache_dir)
    target = cache_dir / name
    if target.is_dir() and not verify(target, name):
        return target  # cached and intact: no network
    base = (mirror if mirror is not None else DEFAULT_BASE_URL).rstrip("/")
    cache_dir.mkdir(parents=True, exist_ok=True)
    # The temporary folder lives in the cache so the final rename stays on one filesystem.
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-download-", dir=cache_dir))
    try:
        for rel, digest in dataset.sha256.items():
            url = f"{base}/{name}/{rel}"
            path = staging / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _download(url, path)
            actual = _sha256(path)
            if actual != digest:
                raise SlotfillError(
                    f"checksum mismatch for {url}: expected sha256 {digest}, got {actual}; file refused"
                )
        if target.exists():
            # A corrupt or partial earlier copy: swap it out, then delete it.
            old = Path(tempfile.mkdtemp(prefix=f".{name}-old-", dir=cache_dir))
            os.replace(target, old / name)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target
