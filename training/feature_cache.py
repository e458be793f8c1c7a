"""Word states of a frozen transformer, computed once per data set and kept on disk.

A frozen encoder gives the same word states in every epoch and every run, so training computes them
once: for the training sentences (slot-substituted copies included) and for the dev sentences that
early stopping reads every epoch. They are stored as safetensors (float16, every layer the tagger may
mix) under a key made of everything they depend on: the encoder's files (sha256), the layers and the
pooling read, the window, and the sentences themselves. A changed data set, encoder or setting is a
new key, so stale states are never read. Writes are atomic (temp file + rename); a file that does not
verify is recomputed.

The cache lives in ``$SLOTFILL_FEATURE_CACHE`` (default ``~/.cache/slotfill/features``); the setting
``contextual_cache`` moves it, and ``contextual_cache=off`` keeps the states in memory only.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_arrays

from slotfill.artifact.artifact import sha256_file
from slotfill.artifact.files import atomic_write_bytes

FORMAT = "slotfill-word-states-1"


def default_cache_dir() -> Path:
    configured = os.environ.get("SLOTFILL_FEATURE_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "slotfill" / "features"


def encoder_digest(folder: Path) -> str:
    """sha256 over the encoder's weights, config and tokenizer files, by name."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and (path.suffix in (".safetensors", ".bin") or path.name in ("config.json",
                                                                                       "tokenizer.json")):
            digest.update(f"{path.name}:{sha256_file(path)}\n".encode())
    return digest.hexdigest()


class WordStateCache:
    """Frozen word states (T, L, E) per sentence for one encoder and one way of reading it."""

    def __init__(self, root: Path | None, encoder: str, *, layers: str, pooling: str, window: int):
        self.root = root
        self.setting = {"format": FORMAT, "encoder": encoder, "layers": layers, "pooling": pooling, "window": window}

    def key(self, sentences: Sequence[Sequence[str]]) -> str:
        text = json.dumps([self.setting, [list(tokens) for tokens in sentences]], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def path(self, sentences: Sequence[Sequence[str]]) -> Path | None:
        """Where the states of ``sentences`` are kept (None for a cache in memory only)."""
        return self.root / f"{self.key(sentences)}.safetensors" if self.root is not None else None

    def states(self, sentences: Sequence[Sequence[str]], compute: Callable[[list[int]], list[np.ndarray]],
               log: Callable[[str], None], what: str) -> list[np.ndarray]:
        """The states of ``sentences`` from the cache, or from ``compute(indices)`` (then stored)."""
        path = self.path(sentences)
        if path is not None and path.is_file():
            cached = self._read(path, sentences)
            if cached is not None:
                log(f"contextual word states of {len(sentences)} {what} read from {path}")
                return cached
        states = compute(list(range(len(sentences))))
        if path is not None:
            lengths = np.array([len(s) for s in states], dtype=np.int64)
            data = save_arrays({"states": np.concatenate(states), "lengths": lengths},
                               metadata={"slotfill": json.dumps(self.setting)})
            atomic_write_bytes(path, data)
            log(f"contextual word states of {len(sentences)} {what} stored in {path} ({len(data) >> 20} MB)")
        return states

    def _read(self, path: Path, sentences: Sequence[Sequence[str]]) -> list[np.ndarray] | None:
        try:
            with safe_open(str(path), framework="numpy") as handle:
                if json.loads(handle.metadata().get("slotfill", "null")) != self.setting:
                    return None
                flat, lengths = handle.get_tensor("states"), handle.get_tensor("lengths")
        except (SafetensorError, OSError, ValueError):
            return None
        if lengths.tolist() != [len(tokens) for tokens in sentences] or int(lengths.sum()) != len(flat):
            return None
        return np.split(flat, np.cumsum(lengths)[:-1])


@torch.no_grad()
def compute_states(embedder, aligner, sentences: Sequence[Sequence[str]], indices: list[int], device: torch.device,
                   progress: bool, desc: str, batch: int = 64) -> list[np.ndarray]:
    """Run the frozen ``embedder`` over ``sentences[i]`` for ``i`` in ``indices`` (shortest first, in batches);
    returns each one's word states (T, L, E) float16, in ``indices`` order."""
    from tqdm import tqdm

    was_training = embedder.training
    embedder.eval()
    order = sorted(indices, key=lambda i: len(sentences[i]))
    found: dict[int, np.ndarray] = {}
    with tqdm(total=len(order), desc=desc, unit="sentence", disable=not progress, leave=False) as bar:
        for start in range(0, len(order), batch):
            rows = order[start:start + batch]
            pieces = aligner.encode([sentences[i] for i in rows]).tensors()
            states = embedder.states(**{k: v.to(device) for k, v in pieces.items()}).cpu()
            for j, i in enumerate(rows):
                found[i] = states[j, : len(sentences[i])].to(torch.float16).numpy()
            bar.update(len(rows))
    embedder.train(was_training)
    return [found[i] for i in indices]
