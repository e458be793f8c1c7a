"""Decoding emissions into labels and confidences, in NumPy, vectorised over the batch.

Inference never needs autograd, and NumPy's per-call overhead is a fraction of
torch's, which dominates for utterances of ~10 tokens. The torch ``CRF`` module
is used for training; these functions reproduce its ``viterbi_decode`` and
``marginals`` exactly (tests compare them).

Shapes: B batch, T padded length, K labels. ``lengths`` (B,) are >= 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CRFTables:
    """Transition scores with the scheme's constraints already applied (forbidden = -1e4)."""

    transitions: np.ndarray  # (K, K) from -> to
    start: np.ndarray  # (K,)
    end: np.ndarray  # (K,)

    @property
    def exp_transitions(self) -> np.ndarray:
        return np.exp(self.transitions - self.transitions.max())


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


def viterbi(emissions: np.ndarray, lengths: np.ndarray, tables: CRFTables) -> np.ndarray:
    """Best label path per sequence. Returns (B, T) int64, 0 past each length."""
    batch, steps, num_tags = emissions.shape
    trans = tables.transitions[None]  # (1, K, K)
    score = tables.start[None] + emissions[:, 0]  # (B, K)
    backpointers = np.empty((steps, batch, num_tags), dtype=np.int64)
    identity = np.broadcast_to(np.arange(num_tags), (batch, num_tags))
    for t in range(1, steps):
        candidates = score[:, :, None] + trans  # (B, K_from, K_to)
        best_prev = candidates.argmax(axis=1)  # (B, K)
        new_score = np.take_along_axis(candidates, best_prev[:, None, :], axis=1)[:, 0] + emissions[:, t]
        active = (t < lengths)[:, None]
        # Finished sequences keep their score and point to themselves, so one
        # backtrack from T-1 works for every length.
        score = np.where(active, new_score, score)
        backpointers[t] = np.where(active, best_prev, identity)
    score = score + tables.end[None]
    paths = np.zeros((batch, steps), dtype=np.int64)
    best = score.argmax(axis=1)
    paths[:, steps - 1] = best
    rows = np.arange(batch)
    for t in range(steps - 1, 0, -1):
        best = backpointers[t, rows, best]
        paths[:, t - 1] = best
    paths[np.arange(steps)[None, :] >= lengths[:, None]] = 0
    return paths


@dataclass(frozen=True)
class ForwardBackward:
    """Scaled forward-backward quantities; see :func:`forward_backward`."""

    log_alpha: np.ndarray  # (B, T, K) log of forward sums (emission at t included)
    log_beta: np.ndarray  # (B, T, K) log of backward sums (end transition included)
    log_z: np.ndarray  # (B,)

    @property
    def marginals(self) -> np.ndarray:
        """(B, T, K) posterior of each label at each position (garbage past each length)."""
        return np.exp(self.log_alpha + self.log_beta - self.log_z[:, None, None])


def forward_backward(emissions: np.ndarray, lengths: np.ndarray, tables: CRFTables) -> ForwardBackward:
    """Forward-backward in probability space with per-step rescaling (matrix products, no logsumexp)."""
    batch, steps, num_tags = emissions.shape
    trans_shift = tables.transitions.max()
    exp_trans = np.exp(tables.transitions - trans_shift)  # (K, K)
    em_shift = emissions.max(axis=2, keepdims=True)  # (B, T, 1)
    exp_em = np.exp(emissions - em_shift)  # (B, T, K)

    log_alpha = np.empty((batch, steps, num_tags))
    start = tables.start - tables.start.max()
    alpha = np.exp(start)[None] * exp_em[:, 0]
    scale = alpha.sum(axis=1, keepdims=True)
    alpha = alpha / scale
    log_scale = np.log(scale) + em_shift[:, 0] + tables.start.max()  # (B, 1) cumulative
    log_alpha[:, 0] = np.log(alpha + 1e-300) + log_scale
    for t in range(1, steps):
        alpha = (alpha @ exp_trans) * exp_em[:, t]
        scale = alpha.sum(axis=1, keepdims=True)
        alpha = alpha / scale
        log_scale = log_scale + np.log(scale) + em_shift[:, t] + trans_shift
        log_alpha[:, t] = np.log(alpha + 1e-300) + log_scale

    log_beta = np.zeros((batch, steps, num_tags))
    end_shift = tables.end.max()
    beta_end = np.exp(tables.end - end_shift)[None].repeat(batch, axis=0)  # (B, K)
    beta = beta_end.copy()
    log_scale_b = np.full((batch, 1), end_shift)
    last = (lengths - 1)[:, None]
    for t in range(steps - 1, -1, -1):
        if t < steps - 1:
            stepped = (exp_trans @ (exp_em[:, t + 1] * beta).T).T  # (B, K)
            norm = stepped.sum(axis=1, keepdims=True)
            stepped = stepped / norm
            stepped_scale = log_scale_b + np.log(norm) + em_shift[:, t + 1] + trans_shift
            inside = t < last
            beta = np.where(inside, stepped, beta_end)
            log_scale_b = np.where(inside, stepped_scale, end_shift)
        log_beta[:, t] = np.log(beta + 1e-300) + log_scale_b
    rows = np.arange(batch)
    final = log_alpha[rows, lengths - 1] + tables.end[None]
    top = final.max(axis=1)
    log_z = top + np.log(np.exp(final - top[:, None]).sum(axis=1))
    return ForwardBackward(log_alpha=log_alpha, log_beta=log_beta, log_z=log_z)


def path_segment_probability(fb: ForwardBackward, emissions: np.ndarray, tables: CRFTables, row: int,
                             path: np.ndarray, start: int, end: int) -> float:
    """P(y[start:end] == path[start:end] | x) for sequence ``row`` (end exclusive)."""
    log_p = fb.log_alpha[row, start, path[start]]
    for t in range(start + 1, end):
        log_p += tables.transitions[path[t - 1], path[t]] + emissions[row, t, path[t]]
    log_p += fb.log_beta[row, end - 1, path[end - 1]] - fb.log_z[row]
    return float(min(1.0, np.exp(log_p)))
