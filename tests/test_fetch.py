"""Dataset download: served from a local mirror over HTTP, verified by SHA-256."""

from __future__ import annotations

import functools
import hashlib
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from slotfill.errors import SlotfillError
from training import fetch as fetch_module
from training.fetch import DATASETS, fetch, verify

# The benchmark files live in the "shared" folder next to the repository root.
DATASETS_DIR = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_data = pytest.mark.skipif(
    not DATASETS_DIR.is_dir(), reason=f"benchmark files not found at {DATASETS_DIR} (needed to serve a mirror)"
)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass  # keep test output clean


class _Mirror:
    """Serve ``root`` on 127.0.0.1; counts requests so tests can see whether the network was used."""

    def __init__(self, root: Path):
        self.requests = 0
        mirror = self

        class Handler(_QuietHandler):
            def do_GET(self):
                mirror.requests += 1
                super().do_GET()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def test_hash_table_matches_shared_files_when_present():
    if not DATASETS_DIR.is_dir():
        pytest.skip(f"benchmark files not found at {DATASETS_DIR}")
    for name, dataset in DATASETS.items():
        assert set(dataset.sha256) == {f"{s}/{f}" for s in fetch_module.SPLITS for f in fetch_module.FILES}
        for rel, digest in dataset.sha256.items():
            assert hashlib.sha256((DATASETS_DIR / name / rel).read_bytes()).hexdigest() == digest, rel


def test_default_url_points_at_the_pinned_commit():
    assert fetch_module.DEFAULT_BASE_URL == "https://raw.githubusercontent.com/MiuLab/SlotGated-SLU/61f0307/data"


@needs_data
@pytest.mark.parametrize("name", ["atis", "snips"])
def test_fetch_through_mirror_then_cached(tmp_path, name):
    cache = tmp_path / "cache"
    with _Mirror(DATASETS_DIR) as mirror:
        path = fetch(name, cache, mirror=mirror.url + "/")
        assert path == cache / name
        assert mirror.requests == 9
        for rel in DATASETS[name].sha256:
            assert (path / rel).read_bytes() == (DATASETS_DIR / name / rel).read_bytes()
        assert verify(path, name) == []
        # second call: files verify, nothing is downloaded
        assert fetch(name, cache, mirror=mirror.url) == path
        assert mirror.requests == 9
    # only the dataset folder is left in the cache (no temporary folders)
    assert [p.name for p in cache.iterdir()] == [name]


@needs_data
def test_tampered_mirror_is_refused_and_leaves_nothing(tmp_path):
    root = tmp_path / "mirror"
    shutil.copytree(DATASETS_DIR / "atis", root / "atis")
    target = root / "atis" / "valid" / "seq.out"
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01  # one byte changed
    target.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with _Mirror(root) as mirror, pytest.raises(SlotfillError) as info:
        fetch("atis", cache, mirror=mirror.url)
    message = str(info.value)
    assert "checksum mismatch" in message and f"{mirror.url}/atis/valid/seq.out" in message
    assert "\n" not in message
    assert list(cache.iterdir()) == []


@needs_data
def test_corrupt_cache_is_replaced(tmp_path):
    cache = tmp_path / "cache"
    with _Mirror(DATASETS_DIR) as mirror:
        fetch("snips", cache, mirror=mirror.url)
        (cache / "snips" / "test" / "label").write_text("tampered\n")
        assert verify(cache / "snips", "snips") == ["test/label"]
        fetch("snips", cache, mirror=mirror.url)
    assert verify(cache / "snips", "snips") == []
    assert [p.name for p in cache.iterdir()] == ["snips"]


def test_missing_file_on_mirror_names_url(tmp_path):
    (tmp_path / "empty").mkdir()
    with _Mirror(tmp_path / "empty") as mirror, pytest.raises(SlotfillError, match=r"HTTP 404") as info:
        fetch("atis", tmp_path / "cache", mirror=mirror.url)
    assert f"{mirror.url}/atis/train/seq.in" in str(info.value)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreachable_mirror_and_unknown_dataset(tmp_path):
    with _Mirror(tmp_path) as mirror:
        dead = mirror.url  # the port is free again once the server is closed
    with pytest.raises(SlotfillError, match=r"download failed: http://127\.0\.0\.1:\d+/atis/train/seq\.in"):
        fetch("atis", tmp_path / "cache", mirror=dead)
    with pytest.raises(SlotfillError, match="unknown dataset 'imdb'; available: atis, snips"):
        fetch("imdb", tmp_path / "cache")
