"""CRF decoding in NumPy: the reference the compiled kernels are tested against, and their fallback.

Inference never needs autograd, so decoding runs outside torch. The torch ``CRF`` module is used
for training; these functions reproduce its ``viterbi_decode`` and ``marginals`` (tests compare
them, and compare both with brute-force enumeration). ``slotfill.decoding.kernels`` computes the same
results in C; it is what serves when it was built.

Shapes: B batch, T padded length, K labels. ``lengths`` (B,) are >= 1. The functions compute in
the dtype of ``emissions`` (float32 when serving, float64 in tests). Rows are processed longest
first, so step ``t`` only touches the prefix of rows still running.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from slotfill.schemes import allowed_transitions

# ndarray.sum / .max go through a Python wrapper (numpy/_core/_methods.py) that costs as much as
# the reduction itself on these small arrays; the ufuncs' own reduce does not.
_sum = np.add.reduce
_max = np.maximum.reduce

# The score of a forbidden transition. Finite, unlike -inf, so that a fully forbidden logsumexp
# row gives no NaN gradient in training; exp(-1e4) is already 0 in float32.
DISALLOWED = -1e4


def constraint_mask(scheme: str, labels: Mapping[int, str] | Sequence[str]) -> np.ndarray:
    """(K+2, K+2) bool, True where the scheme's grammar allows the move (START = K, END = K+1)."""
    k = len(labels)
    mask = np.zeros((k + 2, k + 2), dtype=bool)
    for i, j in allowed_transitions(scheme, labels):
        mask[i, j] = True
    return mask


