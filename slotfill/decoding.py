"""Decoding emissions into labels and confidences, in NumPy, vectorised over the batch.

Inference never needs autograd, and NumPy's per-call overhead is a fraction of
torch's, which dominates for utterances of ~10 tokens. The torch ``CRF`` module
is used for training; these functions reproduce its ``viterbi_decode`` and
``marginals`` (tests compare them).

Shapes: B batch, T padded length, K labels. ``lengths`` (B,) are >= 1. The
functions compute in the dtype of ``emissions`` (float32 when serving, float64 in
tests). Rows are processed longest first, so step ``t`` only touches the prefix
of rows still running: the work is proportional to the real tokens, not B * T.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

# ndarray.sum / .max go through a Python wrapper (numpy/_core/_methods.py) that costs as much as
# the reduction itself on these small arrays; the ufuncs' own reduce does not.
_sum = np.add.reduce
_max = np.maximum.reduce
_all = np.logical_and.reduce


# The score of a forbidden transition; the same value as ``slotfill.models.crf.DISALLOWED``.
DISALLOWED = -1e4


@dataclass(frozen=True)
class CRFTables:
    """Transition scores with the scheme's constraints already applied (forbidden = -1e4)."""

    transitions: np.ndarray  # (K, K) from -> to
    start: np.ndarray  # (K,)
    end: np.ndarray  # (K,)

    @cached_property
    def exp_transitions(self) -> tuple[np.ndarray, float]:
        """float64 ``exp(transitions - shift)`` and its transpose stacked (2, K, K), and the shift;
        computed once per table, as it costs more than decoding a short sentence."""
        shift = float(self.transitions.max())
        exp_trans = np.exp(self.transitions.astype(np.float64) - shift)
        return np.stack([exp_trans, exp_trans.T]), shift

    @cached_property
    def exp_scores(self) -> tuple[np.ndarray, np.ndarray, float, np.ndarray, float, np.ndarray, float]:
        """In the tables' own dtype, each shifted by its largest score: ``exp(transitions)`` (K, K) with
        forbidden moves flushed to 0 and its contiguous transpose, the transition shift, then
        ``exp(start)`` and ``exp(end)`` with their shifts. For the batched forward-backward, which
        would otherwise recompute them on every call."""
        trans_shift = self.transitions.max()
        exp_trans = _flush(np.exp(self.transitions - trans_shift))
        start_shift, end_shift = self.start.max(), self.end.max()
        return (exp_trans, np.ascontiguousarray(exp_trans.T), trans_shift, np.exp(self.start - start_shift),
                start_shift, np.exp(self.end - end_shift), end_shift)

    @cached_property
    def exp_boundaries(self) -> tuple[np.ndarray, float, np.ndarray, float]:
        """float64 ``exp(start - start_shift)``, ``start_shift``, ``exp(end - end_shift)``, ``end_shift``,
        each shift the largest score (computed once per table)."""
        start_shift, end_shift = float(self.start.max()), float(self.end.max())
        return (np.exp(self.start.astype(np.float64) - start_shift), start_shift,
                np.exp(self.end.astype(np.float64) - end_shift), end_shift)

    @cached_property
    def transitions_to_from(self) -> np.ndarray:
        """(1, K_to, K_from) contiguous transposed transitions, for reductions over the last axis."""
        return np.ascontiguousarray(self.transitions.T)[None]

    @cached_property
    def pruning(self) -> "PruningPlan | None":
        """The plan for exact pruned Viterbi steps (None when K is small enough for dense steps)."""
        return PruningPlan.build(self.transitions)

    def scaled(self, factor: float) -> "CRFTables":
        """Every score times ``factor`` (temperature scaling); forbidden moves stay forbidden."""
        dtype = self.transitions.dtype

        def scale(values: np.ndarray) -> np.ndarray:
            return np.where(values <= DISALLOWED, values, values * factor).astype(dtype)

        return CRFTables(scale(self.transitions), scale(self.start), scale(self.end))

    def astype(self, dtype) -> "CRFTables":
        return CRFTables(self.transitions.astype(dtype), self.start.astype(dtype), self.end.astype(dtype))

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray], prefix: str = "crf.") -> "CRFTables":
        """Tables from a CRF's saved tensors (``transitions``, ``start_transitions``, ``end_transitions``,
        ``constraint_mask`` (K+2, K+2) bool with START = K, END = K+1), masked exactly as the torch
        module's ``constrained_scores`` does; a test checks the two agree."""
        transitions = np.asarray(weights[prefix + "transitions"], dtype=np.float64)
        k = transitions.shape[0]
        allowed = np.asarray(weights[prefix + "constraint_mask"], dtype=bool)
        start = weights.get(prefix + "start_transitions")
        end = weights.get(prefix + "end_transitions")
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
    """Best label path per sequence. Returns (B, T) int64, 0 past each length."""
    batch, steps, num_tags = emissions.shape
    lengths = np.asarray(lengths)
    if batch == 1:
        return _viterbi_one(emissions, int(lengths[0]), tables)
    order, running = _longest_first(lengths)
    em = emissions[order]
    plan = tables.pruning
    score = tables.start[None] + em[:, 0]  # (B, K)
    active = len(running)  # the longest length; emissions may be padded further
    backpointers = np.zeros((active, batch, num_tags), dtype=np.int64)  # only [t, :running[t]] is used
    for t in range(1, active):
        n = running[t]
        if plan is not None and n >= _PRUNE_MIN_ROWS:
            score[:n], backpointers[t, :n] = plan.step(score[:n], tables)
        else:
            score[:n], backpointers[t, :n] = _dense_step(score[:n], tables)
        score[:n] += em[:n, t]
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


