"""CRF decoding through the compiled kernels of ``slotfill/_decode.c``, when they were built.

The kernels compute what :func:`slotfill.decoding.viterbi` and :func:`slotfill.decoding.forward_backward`
(with :func:`~slotfill.decoding.path_segment_probabilities`) do -- identical paths, posteriors equal to
float rounding, tests compare them -- in one C loop per sequence instead of a few NumPy calls per step,
and without the interpreter lock. The extension is optional: ``pip install`` builds it where a C
compiler is present and skips it otherwise, and the predictor then decodes with NumPy.
``SLOTFILL_DECODER=numpy`` forces NumPy (for comparisons); ``available()`` says which one runs.

Shapes: B batch, T padded length, K labels.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .decoding import CRFTables, restricted_targets
from .errors import ConfigError

try:
    from . import _decode
except ImportError:  # built without a compiler: NumPy decodes
    _decode = None

DECODERS = ("auto", "c", "numpy")


def available() -> bool:
    """Whether the compiled kernels are importable and not switched off by ``SLOTFILL_DECODER=numpy``."""
    choice = os.environ.get("SLOTFILL_DECODER", "auto").strip().lower() or "auto"
    if choice not in DECODERS:
        raise ConfigError(f"SLOTFILL_DECODER must be one of {', '.join(DECODERS)}, not {choice!r}")
    if choice == "c" and _decode is None:
        raise ConfigError("SLOTFILL_DECODER=c, but the compiled decoder (slotfill._decode) was not built: "
                         "reinstall slotfill where a C compiler is available")
    return _decode is not None and choice != "numpy"


@dataclass(frozen=True)
class KernelTables:
    """A :class:`CRFTables` laid out for the kernels (computed once per table)."""

    transitions: np.ndarray  # (K, K) float32, from -> to
    start: np.ndarray  # (K,) float32
    end: np.ndarray  # (K,) float32
    kind: np.ndarray  # (K,) int32: how many sources a restricted target has, 0 for an open one
    sources: np.ndarray  # (K, S) int32: a restricted target's sources, ascending
    bound: np.ndarray  # (K,) float32: the highest transition into a target from outside its sources (all, if open)
    exp_trans: np.ndarray  # (K, K) float32 exp(transitions - trans_shift), forbidden moves 0
    exp_trans_t: np.ndarray  # (K, K) its transpose, contiguous
    trans_shift: float
    exp_start: np.ndarray  # (K,) float32 exp(start - start_shift)
    start_shift: float
    exp_end: np.ndarray  # (K,) float32 exp(end - end_shift)
    end_shift: float

    @classmethod
    def build(cls, tables: CRFTables, max_sources: int = 4) -> "KernelTables":
        contiguous = functools.partial(np.ascontiguousarray, dtype=np.float32)
        tables = tables.astype(np.float32)
        transitions = contiguous(tables.transitions)
        num_tags = transitions.shape[0]
        kind = np.zeros(num_tags, dtype=np.int32)
        sources = np.zeros((num_tags, max_sources), dtype=np.int32)
        bound = transitions.max(axis=0)
        for target, (allowed_from, outside) in restricted_targets(transitions, max_sources).items():
            kind[target] = len(allowed_from)
            sources[target, : len(allowed_from)] = allowed_from
            bound[target] = outside
        exp_trans, exp_trans_t, trans_shift, exp_start, start_shift, exp_end, end_shift = tables.exp_scores
        return cls(transitions=transitions, start=contiguous(tables.start), end=contiguous(tables.end), kind=kind,
                   sources=sources, bound=contiguous(bound), exp_trans=contiguous(exp_trans),
                   exp_trans_t=contiguous(exp_trans_t), trans_shift=float(trans_shift), exp_start=contiguous(exp_start),
                   start_shift=float(start_shift), exp_end=contiguous(exp_end), end_shift=float(end_shift))


def _inputs(emissions: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.ascontiguousarray(emissions, dtype=np.float32),
            np.ascontiguousarray(lengths, dtype=np.int64))


def viterbi(emissions: np.ndarray, lengths: np.ndarray, tables: KernelTables) -> np.ndarray:
    """:func:`slotfill.decoding.viterbi` in float32: emissions (B, T, K), lengths (B,) in 1..T.
    Returns (B, T) int64 label ids, 0 past each length."""
    em, lens = _inputs(emissions, lengths)
    batch, steps, num_tags = em.shape
    paths = np.empty((batch, steps), dtype=np.int64)
    _decode.viterbi(em, lens, tables.transitions, tables.start, tables.end, tables.kind, tables.sources,
                    tables.bound, paths, batch, steps, num_tags, tables.sources.shape[1])
    return paths


@dataclass(frozen=True)
class PathPosteriors:
    """Posteriors along decoded paths (see :func:`path_posteriors`), all (B, T) float64 but ``log_z`` (B,)."""

    confidence: np.ndarray  # P(y_t = path_t | x); 0 past each length
    log_alpha: np.ndarray  # log forward sum at the path's label (its emission included)
    log_beta: np.ndarray  # log backward sum at the path's label (the end transition included)
    running: np.ndarray  # path scores (transition + emission) of steps 1..t, summed
    log_z: np.ndarray

    def segments(self, rows: Sequence[int], starts: Sequence[int], ends: Sequence[int]) -> np.ndarray:
        """(N,) P(y[s:e] = path[s:e] | x) of the segments ``[starts[i], ends[i])`` of rows ``rows[i]``."""
        rows, starts, lasts = (np.asarray(a, dtype=np.int64) for a in (rows, starts, ends))
        lasts = lasts - 1
        log_p = (self.log_alpha[rows, starts] + self.running[rows, lasts] - self.running[rows, starts]
                 + self.log_beta[rows, lasts] - self.log_z[rows])
        return np.minimum(1.0, np.exp(log_p))

    def segment(self, row: int, start: int, end: int) -> float:
        """One segment's probability, in Python floats (cheaper than :meth:`segments` for a few)."""
        last = end - 1
        log_p = (float(self.log_alpha[row, start]) + float(self.running[row, last]) - float(self.running[row, start])
                 + float(self.log_beta[row, last]) - float(self.log_z[row]))
        return min(1.0, math.exp(log_p))


def path_posteriors(emissions: np.ndarray, lengths: np.ndarray, tables: KernelTables,
                    paths: np.ndarray) -> PathPosteriors:
    """Forward-backward (float64, rescaled) on emissions (B, T, K) with lengths (B,), read along
    ``paths`` (B, T): each position's marginal and what a segment's probability needs."""
    em, lens = _inputs(emissions, lengths)
    batch, steps, num_tags = em.shape
    paths = np.ascontiguousarray(paths, dtype=np.int64)
    if paths.shape != (batch, steps):
        raise ValueError(f"paths have shape {paths.shape}, emissions {em.shape}")
    out = np.empty((4, batch, steps))
    log_z = np.empty(batch)
    _decode.posteriors(em, lens, tables.exp_trans, tables.exp_trans_t, tables.trans_shift, tables.exp_start,
                       tables.start_shift, tables.exp_end, tables.end_shift, tables.transitions, paths, out[0],
                       out[1], out[2], out[3], log_z, batch, steps, num_tags)
    return PathPosteriors(confidence=out[0], log_alpha=out[1], log_beta=out[2], running=out[3], log_z=log_z)
