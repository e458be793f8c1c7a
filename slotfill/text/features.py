"""Turning normalised tokens into the padded id tensors a tagger reads."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from slotfill.text.vocab import Vocab

if TYPE_CHECKING:
    import torch


class Featurizer:
    """Word ids + character ids for a batch of token sequences (already normalised)."""

    def __init__(self, words: Vocab, chars: Vocab, max_word_chars: int):
        self.words = words
        self.chars = chars
        self.max_word_chars = max_word_chars
        self._char_cache: dict[str, list[int]] = {}

    @classmethod
    def build(cls, token_lists: Iterable[Sequence[str]], *, min_freq: int = 1, max_word_chars: int = 24,
              max_vocab: int | None = None) -> "Featurizer":
        word_counts: Counter[str] = Counter()
        char_counts: Counter[str] = Counter()
        for tokens in token_lists:
            word_counts.update(tokens)
            for token in tokens:
                char_counts.update(token)
        return cls(Vocab.build(word_counts, min_freq=min_freq, max_size=max_vocab), Vocab.build(char_counts),
                   max_word_chars)

    def char_ids(self, token: str) -> list[int]:
        ids = self._char_cache.get(token)
        if ids is None:
            ids = self.chars.encode(token[: self.max_word_chars]) or [self.chars.unk_id]
            if len(self._char_cache) < 200_000:  # bounded: the service sees unbounded distinct words
                self._char_cache[token] = ids
        return ids

    def char_matrix(self, words: Sequence[str]) -> np.ndarray:
        """int64 (N, L) character ids of ``words``, one row each, 0-padded; (0, 1) for no words."""
        rows = [self.char_ids(word) for word in words]
        matrix = np.zeros((len(rows), max((len(r) for r in rows), default=1)), dtype=np.int64)
        for i, ids in enumerate(rows):
            matrix[i, : len(ids)] = ids
        return matrix

    def batch(self, token_lists: Sequence[Sequence[str]]) -> tuple["torch.Tensor", "torch.Tensor", "torch.Tensor"]:
        """:meth:`arrays` as torch tensors (sharing memory)."""
        import torch

        return tuple(torch.from_numpy(a) for a in self.arrays(token_lists))  # type: ignore[return-value]

    def arrays(self, token_lists: Sequence[Sequence[str]], chars: bool = True
               ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """-> int64 word_ids (B, T), char_ids (B, T, L) (None with ``chars=False``), lengths (B,).
        Every sequence must be non-empty."""
        lengths = np.fromiter((len(t) for t in token_lists), dtype=np.int64, count=len(token_lists))
        steps = int(lengths.max())
        words = np.zeros((len(token_lists), steps), dtype=np.int64)
        for b, tokens in enumerate(token_lists):
            words[b, : len(tokens)] = self.words.encode(tokens)
        if not chars:
            return words, None, lengths
        per_token = self.char_matrix([token for tokens in token_lists for token in tokens])  # (N, L)
        char_ids = np.zeros((len(token_lists), steps, per_token.shape[1]), dtype=np.int64)
        char_ids[np.arange(steps)[None, :] < lengths[:, None]] = per_token  # row-major: the tokens' order
        return words, char_ids, lengths