def _dense_step(score: np.ndarray, tables: CRFTables) -> tuple[np.ndarray, np.ndarray]:
    """One Viterbi step over every (from, to) pair: best score into each label (before its emission)
    and the label it came from, both (n, K)."""
    candidates = score[:, None, :] + tables.transitions_to_from  # (n, K_to, K_from): reduce over the last axis
    best_prev = candidates.argmax(axis=2)  # (n, K_to)
    # Fancy indexing picks the maxima ~30% faster than take_along_axis or a second max pass.
    rows, cols = np.arange(score.shape[0])[:, None], np.arange(score.shape[1])[None, :]
    return candidates[rows, cols, best_prev], best_prev


def restricted_targets(transitions: np.ndarray, max_sources: int = 4) -> dict[int, tuple[np.ndarray, float]]:
    """The labels that only 1 to ``max_sources`` labels may move into (``I-x`` in IOB2), each with those
    sources (ascending) and the highest transition into it from any other label (-inf if none): what an
    exact pruned Viterbi step looks at (:class:`PruningPlan`; the compiled kernels, ``slotfill.fastdecode``)."""
    allowed = transitions > DISALLOWED
    counts = allowed.sum(axis=0)
    targets = {}
    for target in np.flatnonzero((counts >= 1) & (counts <= max_sources)):
        allowed_from = np.flatnonzero(allowed[:, target])
        outside = np.delete(transitions[:, target], allowed_from)
        targets[int(target)] = (allowed_from, float(outside.max()) if outside.size else -np.inf)
    return targets


# Below this many rows a dense step costs less than the pruned step's fixed number of NumPy calls
# (ATIS emissions in batches of 8 and 16: 2, 3 and 4 within noise of each other, 1 and 6 slower).
_PRUNE_MIN_ROWS = 4
_PRUNE_MIN_TAGS = 24