@dataclass(frozen=True)
class CRFTables:
    """Transition scores with the scheme's constraints already applied (forbidden = -1e4)."""

    transitions: np.ndarray  # (K, K) from -> to
    start: np.ndarray  # (K,)
    end: np.ndarray  # (K,)

    @cached_property
    def exp_scores(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float, np.ndarray, float]:
        """In the tables' own dtype, each shifted by its largest score: ``exp(transitions)`` (K, K) with
        forbidden moves flushed to 0 and its contiguous transpose, the transition shift, then
        ``exp(start)`` and ``exp(end)`` with their shifts; computed once per table."""
        trans_shift = self.transitions.max()
        exp_trans = _flush(np.exp(self.transitions - trans_shift))
        start_shift, end_shift = self.start.max(), self.end.max()
        return (exp_trans, np.ascontiguousarray(exp_trans.T), trans_shift, np.exp(self.start - start_shift),
                start_shift, np.exp(self.end - end_shift), end_shift)

    @cached_property
    def transitions_to_from(self) -> np.ndarray:
        """(1, K_to, K_from) contiguous transposed transitions, for reductions over the last axis."""
        return np.ascontiguousarray(self.transitions.T)[None]

    def scaled(self, factor: float) -> "CRFTables":
        """Every score times ``factor`` (temperature scaling); forbidden moves stay forbidden."""
        dtype = self.transitions.dtype

        def scale(values: np.ndarray) -> np.ndarray:
            return np.where(values <= DISALLOWED, values, values * factor).astype(dtype)

        return CRFTables(scale(self.transitions), scale(self.start), scale(self.end))

    def astype(self, dtype) -> "CRFTables":
        return CRFTables(self.transitions.astype(dtype), self.start.astype(dtype), self.end.astype(dtype))

    @classmethod
    def build(cls, transitions: np.ndarray, start: np.ndarray | None, end: np.ndarray | None,
              allowed: np.ndarray) -> "CRFTables":
        """float64 tables from a CRF's learned scores and its :func:`constraint_mask`, masked exactly as the
        torch module's ``constrained_scores`` does (a test checks the two agree). A CRF without learned
        start/end scores passes None for them."""
        transitions = np.asarray(transitions, dtype=np.float64)
        k = transitions.shape[0]
        start = np.zeros(k) if start is None else np.asarray(start, dtype=np.float64)
        end = np.zeros(k) if end is None else np.asarray(end, dtype=np.float64)
        return cls(np.where(allowed[:k, :k], transitions, DISALLOWED), np.where(allowed[k, :k], start, DISALLOWED),
                   np.where(allowed[:k, k + 1], end, DISALLOWED))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = x - _max(x, axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= _sum(shifted, axis=axis, keepdims=True)
    return shifted


def _longest_first(lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by decreasing length, and for each step t the number of rows with length > t."""
    order = np.argsort(-lengths, kind="stable")
    steps = int(lengths.max())
    running = _sum(lengths[None, :] > np.arange(steps)[:, None], axis=1)  # (T,)
    return order, running


def viterbi(emissions: np.ndarray, lengths: np.ndarray, tables: CRFTables) -> np.ndarray:
    """Best label path per sequence. Returns (B, T) int64, 0 past each length.

    Each step looks at every (from, to) pair; ``argmax`` takes the first of equal scores, so ties go
    to the lowest label, as in the torch module and the compiled kernel."""
    batch, steps, num_tags = emissions.shape
    lengths = np.asarray(lengths)
    order, running = _longest_first(lengths)
    em = emissions[order]
    score = tables.start[None] + em[:, 0]  # (B, K)
    active = len(running)  # the longest length; emissions may be padded further
    backpointers = np.zeros((active, batch, num_tags), dtype=np.int64)  # only [t, :running[t]] is used
    to_from = tables.transitions_to_from
    for t in range(1, active):
        n = running[t]
        candidates = score[:n, None, :] + to_from  # (n, K_to, K_from)
        best_prev = candidates.argmax(axis=2)  # (n, K_to)
        backpointers[t, :n] = best_prev
        score[:n] = np.take_along_axis(candidates, best_prev[:, :, None], axis=2)[:, :, 0] + em[:n, t]
    final = (score + tables.end[None]).argmax(axis=1)  # (B,) best last label per row
    paths = np.zeros((batch, steps), dtype=np.int64)
    current = np.zeros(batch, dtype=np.int64)
    for t in range(active - 1, -1, -1):
        n = running[t]  # rows still real at t
        m = running[t + 1] if t + 1 < active else 0  # rows that go on after t
        current[m:n] = final[m:n]  # rows ending at t start their backtrack here
        paths[:n, t] = current[:n]
        if t > 0:
            current[:n] = backpointers[t, np.arange(n), current[:n]]
    out = np.zeros_like(paths)
    out[order] = paths
    return out


def kbest_viterbi(emissions: np.ndarray, lengths: np.ndarray, tables: CRFTables,
                  k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best label paths of each sequence under the CRF, best first, computed in float64.

    ``emissions`` (B, T, K), ``lengths`` (B,) >= 1, ``k`` >= 1. Returns ``paths`` (B, k, T) int64 (0 past each
    length) and ``scores`` (B, k) float64: each path's score (start + emissions + transitions + end; its
    probability is ``exp(score - log Z)`` with :func:`forward_backward`'s ``log_z``), descending. A move the
    scheme forbids (a table entry at :data:`DISALLOWED`) is never taken: a sequence with fewer than k allowed
    paths has score ``-inf`` (and path 0) in the ranks it lacks.

    Each step keeps, for every label, the k best prefixes ending in it, (K, k) scores with back-pointers into
    the previous step's (K * k) prefixes; ties go to the lower (label, rank), so rank 0 is :func:`viterbi`'s
    path except where two paths score exactly the same (an exact tie for a previous label's k-th place may
    also keep the higher label: the scores kept are the same)."""
    def allowed(values: np.ndarray) -> np.ndarray:
        return np.where(values <= DISALLOWED, -np.inf, values.astype(np.float64))

    transitions, start, end = allowed(tables.transitions), allowed(tables.start), allowed(tables.end)
    batch, steps, num_tags = emissions.shape
    paths = np.zeros((batch, k, steps), dtype=np.int64)
    scores = np.full((batch, k), -np.inf)
    to_labels, ranks = np.arange(num_tags)[:, None], np.arange(k)
    for b, n in enumerate(np.asarray(lengths).tolist()):
        em = emissions[b, :n].astype(np.float64)
        score = np.full((num_tags, k), -np.inf)  # score[j, r]: the r-th best prefix ending in label j
        score[:, 0] = start + em[0]
        back = np.zeros((n, num_tags, k), dtype=np.int64)  # flat index i * k + r into the previous step's
        for t in range(1, n):
            # The k best prefixes into label j come from at most k previous labels: those whose best prefix
            # ranks in the top k into j (a label whose best is beaten k times has nothing better to give).
            # Choosing them first leaves (K, k * k) candidates to sort instead of (K, K * k).
            if k < num_tags:
                sources = np.sort(np.argpartition(-(score[:, 0, None] + transitions).T, k - 1, axis=1)[:, :k],
                                  axis=1)  # (K_to, k) previous labels, ascending
            else:
                sources = np.broadcast_to(np.arange(num_tags), (num_tags, num_tags))
            candidates = (score[sources] + transitions[sources, to_labels][..., None]).reshape(num_tags, -1)
            flat = (sources[..., None] * k + ranks).reshape(num_tags, -1)  # (label, rank) into the previous step
            order = np.argsort(-candidates, axis=1, kind="stable")[:, :k]  # (K_to, k)
            back[t] = np.take_along_axis(flat, order, axis=1)
            score = np.take_along_axis(candidates, order, axis=1) + em[t][:, None]
        final = (score + end[:, None]).reshape(-1)  # flat j * k + r
        for rank, flat in enumerate(np.argsort(-final, kind="stable")[:k].tolist()):
            if final[flat] == -np.inf:
                break
            scores[b, rank] = final[flat]
            label, r = divmod(flat, k)
            for t in range(n - 1, -1, -1):
                paths[b, rank, t] = label
                if t:
                    label, r = divmod(int(back[t, label, r]), k)
    return paths, scores


@dataclass(frozen=True)
class ForwardBackward:
    """Rescaled forward-backward quantities (see :func:`forward_backward`).

    ``alpha[b, t] * exp(log_alpha_scale[b, t])`` is the forward sum (emission at t included),
    ``beta[b, t] * exp(log_beta_scale[b, t])`` the backward sum (end transition included).
    """

    alpha: np.ndarray  # (B, T, K), each row sums to 1 at real steps
    beta: np.ndarray  # (B, T, K)
    log_alpha_scale: np.ndarray  # (B, T)
    log_beta_scale: np.ndarray  # (B, T)
    log_z: np.ndarray  # (B,)

    @property
    def marginals(self) -> np.ndarray:
        """(B, T, K) posterior of each label at each position (0 past each length)."""
        product = self.alpha * self.beta
        total = _sum(product, axis=2, keepdims=True)
        return np.divide(product, total, out=np.zeros_like(product), where=total > 0)


# Probabilities below this (relative to the step's largest) are set to 0. Without it, confident
# models drive float32 values into the subnormal range, where each multiply costs ~100x more.
_FLUSH = 1e-30


def _flush(x: np.ndarray) -> np.ndarray:
    x[x < _FLUSH] = 0.0
    return x


def forward_backward(emissions: np.ndarray, lengths: np.ndarray, tables: CRFTables) -> ForwardBackward:
    """Forward-backward in probability space with per-step rescaling: matrix products, no logsumexp.

    The recursions run time-major, (T, B, K), so that each step reads and writes contiguous rows in
    place; the per-step normalisers are turned into log-scales once, after the loops.
    """
    batch, steps, num_tags = emissions.shape
    dtype = emissions.dtype
    lengths = np.asarray(lengths)
    tables = tables.astype(dtype) if tables.transitions.dtype != dtype else tables
    order, running = _longest_first(lengths)
    active = len(running)  # the longest length; emissions may be padded further
    em = emissions[order, :active].transpose(1, 0, 2)  # (A, B, K) view, rows longest first
    exp_trans, exp_trans_t, trans_shift, exp_start, start_shift, exp_end, end_shift = tables.exp_scores
    em_shift = _max(em, axis=2)  # (A, B)
    exp_em = _flush(np.exp(em - em_shift[:, :, None]))  # (A, B, K)

    alpha = np.zeros((steps, batch, num_tags), dtype=dtype)  # time-major; zero past each row's length
    scales = np.ones((active, batch), dtype=dtype)
    np.multiply(exp_start, exp_em[0], out=alpha[0])
    _sum(alpha[0], axis=1, out=scales[0])
    alpha[0] /= scales[0][:, None]
    for t in range(1, active):
        n = running[t]
        a = alpha[t, :n]
        np.matmul(alpha[t - 1, :n], exp_trans, out=a)
        a *= exp_em[t, :n]
        s = scales[t, :n]
        _sum(a, axis=1, out=s)
        a /= s[:, None]
        a[a < _FLUSH] = 0.0

    last = lengths[order] - 1
    rows = np.arange(batch)
    beta = np.zeros((steps, batch, num_tags), dtype=dtype)
    beta[last, rows] = exp_end
    norms = np.ones((active, batch), dtype=dtype)
    buffer = np.empty((batch, num_tags), dtype=dtype)
    for t in range(active - 2, -1, -1):
        n = running[t + 1]  # rows that go on past t
        x = buffer[:n]
        np.multiply(exp_em[t + 1, :n], beta[t + 1, :n], out=x)
        b = beta[t, :n]
        np.matmul(x, exp_trans_t, out=b)
        s = norms[t, :n]
        _sum(b, axis=1, out=s)
        b /= s[:, None]
        b[b < _FLUSH] = 0.0

    # log_a[t] adds up the scales of steps 0..t; log_b[t] those of the steps from the row's last position
    # back to t. Positions past a row's length stay 0, as alpha and beta do there.
    position = np.arange(active)[:, None]
    em_shift64 = em_shift.astype(np.float64)
    log_a = np.zeros((steps, batch))
    increments = np.log(scales, dtype=np.float64) + em_shift64
    increments[1:] += trans_shift
    increments[0] += start_shift
    np.cumsum(increments, axis=0, out=log_a[:active])
    log_a[:active][position > last] = 0.0
    increments = np.log(norms, dtype=np.float64)
    increments[:-1] += em_shift64[1:] + trans_shift
    increments[position >= last] = 0.0  # only steps t < last move a row's beta back
    log_b = np.zeros((steps, batch))
    log_b[:active] = np.cumsum(increments[::-1], axis=0)[::-1] + end_shift
    log_b[:active][position > last] = 0.0

    final = alpha[last, rows] * exp_end
    log_z = np.log(_sum(final, axis=1)) + log_a[last, rows] + end_shift
    inverse = np.empty_like(order)
    inverse[order] = rows
    return ForwardBackward(alpha=alpha[:, inverse].transpose(1, 0, 2), beta=beta[:, inverse].transpose(1, 0, 2),
                           log_alpha_scale=log_a[:, inverse].T, log_beta_scale=log_b[:, inverse].T,
                           log_z=log_z[inverse])


@dataclass(frozen=True)
class Posteriors:
    """What the model believes of a decoded path: each position's marginal probability of its label
    (``confidence``, (B, T) float64, 0 past each length), the probability of each asked-for segment of
    the path (``spans``, (N,) float64) and log Z ((B,))."""

    confidence: np.ndarray
    spans: np.ndarray
    log_z: np.ndarray


def path_posteriors(emissions: np.ndarray, lengths: np.ndarray, tables: CRFTables, paths: np.ndarray,
                    rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> Posteriors:
    """Posteriors along ``paths`` (B, T) and of the segments ``[starts[i], ends[i])`` of rows ``rows[i]``.

    A segment's probability is P(y[s:e] == path[s:e] | x) = alpha[s] * (the path's scores from s to
    e - 1) * beta[e - 1] / Z, read at the path's labels."""
    fb = forward_backward(emissions, lengths, tables)
    batch, steps = paths.shape
    row_index, step_index = np.arange(batch)[:, None], np.arange(steps)[None, :]
    confidence = fb.marginals[row_index, step_index, paths].astype(np.float64)
    rows, starts, lasts = (np.asarray(a, dtype=np.int64) for a in (rows, starts, ends))
    lasts = lasts - 1
    running = np.zeros((batch, steps))  # running[b, t]: the path's scores of steps 1 .. t
    if steps > 1:
        step_scores = (tables.transitions[paths[:, :-1], paths[:, 1:]]
                       + emissions[row_index, step_index[:, 1:], paths[:, 1:]])  # (B, T - 1)
        np.cumsum(step_scores, axis=1, dtype=np.float64, out=running[:, 1:])
    with np.errstate(divide="ignore"):  # a flushed (zero) probability is log 0 = -inf, i.e. probability 0
        log_p = (np.log(fb.alpha[rows, starts, paths[rows, starts]]) + fb.log_alpha_scale[rows, starts]
                 + running[rows, lasts] - running[rows, starts]
                 + np.log(fb.beta[rows, lasts, paths[rows, lasts]]) + fb.log_beta_scale[rows, lasts]
                 - fb.log_z[rows])
    return Posteriors(confidence=confidence, spans=np.minimum(1.0, np.exp(log_p)), log_z=fb.log_z)
