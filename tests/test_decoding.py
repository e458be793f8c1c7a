"""NumPy decoding (the reference) reproduces the torch CRF exactly, and span probabilities equal
brute-force enumeration."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from slotfill.decoding.reference import CRFTables, constraint_mask, forward_backward, path_posteriors, softmax, viterbi
from slotfill.inference.engines import crf_tables
from slotfill.models.crf import CRF
from slotfill.schemes import allowed_transitions

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


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("seed", range(3))
def test_span_probabilities_equal_brute_force(seed, dtype):
    """Every segment of every row of a batch (rows of different lengths, one-token and whole sequences):
    the probability that the path's labels hold there, against enumerating every label sequence; and each
    position's confidence is its one-token segment."""
    crf = make_crf(seed, constrained=True)
    emissions, lengths = random_emissions(seed + 10, [4, 1, 3])
    tables = crf_tables(crf)
    paths = viterbi(emissions, lengths, tables)
    segments = [(row, start, end) for row, n in enumerate(lengths) for start in range(n)
                for end in range(start + 1, n + 1)]
    rows, starts, ends = (np.array(column) for column in zip(*segments))
    low = tables.astype(dtype)
    got = path_posteriors(emissions.astype(dtype), lengths, low, paths, rows, starts, ends)
    tolerance = 1e-9 if dtype == np.float64 else 2e-5
    for value, (row, start, end) in zip(got.spans, segments):
        n = lengths[row]
        expected = brute_force_segment_probability(tables, emissions[row, :n], paths[row], start, end)
        assert value == pytest.approx(expected, rel=tolerance)
        if end == start + 1:
            assert got.confidence[row, start] == pytest.approx(expected, rel=tolerance)
    assert not got.confidence[1, 1:].any()  # 0 past each length


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


def test_crf_tables_from_learned_scores_and_the_grammar_equal_the_module():
    """What the onnx engine builds from the saved scores and the scheme equals the torch module's own
    constrained scores."""
    crf = make_crf(3, constrained=True)
    built = CRFTables.build(crf.transitions.detach().numpy(), crf.start_transitions.detach().numpy(),
                            crf.end_transitions.detach().numpy(), constraint_mask("IOB2", LABELS))
    module = crf_tables(crf)
    for name in ("transitions", "start", "end"):
        np.testing.assert_array_equal(getattr(built, name), getattr(module, name))


def test_batches_padded_past_their_longest_row_decode_as_unpadded():
    tables = crf_tables(make_crf(1, constrained=True))
    emissions, lengths = random_emissions(1, [4, 2, 3])
    padded = np.concatenate([emissions, np.random.default_rng(9).normal(0, 2, (3, 3, len(LABELS)))], axis=1)
    paths = viterbi(padded, lengths, tables)
    assert paths.shape == (3, 7) and not paths[:, 4:].any()
    assert np.array_equal(paths[:, :4], viterbi(emissions, lengths, tables))
    np.testing.assert_allclose(forward_backward(padded, lengths, tables).marginals[:, :4],
                               forward_backward(emissions, lengths, tables).marginals, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_a_row_decodes_the_same_alone_and_in_a_batch(seed):
    crf = make_crf(seed, constrained=seed % 2 == 0)
    tables = crf_tables(crf)
    emissions, lengths = random_emissions(seed, [7, 2, 5])
    batch_paths = viterbi(emissions, lengths, tables)
    batch = forward_backward(emissions, lengths, tables)
    for row, n in enumerate(lengths):
        alone = emissions[row:row + 1, :n]
        assert np.array_equal(viterbi(alone, lengths[row:row + 1], tables)[0], batch_paths[row, :n])
        single = forward_backward(alone, lengths[row:row + 1], tables)
        np.testing.assert_allclose(single.marginals[0], batch.marginals[row, :n], atol=1e-12)
        np.testing.assert_allclose(single.log_z, batch.log_z[row:row + 1], rtol=1e-12)