@dataclass(frozen=True)
class PruningPlan:
    """Exact Viterbi steps that look at one or a few candidate sources per target instead of all K.

    The scheme's constraints split the targets in two. A *restricted* target (``I-x`` in IOB2) can
    only be reached from a few labels (``B-x``, ``I-x``): its candidates are those. An *open* target
    (``O``, ``B-x``) can be reached from anywhere: its candidate is the row's best label. Each
    winner is then checked against a bound on every label left out -- for a restricted target, the
    row's best score plus the highest forbidden transition into it; for an open one, the row's
    second-best score plus the highest transition into it -- and a row where any winner does not
    beat its bound strictly is redone densely. A confident tagger's best label leads by more than
    the spread of the transitions (on ATIS test, 99% of rows pass), so the step costs O(K) per row
    instead of O(K^2). A restricted target's candidates are gathered at once, sources in increasing
    label order, and ``argmax`` takes the first of equal scores, so ties resolve to the lowest label
    as the dense step's ``argmax`` does: the paths are identical.
    """

    restricted: np.ndarray  # (R,) target labels
    sources: np.ndarray  # (S, R) their allowed sources, ascending down the columns, padded by repeating the last
    source_scores: np.ndarray  # (S, R) transitions[sources, restricted]
    restricted_bound: np.ndarray  # (R,) the highest transition into each from outside ``sources`` (-inf if none)
    open: np.ndarray  # (O,) target labels
    open_transitions: np.ndarray  # (K, O) transitions[:, open]
    open_bound: np.ndarray  # (O,) the highest transition into each

    @classmethod
    def build(cls, transitions: np.ndarray, max_sources: int = 4) -> "PruningPlan | None":
        num_tags = transitions.shape[0]
        if num_tags < _PRUNE_MIN_TAGS:
            return None
        targets = restricted_targets(transitions, max_sources)
        restricted = np.array(sorted(targets), dtype=np.int64)
        open_ = np.setdiff1d(np.arange(num_tags), restricted)
        width = max((len(allowed_from) for allowed_from, _ in targets.values()), default=1)
        sources = np.empty((width, len(restricted)), dtype=np.int64)
        bound = np.full(len(restricted), -np.inf)
        for column, target in enumerate(restricted):
            allowed_from, bound[column] = targets[int(target)]
            sources[:, column] = np.concatenate([allowed_from, np.repeat(allowed_from[-1:], width - len(allowed_from))])
        dtype = transitions.dtype
        return cls(restricted=restricted, sources=sources, source_scores=transitions[sources, restricted[None, :]],
                   restricted_bound=bound.astype(dtype), open=open_,
                   open_transitions=np.ascontiguousarray(transitions[:, open_]),
                   open_bound=transitions[:, open_].max(axis=0))

    @cached_property
    def _layout(self) -> np.ndarray:
        """(K,) where each label sits in [restricted targets; open targets]: a step builds its results
        in that order and puts them back in label order with one ``take``."""
        order = np.empty(len(self.restricted) + len(self.open), dtype=np.int64)
        order[np.concatenate([self.restricted, self.open])] = np.arange(len(order))
        return order

    def step(self, score: np.ndarray, tables: CRFTables) -> tuple[np.ndarray, np.ndarray]:
        """:func:`_dense_step`'s result for ``score`` (n, K), with the same values and sources.

        ``take`` rather than fancy indexing throughout: on these small arrays it costs half as much."""
        n, num_tags = score.shape
        top = score.argmax(axis=1)  # (n,)
        ranked = np.partition(score, num_tags - 2, axis=1)
        first, second = ranked[:, num_tags - 1], ranked[:, num_tags - 2]  # a tie for the top gives first == second
        values, sources, checks = [], [], []
        if len(self.restricted):
            if len(self.sources) == 2:  # IOB2 and BIOES: I-x (and E-x) come from B-x or I-x
                winner = score.take(self.sources[0], axis=1)
                winner += self.source_scores[0]
                other = score.take(self.sources[1], axis=1)
                other += self.source_scores[1]
                later = other > winner  # strict: the lower label keeps a tie
                np.maximum(winner, other, out=winner)
                came_from = np.where(later, self.sources[1], self.sources[0])
            else:
                candidates = score.take(self.sources, axis=1)  # (n, S, R)
                candidates += self.source_scores
                index = candidates.argmax(axis=1)  # (n, R): the first of equals, i.e. the lowest label
                winner = _max(candidates, axis=1)
                came_from = self.sources.take(index * len(self.restricted) + np.arange(len(self.restricted)))
            values.append(winner)
            sources.append(came_from)
            checks.append(_all(winner > first[:, None] + self.restricted_bound, axis=1))
        if len(self.open):
            winner = self.open_transitions.take(top, axis=0)  # (n, O)
            winner += first[:, None]
            values.append(winner)
            sources.append(np.broadcast_to(top[:, None], winner.shape))
            checks.append(_all(winner > second[:, None] + self.open_bound, axis=1))
        best = np.concatenate(values, axis=1).take(self._layout, axis=1)
        best_prev = np.concatenate(sources, axis=1).take(self._layout, axis=1)
        ok = checks[0] if len(checks) == 1 else checks[0] & checks[1]
        if not ok.all():
            redo = np.flatnonzero(~ok)
            best[redo], best_prev[redo] = _dense_step(score[redo], tables)
        return best, best_prev


