"""The decoder a predictor uses, chosen once: labels from emissions, and how sure the model is of them.

* :class:`SoftmaxDecoder` for a tagger without a CRF: each token's argmax; a span's confidence is
  the product of its tokens' probabilities (independent decisions).
* :class:`CRFDecoder`: Viterbi, and the path's posteriors by forward-backward, in NumPy
  (:mod:`slotfill.decoding.reference`, the reference); :class:`CompiledCRFDecoder` the same in the compiled
  kernels (:mod:`slotfill.decoding.kernels`), used whenever they were built.

Every decoder has the same two calls: ``best_paths(emissions, lengths)`` -> (B, T) label ids, and
``posteriors(emissions, lengths, paths, rows, starts, ends)`` -> :class:`~slotfill.decoding.reference.Posteriors`
(token confidences (B, T) and the probability of each span ``[starts[i], ends[i])`` of row ``rows[i]``,
rows ascending). ``with_temperature(t)`` gives the same decoder with every score divided by ``t``
before probabilities are taken (calibration; see :mod:`slotfill.scoring.calibration`); paths never change.
A CRF decoder's ``k_best`` gives the k most probable paths, a softmax one's ``top_labels`` each token's k most
probable labels (what a predictor's ``alternatives`` answers).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from slotfill.decoding import kernels
from slotfill.decoding.reference import (
    CRFTables,
    Posteriors,
    forward_backward,
    kbest_viterbi,
    path_posteriors,
    softmax,
    viterbi,
)


def _pick(scores: np.ndarray, paths: np.ndarray) -> np.ndarray:
    """scores (B, T, K) at each position's decoded label paths (B, T) -> (B, T)."""
    batch, steps = paths.shape
    return scores[np.arange(batch)[:, None], np.arange(steps)[None, :], paths]


class SoftmaxDecoder:
    name = "numpy"

    def __init__(self, temperature: float = 1.0):
        self.temperature = float(temperature)

    def with_temperature(self, temperature: float) -> "SoftmaxDecoder":
        return SoftmaxDecoder(temperature)

    def best_paths(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return emissions.argmax(axis=2)

    def top_labels(self, emissions: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Each position's ``min(k, K)`` most probable labels, (B, T, k) int64, most probable first, and their
        probabilities (B, T, k) float64 at this decoder's temperature. Ordered by the emissions themselves
        (stable: a tie goes to the lower label), so the first is :meth:`best_paths`' argmax even where two
        probabilities round to the same float."""
        order = np.argsort(-emissions, axis=2, kind="stable")[:, :, :k]
        scaled = emissions / np.asarray(self.temperature, dtype=emissions.dtype) if self.temperature != 1.0 \
            else emissions
        # The dtype :meth:`posteriors` computes in, so the first one's probability is the token's confidence.
        return order, np.take_along_axis(softmax(scaled), order, axis=2).astype(np.float64)

    def posteriors(self, emissions: np.ndarray, lengths: np.ndarray, paths: np.ndarray, rows: Sequence[int],
                   starts: Sequence[int], ends: Sequence[int]) -> Posteriors:
        # The argmax of the scaled probabilities is the argmax of the emissions: the paths stand.
        scaled = emissions / np.asarray(self.temperature, dtype=emissions.dtype) if self.temperature != 1.0 \
            else emissions
        confidence = _pick(softmax(scaled), paths).astype(np.float64)
        spans = np.array([confidence[r, s:e].prod() for r, s, e in zip(rows, starts, ends)], dtype=np.float64)
        return Posteriors(confidence=confidence, spans=spans, log_z=np.zeros(len(paths)))


class CRFDecoder:
    """Viterbi and forward-backward in NumPy over float32 tables (plenty for confidences rounded to 6
    digits, at half the memory traffic of float64)."""

    name = "numpy"

    def __init__(self, tables: CRFTables, temperature: float = 1.0):
        self.tables = tables.astype(np.float32)
        self.temperature = float(temperature)
        self._scaled = self.tables if self.temperature == 1.0 else self.tables.scaled(1.0 / self.temperature)

    def with_temperature(self, temperature: float) -> "CRFDecoder":
        return type(self)(self.tables, temperature)

    def best_paths(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return viterbi(emissions, lengths, self.tables)

    def _scale(self, emissions: np.ndarray) -> np.ndarray:
        return emissions / np.asarray(self.temperature, dtype=emissions.dtype) if self.temperature != 1.0 \
            else emissions

    def k_best(self, emissions: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The k most probable paths of each row, (B, k, T) int64, and their log-probabilities (B, k) float64
        (``-inf`` in ranks a row lacks), at this decoder's temperature; in NumPy and float64
        (:func:`~slotfill.decoding.reference.kbest_viterbi`, log Z by forward-backward)."""
        scaled = self._scale(emissions).astype(np.float64)
        tables = self._scaled.astype(np.float64)
        paths, scores = kbest_viterbi(scaled, lengths, tables, k)
        return paths, scores - forward_backward(scaled, lengths, tables).log_z[:, None]

    def posteriors(self, emissions: np.ndarray, lengths: np.ndarray, paths: np.ndarray, rows: Sequence[int],
                   starts: Sequence[int], ends: Sequence[int]) -> Posteriors:
        return path_posteriors(self._scale(emissions), lengths, self._scaled, paths, np.asarray(rows, dtype=np.int64),
                               np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64))


class CompiledCRFDecoder(CRFDecoder):
    """:class:`CRFDecoder` in the compiled kernels: identical paths, posteriors to float rounding. ``k_best`` is
    :class:`CRFDecoder`'s, in NumPy: it runs only when alternatives are asked for."""

    name = "c"

    def __init__(self, tables: CRFTables, temperature: float = 1.0):
        super().__init__(tables, temperature)
        self._kernels = kernels.KernelTables.build(self.tables)
        self._scaled_kernels = (self._kernels if self.temperature == 1.0
                                else kernels.KernelTables.build(self._scaled))

    def best_paths(self, emissions: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        return kernels.viterbi(emissions, lengths, self._kernels)

    def posteriors(self, emissions: np.ndarray, lengths: np.ndarray, paths: np.ndarray, rows: Sequence[int],
                   starts: Sequence[int], ends: Sequence[int]) -> Posteriors:
        return kernels.path_posteriors(self._scale(emissions), lengths, self._scaled_kernels, paths, rows, starts,
                                          ends)


Decoder = SoftmaxDecoder | CRFDecoder


def make_decoder(tables: CRFTables | None) -> Decoder:
    """The decoder for a network with these CRF tables (None: softmax): the compiled kernels when they
    were built and ``SLOTFILL_DECODER`` does not say ``numpy``, else NumPy."""
    if tables is None:
        return SoftmaxDecoder()
    return CompiledCRFDecoder(tables) if kernels.available() else CRFDecoder(tables)
