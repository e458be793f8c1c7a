"""k-best Viterbi (:func:`slotfill.decoding.reference.kbest_viterbi`) against brute-force enumeration of every
allowed label sequence of tiny random CRFs, constraints included."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from slotfill.decoding.decoders import CRFDecoder
from slotfill.decoding.reference import CRFTables, constraint_mask, forward_backward, kbest_viterbi, viterbi

LABELS = {"IOB2": ["O", "B-a", "I-a", "B-b", "I-b"], "BIOES": ["O", "B-a", "I-a", "E-a", "S-a"],
          "IOB1": ["O", "I-a", "B-a"]}


def random_crf(seed: int, scheme: str, batch: int = 3, steps: int = 4) -> tuple[CRFTables, np.ndarray, np.ndarray,
                                                                               np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = LABELS[scheme]
    k = len(labels)
    mask = constraint_mask(scheme, labels)
    tables = CRFTables.build(rng.normal(size=(k, k)) * 2, rng.normal(size=k), rng.normal(size=k), mask)
    emissions = rng.normal(size=(batch, steps, k)) * 2
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    return tables, emissions, lengths, mask


def brute_force(tables: CRFTables, emissions: np.ndarray, n: int, mask: np.ndarray) -> list[tuple[float, tuple]]:
    """Every allowed sequence of length n with its score, best first."""
    k = emissions.shape[1]
    found = []
    for path in itertools.product(range(k), repeat=n):
        if not mask[k, path[0]] or not mask[path[-1], k + 1] or not all(mask[a, b] for a, b in zip(path, path[1:])):
            continue
        score = tables.start[path[0]] + tables.end[path[-1]] + sum(emissions[t, j] for t, j in enumerate(path))
        score += sum(tables.transitions[a, b] for a, b in zip(path, path[1:]))
        found.append((float(score), path))
    return sorted(found, key=lambda item: -item[0])


@pytest.mark.parametrize("scheme", sorted(LABELS))
@pytest.mark.parametrize("seed", range(4))
def test_kbest_equals_brute_force(seed: int, scheme: str) -> None:
    tables, emissions, lengths, mask = random_crf(seed, scheme)
    k = 12
    paths, scores = kbest_viterbi(emissions, lengths, tables, k)
    assert paths.shape == (3, k, 4) and scores.shape == (3, k)
    best = viterbi(emissions, lengths, tables)
    log_z = forward_backward(emissions, lengths, tables).log_z
    for row, n in enumerate(lengths.tolist()):
        expected = brute_force(tables, emissions[row], n, mask)
        count = min(k, len(expected))
        assert np.allclose(scores[row, :count], [score for score, _ in expected[:count]])
        assert [tuple(p[:n]) for p in paths[row, :count].tolist()] == [path for _, path in expected[:count]]
        assert np.all(scores[row, count:] == -np.inf) and not paths[row, count:].any()
        assert not paths[row, :, n:].any()
        assert paths[row, 0, :n].tolist() == best[row, :n].tolist()
        probabilities = np.exp(scores[row, :count] - log_z[row])
        assert np.all(np.diff(probabilities) <= 0) and probabilities.sum() <= 1 + 1e-9
        if count == len(expected):  # every allowed path: they sum to 1
            assert probabilities.sum() == pytest.approx(1.0, abs=1e-6)


def test_the_decoder_gives_log_probabilities_at_its_temperature() -> None:
    tables, emissions, lengths, mask = random_crf(7, "IOB2")
    emissions = emissions.astype(np.float32)
    for temperature in (1.0, 1.7):
        decoder = CRFDecoder(tables, temperature)
        paths, log_p = decoder.k_best(emissions, lengths, 5)
        scaled = tables.astype(np.float32).scaled(1 / temperature).astype(np.float64)
        for row, n in enumerate(lengths.tolist()):
            expected = brute_force(scaled, emissions[row].astype(np.float64) / temperature, n, mask)
            total = np.logaddexp.reduce([score for score, _ in expected])
            count = min(5, len(expected))
            assert np.allclose(log_p[row, :count], [score - total for score, _ in expected[:count]], atol=1e-5)
            assert [tuple(p[:n]) for p in paths[row, :count].tolist()] == [path for _, path in expected[:count]]
