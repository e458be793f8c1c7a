"""Words -> sub-word pieces for a pretrained transformer, in overlapping windows (no torch).

A contextual tagger reads one state per *word*; the transformer reads sub-word pieces and has a
length limit. :class:`SubwordAligner` splits every word into pieces (cached), packs each sentence
into windows of at most ``window`` pieces (special tokens included) and records, for every word,
the positions of its first and last piece in the window where it has the most context on both
sides. Sentences longer than a window get several windows that overlap by about half, so no word
is dropped and every word still sees context; only a single word longer than a whole window is
cut to the window's size (its first pieces stand for it).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slotfill.errors import ArtifactError, ConfigError

# Special-token layout the aligner needs; stored in the model config (``contextual_tokens``).
TOKEN_KEYS = ("prefix", "suffix", "pad", "unk")


@dataclass
class SubwordBatch:
    """Piece ids for a batch of sentences, as int64 arrays.

    input_ids, attention_mask: (W, S), one row per window (a sentence has one or more windows);
    first, last: (B, T) flat indices into the (W * S) piece positions of each word's first and
    last piece (0 at padded word positions).
    """

    input_ids: np.ndarray
    attention_mask: np.ndarray
    first: np.ndarray
    last: np.ndarray

    def tensors(self) -> dict[str, Any]:
        import torch

        return {name: torch.from_numpy(getattr(self, name))
                for name in ("input_ids", "attention_mask", "first", "last")}


def load_tokenizer(path: str | Path):
    """A ``tokenizers.Tokenizer`` from a ``tokenizer.json``, with padding and truncation switched off
    (the aligner pads and windows itself; truncation would silently drop words)."""
    try:
        from tokenizers import Tokenizer
    except ImportError:  # pragma: no cover - tokenizers comes with the train extra
        raise ConfigError("a contextual model needs the 'tokenizers' package (pip install 'slotfill[train]')") from None
    path = Path(path)
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except FileNotFoundError:
        raise ArtifactError(f"{path}: missing") from None
    except Exception as exc:  # the Rust side raises a plain Exception for malformed files
        raise ArtifactError(f"{path}: not a tokenizers JSON file ({exc})") from None
    tokenizer.no_padding()
    tokenizer.no_truncation()
    return tokenizer


def special_tokens(tokenizer) -> dict[str, Any]:
    """The ids a window starts and ends with, the padding id and the unknown-piece id."""
    with_specials = tokenizer.encode("a", add_special_tokens=True).ids
    plain = tokenizer.encode("a", add_special_tokens=False).ids
    n = len(plain)
    where = next((i for i in range(len(with_specials) - n + 1) if with_specials[i:i + n] == plain), None)
    if not plain or where is None:
        raise ConfigError("cannot find how the tokenizer wraps a sequence in special tokens")
    model = json.loads(tokenizer.to_str()).get("model", {})
    unk = model.get("unk_token")
    unk_id = tokenizer.token_to_id(unk) if isinstance(unk, str) else None
    pad_id = next((tokenizer.token_to_id(t) for t in ("[PAD]", "<pad>") if tokenizer.token_to_id(t) is not None), 0)
    return {"prefix": with_specials[:where], "suffix": with_specials[where + n:], "pad": pad_id,
            "unk": unk_id if unk_id is not None else pad_id}


class SubwordAligner:
    """Builds :class:`SubwordBatch` arrays for normalised token lists (thread-safe: the cache is a dict)."""

    def __init__(self, tokenizer, tokens: dict[str, Any], window: int):
        missing = [key for key in TOKEN_KEYS if key not in tokens]
        if missing:
            raise ConfigError(f"contextual_tokens: missing {', '.join(missing)}")
        self.tokenizer = tokenizer
        self.prefix = [int(i) for i in tokens["prefix"]]
        self.suffix = [int(i) for i in tokens["suffix"]]
        self.pad = int(tokens["pad"])
        self.unk = int(tokens["unk"])
        self.window = int(window)
        self.room = self.window - len(self.prefix) - len(self.suffix)  # pieces of words per window
        if self.room < 1:
            raise ConfigError(f"contextual_window {window} leaves no room for words between the special tokens")
        self._cache: dict[str, list[int]] = {}

    def pieces(self, words: Sequence[str]) -> list[list[int]]:
        missing = list({w for w in words if w not in self._cache})
        if missing:
            encoded = self.tokenizer.encode_batch(missing, add_special_tokens=False)
            found = {w: (e.ids or [self.unk]) for w, e in zip(missing, encoded)}  # e.g. a lone zero-width space
            if len(self._cache) < 200_000:  # bounded: a service sees unbounded distinct words
                self._cache.update(found)
            return [self._cache.get(w) or found[w] for w in words]
        return [self._cache[w] for w in words]

    def windows(self, counts: Sequence[int]) -> tuple[list[tuple[int, int]], list[int]]:
        """Windows as (first word, end word) and, per word, the index of the window it is read from."""
        n, room = len(counts), self.room
        spans: list[tuple[int, int]] = []
        start = 0
        while True:
            end, total = start, 0
            while end < n and total + counts[end] <= room:
                total += counts[end]
                end += 1
            end = max(end, start + 1)  # a single word longer than a window still gets one
            spans.append((start, end))
            if end >= n:
                break
            # The next window starts about half-way through this one, so the two overlap.
            half, acc, nxt = total / 2, 0, start
            while nxt < end - 1 and acc + counts[nxt] <= half:
                acc += counts[nxt]
                nxt += 1
            start = max(start + 1, nxt)
        choice = []
        for i in range(n):
            best, best_score = 0, -1
            for w, (ws, we) in enumerate(spans):
                if ws <= i < we:
                    left = i - ws if ws > 0 else n  # a window that begins the sentence: full left context
                    right = we - 1 - i if we < n else n
                    if min(left, right) > best_score:
                        best, best_score = w, min(left, right)
            choice.append(best)
        return spans, choice

    def encode(self, token_lists: Sequence[Sequence[str]]) -> SubwordBatch:
        rows: list[list[int]] = []
        steps = max(len(tokens) for tokens in token_lists)
        first = np.zeros((len(token_lists), steps), dtype=np.int64)
        last = np.zeros((len(token_lists), steps), dtype=np.int64)
        word_pos: list[tuple[int, int, int, int, int]] = []  # (b, t, row, offset of first, offset of last)
        for b, tokens in enumerate(token_lists):
            pieces = self.pieces(tokens)
            spans, choice = self.windows([len(p) for p in pieces])
            for ws, we in spans:
                row, offsets = list(self.prefix), []
                for i in range(ws, we):
                    offsets.append(len(row))
                    row.extend(pieces[i][: self.room])
                row.extend(self.suffix)
                rows.append(row)
                for i, offset in zip(range(ws, we), offsets):
                    if spans[choice[i]] == (ws, we):
                        word_pos.append((b, i, len(rows) - 1, offset, offset + min(len(pieces[i]), self.room) - 1))
        width = max(len(r) for r in rows)
        input_ids = np.full((len(rows), width), self.pad, dtype=np.int64)
        attention = np.zeros((len(rows), width), dtype=np.int64)
        for r, row in enumerate(rows):
            input_ids[r, : len(row)] = row
            attention[r, : len(row)] = 1
        for b, t, r, lo, hi in word_pos:
            first[b, t] = r * width + lo
            last[b, t] = r * width + hi
        return SubwordBatch(input_ids=input_ids, attention_mask=attention, first=first, last=last)