def _viterbi_one(emissions: np.ndarray, length: int, tables: CRFTables) -> np.ndarray:
    """:func:`viterbi` for one sequence (the service's common case), in fewer, larger NumPy calls.

    The forward pass keeps only each step's best scores (one add and one max over the (K, K)
    table); the backtrack then recomputes a single column per step instead of storing (T, K)
    backpointers. The arithmetic is the batched version's, term for term, so paths are identical.
    """
    em = emissions[0]
    dtype = np.result_type(em.dtype, tables.transitions.dtype)
    transitions = tables.transitions.astype(dtype, copy=False)  # (K_from, K_to)
    num_tags = transitions.shape[0]
    best = np.empty((length, num_tags), dtype=dtype)  # best[t, j]: best score of a path ending in j at t
    np.add(tables.start, em[0], out=best[0])
    buffer = np.empty((num_tags, num_tags), dtype=dtype)
    for t in range(1, length):
        np.add(transitions, best[t - 1][:, None], out=buffer)
        _max(buffer, axis=0, out=best[t])
        best[t] += em[t]
    path = np.zeros((1, emissions.shape[1]), dtype=np.int64)
    current = int((best[length - 1] + tables.end).argmax())
    path[0, length - 1] = current
    for t in range(length - 1, 0, -1):
        current = int((best[t - 1] + transitions[:, current]).argmax())
        path[0, t - 1] = current
    return path


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

    def log_alpha(self, row: int, t: int, tag: int) -> float:
        return float(np.log(self.alpha[row, t, tag]) + self.log_alpha_scale[row, t])

    def log_beta(self, row: int, t: int, tag: int) -> float:
        return float(np.log(self.beta[row, t, tag]) + self.log_beta_scale[row, t])


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
    if batch == 1:
        return _forward_backward_one(emissions, int(lengths[0]), tables)
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


def _forward_backward_one(emissions: np.ndarray, length: int, tables: CRFTables) -> ForwardBackward:
    """:func:`forward_backward` for one sequence, in float64, both directions in one loop.

    Step ``k`` advances the forward recursion to position ``k`` and the backward one to position
    ``n - 1 - k`` with a single stacked product, ``[x_f; x_b] @ [E; E^T]``, then multiplies in the
    emissions and rescales both rows: four NumPy calls per step instead of eight. The forward row
    holds ``alpha_t``; the backward row holds ``ee_t * beta_t``, so that both updates have the form
    ``x <- (x @ M) * ee`` and the product itself *is* ``beta_t``, stored as it comes out.
    float64 needs no flushing of tiny values (its subnormals start below 1e-308, far beyond any
    real score gap); the log-scales are summed once after the loop.
    """
    steps, num_tags = emissions.shape[1], emissions.shape[2]
    n = length
    em = emissions[0, :n].astype(np.float64)
    stacked, trans_shift = tables.exp_transitions  # (2, K, K): [E; E^T]
    em_shift = _max(em, axis=1)  # (n,)
    exp_em = np.exp(em - em_shift[:, None])  # (n, K)
    exp_start, start_shift, exp_end, end_shift = tables.exp_boundaries

    rows = np.empty((2, 1, num_tags))
    rows[0, 0] = exp_start * exp_em[0]  # alpha_0 (unscaled)
    rows[1, 0] = exp_end * exp_em[n - 1]  # ee_{n-1} * beta_{n-1}
    first = _sum(rows, axis=2, keepdims=True)  # (2, 1, 1)
    rows /= first
    # multipliers[k - 1] = [ee_k; ee_{n-1-k}]: what step k multiplies into the two rows
    multipliers = np.stack([exp_em[1:], exp_em[n - 2::-1] if n > 1 else exp_em[:0]], axis=1)[:, :, None, :]
    products = np.empty((max(n - 1, 0), 2, 1, num_tags))  # products[k - 1] = [alpha_k pre-emission; beta_{n-1-k}]
    sums = np.empty((max(n - 1, 0), 2, 1, 1))
    for k in range(n - 1):
        np.matmul(rows, stacked, out=products[k])
        np.multiply(products[k], multipliers[k], out=rows)
        _sum(rows, axis=2, keepdims=True, out=sums[k])
        rows /= sums[k]

    alpha = np.zeros((1, steps, num_tags))
    beta = np.zeros((1, steps, num_tags))
    alpha[0, 0] = exp_em[0] * exp_start / first[0, 0, 0]
    log_c = np.empty(n)
    log_c[0] = np.log(first[0, 0, 0])
    if n > 1:
        alpha[0, 1:n] = products[:, 0, 0] * exp_em[1:] / sums[:, 0, 0]
        log_c[1:] = np.log(sums[:, 0, 0, 0])
    steps_log = log_c + em_shift + trans_shift
    steps_log[0] += start_shift - trans_shift
    log_a = np.zeros((1, steps))
    log_a[0, :n] = np.cumsum(steps_log)

    # beta_{n-1} = exp_end (scale end_shift); beta_{n-1-k} = products[k - 1, 1], whose scale adds, per
    # step back, the normaliser of the row it was computed from, that row's emission shift and the
    # transition shift.
    beta[0, n - 1] = exp_end
    log_b = np.zeros((1, steps))
    log_b[0, n - 1] = end_shift
    if n > 1:
        beta[0, n - 2::-1] = products[:, 1, 0]
        row_norms = np.concatenate([[first[1, 0, 0]], sums[:-1, 1, 0, 0]])  # normaliser of the row used at step k
        back = np.log(row_norms) + em_shift[n - 1:0:-1] + trans_shift  # (n - 1,), step k = 1 .. n - 1
        log_b[0, n - 2::-1] = end_shift + np.cumsum(back)

    log_z = np.log(_sum(alpha[0, n - 1] * exp_end)) + log_a[0, n - 1] + end_shift
    return ForwardBackward(alpha=alpha, beta=beta, log_alpha_scale=log_a, log_beta_scale=log_b,
                           log_z=np.array([log_z]))


