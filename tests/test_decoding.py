"""NumPy decoding reproduces the torch CRF exactly, and span probabilities are exact."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from slotfill.decoding import (
    forward_backward,
    path_segment_probabilities,
    path_segment_probability,
    softmax,
    viterbi,
)
from slotfill.models.crf import CRF, allowed_transitions
from slotfill.engines import crf_tables

LABELS = ["O", "B-a", "I-a", "B-b", "I-b"]


def make_crf(seed: int, constrained: bool) -> CRF:
    torch.manual_seed(seed)
    crf = CRF(len(LABELS), allowed_transitions("IOB2", LABELS) if constrained else None)
    with torch.no_grad():
        crf.transitions.normal_(0, 1.5)
    return crf.double()


def random_emissions(seed: int, lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    emissions = rng.normal(0, 2, (len(lengths), max(lengths), len(LABELS)))
    return emissions, np.array(lengths)


@pytest.mark.parametrize("constrained", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_numpy_viterbi_and_marginals_match_torch_crf(seed, constrained):
    crf = make_crf(seed, constrained)
    emissions, lengths = random_emissions(seed, [5, 1, 3, 4])
    mask = torch.arange(5)[None, :] < torch.from_numpy(lengths)[:, None]
    torch_paths, _ = crf.viterbi_decode(torch.from_numpy(emissions), mask)
    tables = crf_tables(crf)
    paths = viterbi(emissions, lengths, tables)
    assert np.array_equal(paths, torch_paths.numpy())
    fb = forward_backward(emissions, lengths, tables)
    expected = crf.marginals(torch.from_numpy(emissions), mask).detach().numpy()
    got = np.where(mask.numpy()[:, :, None], fb.marginals, 0.0)
    np.testing.assert_allclose(got, expected, atol=1e-9)
    np.testing.assert_allclose(fb.log_z, crf.log_partition(torch.from_numpy(emissions), mask).detach().numpy(),
                               rtol=1e-10)


def brute_force_segment_probability(tables, emissions, path, start, end):
    n, k = emissions.shape
    total, hit = [], []
    for candidate in itertools.product(range(k), repeat=n):
        score = tables.start[candidate[0]] + tables.end[candidate[-1]]
        score += sum(emissions[t, candidate[t]] for t in range(n))
        score += sum(tables.transitions[candidate[t - 1], candidate[t]] for t in range(1, n))
        total.append(score)
        if tuple(candidate[start:end]) == tuple(path[start:end]):
            hit.append(score)
    total, hit = np.array(total), np.array(hit)
    return np.exp(np.logaddexp.reduce(hit) - np.logaddexp.reduce(total))


@pytest.mark.parametrize("seed", range(3))
def test_span_probability_equals_brute_force(seed):
    crf = make_crf(seed, constrained=True)
    emissions, lengths = random_emissions(seed + 10, [4])
    tables = crf_tables(crf)
    path = viterbi(emissions, lengths, tables)[0]
    fb = forward_backward(emissions, lengths, tables)
    for start, end in [(0, 1), (1, 3), (0, 4), (3, 4)]:
        expected = brute_force_segment_probability(tables, emissions[0], path, start, end)
        assert path_segment_probability(fb, emissions, tables, 0, path, start, end) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_span_probabilities_of_a_batch_at_once_equal_one_by_one(dtype):
    """The vectorised form gives every segment of a batch (any rows, starts, ends, one-token and whole
    sequences, rows of different lengths) the value of the one-segment form."""
    tables = crf_tables(make_crf(2, constrained=True)).astype(dtype)
    emissions, lengths = random_emissions(7, [6, 1, 4, 6, 2])
    emissions = emissions.astype(dtype)
    paths = viterbi(emissions, lengths, tables)
    fb = forward_backward(emissions, lengths, tables)
    segments = [(row, start, end) for row, n in enumerate(lengths)
                for start in range(n) for end in range(start + 1, n + 1)]
    rows, starts, ends = (np.array(column) for column in zip(*segments))
    got = path_segment_probabilities(fb, emissions, tables, paths, rows, starts, ends)
    expected = [path_segment_probability(fb, emissions, tables, r, paths[r], s, e) for r, s, e in segments]
    np.testing.assert_allclose(got, expected, rtol=1e-9 if dtype == np.float64 else 1e-5, atol=0)
    assert np.all((got > 0) & (got <= 1))


def test_constrained_viterbi_never_emits_forbidden_transition():
    crf = make_crf(0, constrained=True)
    # Emissions that scream "I-b" everywhere: the decoder must still start with a B-b.
    emissions = np.full((1, 6, len(LABELS)), -5.0)
    emissions[0, :, 4] = 10.0
    path = viterbi(emissions, np.array([6]), crf_tables(crf))[0]
    labels = [LABELS[i] for i in path]
    assert labels[0] != "I-b"
    for prev, cur in zip(labels, labels[1:]):
        if cur.startswith("I-"):
            assert prev[2:] == cur[2:] and prev != "O"


def test_softmax_rows_sum_to_one_and_are_stable():
    x = np.array([[1000.0, 1001.0, 999.0], [-1000.0, -1000.0, -1000.0]])
    p = softmax(x.copy())
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert np.isfinite(p).all()


def test_predictor_span_fast_path_matches_the_schemes_module(sample_model_dir):
    """The IOB2 fast path in Predictor gives what repair() + spans() give, on arbitrary label ids."""
    from slotfill.predictor import Predictor
    from slotfill.schemes import repair, spans

    predictor = Predictor.load(sample_model_dir)
    rng = np.random.default_rng(0)
    for _ in range(500):
        ids = rng.integers(0, len(predictor.labels), size=rng.integers(1, 9)).tolist()
        expected = repair([predictor.labels[i] for i in ids], "IOB2")
        assert predictor._labels_and_spans(ids) == (expected, spans(expected, "IOB2"))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(6))
def test_single_sequence_path_matches_the_batched_path(seed, dtype):
    """One sequence takes a specialised code path; it must agree with the batched one."""
    crf = make_crf(seed, constrained=seed % 2 == 0)
    tables = crf_tables(crf).astype(dtype)
    rng = np.random.default_rng(seed)
    for length in (1, 2, 7, 23):
        steps = length + seed % 3  # also a single row padded past its length
        alone = (rng.normal(0, 4, (1, steps, len(LABELS)))).astype(dtype)
        other = rng.normal(0, 4, (1, steps, len(LABELS))).astype(dtype)
        batch = np.concatenate([alone, other])  # the batched path, with a second row
        lengths = np.array([length, steps])  # the batch is as long as its longest row
        single_path = viterbi(alone, lengths[:1], tables)
        assert np.array_equal(single_path[0], viterbi(batch, lengths, tables)[0])
        assert not single_path[0, length:].any()
        single, batched = forward_backward(alone, lengths[:1], tables), forward_backward(batch, lengths, tables)
        tolerance = 1e-9 if dtype == np.float64 else 2e-5
        np.testing.assert_allclose(single.marginals[0, :length], batched.marginals[0, :length], atol=tolerance)
        np.testing.assert_allclose(single.log_z[0], batched.log_z[0], rtol=1e-6 if dtype == np.float32 else 1e-10)
        path = single_path[0]
        for start, end in [(0, length), (length - 1, length), (0, 1)]:
            assert path_segment_probability(single, alone, tables, 0, path, start, end) == pytest.approx(
                path_segment_probability(batched, batch, tables, 0, path, start, end), abs=tolerance)


def many_labels(slots: int = 30) -> list[str]:
    """An ATIS-sized IOB2 label set; every third slot has no I- tag (single-token slots), as in ATIS."""
    labels = ["O"]
    for i in range(slots):
        labels += [f"B-s{i}"] if i % 3 == 2 else [f"B-s{i}", f"I-s{i}"]
    return labels


@pytest.mark.parametrize("seed", range(4))
def test_pruned_viterbi_steps_give_the_dense_paths(seed, monkeypatch):
    """With many labels, batched Viterbi steps look at a few candidate sources per target and redo a
    row densely only when a bound cannot prove the winner; the paths must be the dense ones exactly,
    for peaked (confident) and flat (ambiguous, tie-prone) emissions alike, and must agree with torch."""
    import slotfill.decoding as decoding

    labels = many_labels()
    torch.manual_seed(seed)
    crf = CRF(len(labels), allowed_transitions("IOB2", labels))
    with torch.no_grad():
        crf.transitions.normal_(0, 2.0)
    tables = crf_tables(crf.double())
    plan = tables.pruning
    assert plan is not None and len(plan.restricted) == 20 and len(plan.open) == len(labels) - 20

    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 30, 48)
    cases = [rng.normal(0, scale, (48, 30, len(labels))) for scale in (0.05, 1.0, 4.0, 12.0)]
    cases.append(np.round(rng.normal(0, 1, (48, 30, len(labels)))))  # many exact ties
    dense_rows, pruned_rows = [0], [0]
    dense_step, plan_step = decoding._dense_step, decoding.PruningPlan.step

    def counting_dense(score, tables):
        dense_rows[0] += score.shape[0]
        return dense_step(score, tables)

    def counting_step(self, score, tables):
        pruned_rows[0] += score.shape[0]
        return plan_step(self, score, tables)

    for emissions in cases:
        monkeypatch.setattr(decoding, "_PRUNE_MIN_ROWS", 10**9)  # every step dense
        expected = viterbi(emissions, lengths, tables)
        monkeypatch.setattr(decoding, "_PRUNE_MIN_ROWS", 2)
        monkeypatch.setattr(decoding, "_dense_step", counting_dense)
        monkeypatch.setattr(decoding.PruningPlan, "step", counting_step)
        got = viterbi(emissions, lengths, tables)
        monkeypatch.setattr(decoding, "_dense_step", dense_step)
        monkeypatch.setattr(decoding.PruningPlan, "step", plan_step)
        assert np.array_equal(got, expected)
    mask = torch.arange(30)[None, :] < torch.from_numpy(lengths)[:, None]
    torch_paths, _ = crf.double().viterbi_decode(torch.from_numpy(cases[2]), mask)
    assert np.array_equal(viterbi(cases[2], lengths, tables), torch_paths.numpy())
    # Both branches ran: most rows were decided by the pruned step, some (flat, tied) were redone.
    assert pruned_rows[0] > 0 and 0 < dense_rows[0] < pruned_rows[0]


def test_no_pruning_plan_for_small_label_sets():
    assert crf_tables(make_crf(0, constrained=True)).pruning is None


def test_batches_padded_past_their_longest_row_decode_as_unpadded():
    tables = crf_tables(make_crf(1, constrained=True))
    emissions, lengths = random_emissions(1, [4, 2, 3])
    padded = np.concatenate([emissions, np.random.default_rng(9).normal(0, 2, (3, 3, len(LABELS)))], axis=1)
    paths = viterbi(padded, lengths, tables)
    assert paths.shape == (3, 7) and not paths[:, 4:].any()
    assert np.array_equal(paths[:, :4], viterbi(emissions, lengths, tables))
    np.testing.assert_allclose(forward_backward(padded, lengths, tables).marginals[:, :4],
                               forward_backward(emissions, lengths, tables).marginals, atol=1e-12)
