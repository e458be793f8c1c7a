"""CRF decoding through the compiled kernels of ``slotfill/_kernels.c``, when they were built.

The kernels compute what :func:`slotfill.decoding.reference.viterbi` and :func:`slotfill.decoding.reference.path_posteriors`
do -- identical paths, posteriors equal to float rounding, tests compare them -- in one C loop per
sequence instead of a few NumPy calls per step, and without the interpreter lock. The extension is
optional: ``pip install`` builds it where a C compiler is present and skips it otherwise, and the
predictor then decodes with NumPy. ``SLOTFILL_DECODER=numpy`` forces NumPy (for comparisons);
``available()`` says which one runs.

Shapes: B batch, T padded length, K labels.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np

from slotfill.decoding.reference import DISALLOWED, CRFTables, Posteriors
from slotfill.errors import ConfigError

try:
    from slotfill.decoding import _kernels
except ImportError:  # built without a compiler: NumPy decodes
    _kernels = None

# What SLOTFILL_DECODER may say: the compiled kernels when built ("auto"), always ("c"), or NumPy.
KERNEL_CHOICES = ("auto", "c", "numpy")


def available() -> bool:
    """Whether the compiled kernels are importable and not switched off by ``SLOTFILL_DECODER=numpy``."""
    choice = os.environ.get("SLOTFILL_DECODER", "auto").strip().lower() or "auto"
    if choice not in KERNEL_CHOICES:
        raise ConfigError(f"SLOTFILL_DECODER must be one of {', '.join(KERNEL_CHOICES)}, not {choice!r}")
    if choice == "c" and _kernels is None:
        raise ConfigError("SLOTFILL_DECODER=c, but the compiled decoder (slotfill.decoding._kernels) was not built: "
                          "reinstall slotfill where a C compiler is available")
    return _kernels is not None and choice != "numpy"


def restricted_targets(transitions: np.ndarray, max_sources: int = 4) -> dict[int, tuple[np.ndarray, float]]:
    """The labels that only 1 to ``max_sources`` labels may move into (``I-x`` in IOB2: the scheme's
    constraints, already applied to ``transitions``), each with those sources (ascending) and the highest
    transition into it from any other label (-inf if none): what the kernel's exact pruning looks at."""
    allowed = transitions > DISALLOWED
    counts = allowed.sum(axis=0)
    targets = {}
    for target in np.flatnonzero((counts >= 1) & (counts <= max_sources)):
        allowed_from = np.flatnonzero(allowed[:, target])
        outside = np.delete(transitions[:, target], allowed_from)
        targets[int(target)] = (allowed_from, float(outside.max()) if outside.size else -np.inf)
    return targets
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
    """:func:`slotfill.decoding.reference.viterbi` in float32: emissions (B, T, K), lengths (B,) in 1..T.
    Returns (B, T) int64 label ids, 0 past each length."""
    em, lens = _inputs(emissions, lengths)
    batch, steps, num_tags = em.shape
    paths = np.empty((batch, steps), dtype=np.int64)
    _kernels.viterbi(em, lens, tables.transitions, tables.start, tables.end, tables.kind, tables.sources,
                    tables.bound, paths, batch, steps, num_tags, tables.sources.shape[1])
    return paths


def path_posteriors(emissions: np.ndarray, lengths: np.ndarray, tables: KernelTables, paths: np.ndarray,
                    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Posteriors:
    """:func:`slotfill.decoding.reference.path_posteriors` in the kernel: forward-backward (float32 vectors, float64
    log-scales) on emissions (B, T, K) with lengths (B,), read along ``paths`` (B, T), and the
    probabilities of the segments ``[starts[i], ends[i])`` of rows ``rows[i]`` (rows ascending)."""
    em, lens = _inputs(emissions, lengths)
    batch, steps, num_tags = em.shape
    paths = np.ascontiguousarray(paths, dtype=np.int64)
    if paths.shape != (batch, steps):
        raise ValueError(f"paths have shape {paths.shape}, emissions {em.shape}")
    rows, starts, ends = (np.ascontiguousarray(a, dtype=np.int64) for a in (rows, starts, ends))
    confidence = np.empty((batch, steps))
    spans = np.empty(len(rows))
    log_z = np.empty(batch)
    _kernels.posteriors(em, lens, tables.exp_trans, tables.exp_trans_t, tables.trans_shift, tables.exp_start,
                       tables.start_shift, tables.exp_end, tables.end_shift, tables.transitions, paths, rows, starts,
                       ends, confidence, spans, log_z, batch, steps, num_tags, len(rows))
    return Posteriors(confidence=confidence, spans=spans, log_z=log_z)