def path_segment_probability(fb: ForwardBackward, emissions: np.ndarray, tables: CRFTables, row: int,
                             path: np.ndarray, start: int, end: int) -> float:
    """P(y[start:end] == path[start:end] | x) for sequence ``row`` (end exclusive)."""
    log_p = fb.log_alpha(row, start, int(path[start]))
    for t in range(start + 1, end):
        log_p += float(tables.transitions[path[t - 1], path[t]] + emissions[row, t, path[t]])
    log_p += fb.log_beta(row, end - 1, int(path[end - 1])) - float(fb.log_z[row])
    return float(min(1.0, np.exp(log_p)))


def path_segment_probabilities(fb: ForwardBackward, emissions: np.ndarray, tables: CRFTables, paths: np.ndarray,
                               rows: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`path_segment_probability` for many segments at once, in a fixed number of NumPy calls.

    ``paths`` (B, T) are the decoded label paths; ``rows``, ``starts``, ``ends`` (N,) name the segments
    (end exclusive). Returns (N,) float64. The scores along each path are summed once per batch as a
    running total, so a segment's inner score is the difference of two entries of it.
    """
    rows, starts, ends = (np.asarray(a, dtype=np.int64) for a in (rows, starts, ends))
    batch, steps = paths.shape
    if steps > 1:
        row_index = np.arange(batch)[:, None]
        step_scores = (tables.transitions[paths[:, :-1], paths[:, 1:]]
                       + emissions[row_index, np.arange(1, steps)[None, :], paths[:, 1:]])  # (B, T - 1)
        running = np.zeros((batch, steps))
        # running[b, t]: the scores of steps 1 .. t along row b's path
        np.cumsum(step_scores, axis=1, dtype=np.float64, out=running[:, 1:])
        inner = running[rows, ends - 1] - running[rows, starts]
    else:
        inner = np.zeros(len(rows))
    lasts = ends - 1
    with np.errstate(divide="ignore"):  # a flushed (zero) probability is log 0 = -inf, i.e. probability 0
        log_p = (np.log(fb.alpha[rows, starts, paths[rows, starts]]) + fb.log_alpha_scale[rows, starts]
                 + inner + np.log(fb.beta[rows, lasts, paths[rows, lasts]]) + fb.log_beta_scale[rows, lasts]
                 - fb.log_z[rows])
    return np.minimum(1.0, np.exp(log_p))
