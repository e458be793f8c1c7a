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


# --------------------------------------------------------------------------- the predictor's n_best

UTTERANCES = ["book a table for two at chez pierre tomorrow at 7pm", "cancel my booking at bella napoli",
              "find me a cheap thai restaurant in san francisco", "is there parking"]


@pytest.fixture(scope="module")
def predictor(sample_model_dir):
    from slotfill.inference.predictor import Predictor

    return Predictor.load(sample_model_dir, backend="torch")


def test_alternatives_start_with_the_answer_and_are_ranked(predictor) -> None:
    from slotfill.schemes import validate

    plain = predictor.predict_texts(UTTERANCES)
    ranked = predictor.predict_texts(UTTERANCES, n_best=5)
    for before, after in zip(plain, ranked):
        assert before.alternatives is None and "alternatives" not in before.to_dict()
        alternatives = after.alternatives
        assert len(alternatives) == 5
        assert dataclass_without(after) == before
        assert list(alternatives[0].labels) == before.labels and alternatives[0].slots == before.slots
        probabilities = [a.probability for a in alternatives]
        assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 1 + 5e-6
        assert len({a.labels for a in alternatives}) == 5
        for alternative in alternatives:
            assert validate(list(alternative.labels), predictor.config.scheme) == []
            for slot in alternative.slots:
                assert after.text[slot.start:slot.end] == slot.value and 0 <= slot.confidence <= 1
        out = after.to_dict()["alternatives"]
        assert [a["probability"] for a in out] == probabilities and out[0]["labels"] == before.labels
    # The probabilities are exp(path score - log Z) at the slot temperature: the best path's is the product
    # chain, checked here against the decoder directly.
    norms = [[token.norm or token.text for token in predictor.tokenize(text)] for text in UTTERANCES]
    emissions, _, lengths = predictor.run_network(norms)
    _, log_p = predictor._scorer.k_best(emissions, lengths, 5)
    for row, after in enumerate(ranked):
        assert [a.probability for a in after.alternatives] == [round(float(np.exp(v)), 6) for v in log_p[row]]
    [empty] = predictor.predict_texts(["?!"], n_best=3)
    assert [(a.labels, a.slots, a.probability) for a in empty.alternatives] == [((), (), 1.0)]


def dataclass_without(prediction):
    import dataclasses

    return dataclasses.replace(prediction, alternatives=None)


def test_every_call_takes_n_best_and_bad_values_are_refused(predictor, sample_softmax_model_dir) -> None:
    from slotfill.inference.predictor import Predictor

    tokens = [text.split() for text in UTTERANCES]
    by_tokens = predictor.predict_tokens(tokens, n_best=2)
    by_text = predictor.predict_texts(UTTERANCES, n_best=2)
    mixed = predictor.predict_mixed([tokens[0], UTTERANCES[1], tokens[2], UTTERANCES[3]], n_best=2)
    for row, prediction in enumerate(mixed):
        assert prediction == (by_tokens if row % 2 == 0 else by_text)[row]
    for bad in (-1, True, 2.0, "3"):
        with pytest.raises(ValueError, match="n_best"):
            predictor.predict_texts(UTTERANCES, n_best=bad)
    softmax = Predictor.load(sample_softmax_model_dir, backend="torch")
    with pytest.raises(ValueError, match="n_best needs a model with a CRF"):
        softmax.predict_texts(UTTERANCES, n_best=2)
    assert softmax.predict_texts(UTTERANCES, n_best=0) == softmax.predict_texts(UTTERANCES)


# --------------------------------------------------------------------------- slotfill tag --n-best


def test_tag_cli_adds_alternatives(sample_model_dir, sample_softmax_model_dir, tmp_path, capsys) -> None:
    import json

    from slotfill.inference.predictor import Predictor
    from training.cli import main as cli_main

    source = tmp_path / "in.txt"
    source.write_text(f"{UTTERANCES[0]}\n{{\"tokens\": {json.dumps(UTTERANCES[1].split())}}}\n")
    plain, ranked = tmp_path / "plain.jsonl", tmp_path / "ranked.jsonl"
    assert cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(plain)]) == 0
    assert cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(ranked),
                     "--n-best", "3"]) == 0
    predictor = Predictor.load(sample_model_dir)
    expected = [predictor.predict_texts([UTTERANCES[0]], n_best=3)[0],
                predictor.predict_tokens([UTTERANCES[1].split()], n_best=3)[0]]
    for plain_line, ranked_line, prediction in zip(plain.read_text().splitlines(), ranked.read_text().splitlines(),
                                                   expected):
        before, after = json.loads(plain_line), json.loads(ranked_line)
        alternatives = after.pop("alternatives")
        assert after == before and "alternatives" not in before
        assert alternatives == json.loads(json.dumps(prediction.to_dict()))["alternatives"]
        assert len(alternatives) == 3 and alternatives[0]["labels"] == before["labels"]
    assert cli_main(["tag", "--model", str(sample_softmax_model_dir), "--input", str(source), "--n-best", "2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slotfill tag: error: --n-best 2: n_best needs a model with a CRF") and err.count("\n") == 1
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--n-best", bad])
        assert exit_info.value.code == 2
        assert "--n-best" in capsys.readouterr().err
