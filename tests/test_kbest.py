"""k-best Viterbi (:func:`slotfill.decoding.reference.kbest_viterbi`) against brute-force enumeration of every
allowed label sequence of tiny random CRFs, constraints included; the predictor's ``alternatives`` on every
backend and both CRF decoders (sequences), and on a softmax model (each token's top labels); ``slotfill tag
--alternatives``."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from slotfill.decoding.decoders import CRFDecoder
from slotfill.decoding.reference import CRFTables, constraint_mask, forward_backward, kbest_viterbi, viterbi
from slotfill.schemes import parse_tag, validate

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
        found = [tuple(p[:n]) for p in paths[row, :count].tolist()]
        assert len(set(found)) == count  # distinct, and each a valid sequence of the scheme
        assert all(validate([LABELS[scheme][j] for j in path], scheme) == [] for path in found)
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


# --------------------------------------------------------------------------- the predictor's alternatives

UTTERANCES = ["book a table for two at chez pierre tomorrow at 7pm", "cancel my booking at bella napoli",
              "find me a cheap thai restaurant in san francisco", "is there parking"]
SERVED = [(backend, decoder) for backend in ("torch", "onnx", "onnx-int8") for decoder in ("c", "numpy")]


def load(model_dir, backend: str, decoder: str):
    """The artifact on ``backend``, decoding with ``decoder`` (``SLOTFILL_DECODER``, read when it loads)."""
    from slotfill.decoding import kernels
    from slotfill.inference.predictor import Predictor

    if decoder == "c" and kernels._kernels is None:
        pytest.skip("the compiled decoder was not built (tests/test_kernels.py says whether it should have been)")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLOTFILL_DECODER", decoder)
        loaded = Predictor.load(model_dir, backend=backend)
    assert (loaded.backend, loaded.decoder) == (backend, decoder)
    return loaded


@pytest.fixture(scope="module", params=SERVED, ids=[f"{b}-{d}" for b, d in SERVED])
def served(request, int8_model_dir):
    return load(int8_model_dir, *request.param)


@pytest.fixture(scope="module")
def reference(int8_model_dir):
    """The float model in torch, decoded in NumPy: what every other backend and decoder is compared with."""
    return load(int8_model_dir, "torch", "numpy")


def dataclass_without(prediction):
    import dataclasses

    return dataclasses.replace(prediction, alternatives=None)


def test_alternatives_start_with_the_answer_and_are_ranked_distinct_and_valid(served) -> None:
    plain = served.predict_texts(UTTERANCES)
    for k in (1, 5):
        ranked = served.predict_texts(UTTERANCES, alternatives=k)
        for before, after in zip(plain, ranked):
            assert before.alternatives is None and "alternatives" not in before.to_dict()
            alternatives = after.alternatives
            assert len(alternatives) == k
            assert dataclass_without(after) == before
            assert list(alternatives[0].labels) == before.labels and alternatives[0].slots == before.slots
            probabilities = [a.probability for a in alternatives]
            assert probabilities == sorted(probabilities, reverse=True) and 0 < probabilities[-1]
            assert sum(probabilities) <= 1 + k * 5e-7  # each rounded to 6 digits
            assert len({a.labels for a in alternatives}) == k
            for alternative in alternatives:
                assert validate(list(alternative.labels), served.config.scheme) == []
                for slot in alternative.slots:
                    assert after.text[slot.start:slot.end] == slot.value and 0 <= slot.confidence <= 1
            out = after.to_dict()["alternatives"]
            assert [a["probability"] for a in out] == probabilities and out[0]["labels"] == before.labels
    # A floor changes the answer, not its alternatives: the first is still the answer as decoded.
    floored = served.predict_texts(UTTERANCES, alternatives=2, min_span_confidence=1.0)
    for before, after in zip(plain, floored):
        assert list(after.alternatives[0].labels) == before.labels
    [empty] = served.predict_texts(["?!"], alternatives=3)
    assert [(a.labels, a.slots, a.probability) for a in empty.alternatives] == [((), (), 1.0)]


def test_the_probabilities_are_the_decoders_at_the_slot_temperature(served) -> None:
    norms = [[token.norm or token.text for token in served.tokenize(text)] for text in UTTERANCES]
    emissions, _, lengths = served.run_network(norms)
    _, log_p = served._scorer.k_best(emissions, lengths, 5)
    for row, after in enumerate(served.predict_texts(UTTERANCES, alternatives=5)):
        assert [a.probability for a in after.alternatives] == [round(float(np.exp(v)), 6) for v in log_p[row]]


def test_every_backend_and_decoder_agrees_with_torch_and_numpy(served, reference) -> None:
    """The float graph gives torch's alternatives, probabilities to float32 rounding; the int8 graph the same
    sequences where it decodes as the float one does (its reason to exist), probabilities within 0.05."""
    tolerance = 0.05 if served.backend == "onnx-int8" else 1e-4
    expected = reference.predict_texts(UTTERANCES, alternatives=3)
    compared = 0
    for got, want in zip(served.predict_texts(UTTERANCES, alternatives=3), expected):
        if served.backend == "onnx-int8" and got.labels != want.labels:
            continue
        compared += 1
        assert [a.labels for a in got.alternatives] == [a.labels for a in want.alternatives]
        for a, b in zip(got.alternatives, want.alternatives):
            assert a.probability == pytest.approx(b.probability, abs=tolerance)
            assert [(s.slot, s.start, s.end) for s in a.slots] == [(s.slot, s.start, s.end) for s in b.slots]
    assert compared >= len(UTTERANCES) - 1, "the int8 graph decodes (nearly) all of these as the float one does"


def test_every_call_takes_alternatives_and_bad_values_are_refused(reference) -> None:
    tokens = [text.split() for text in UTTERANCES]
    by_tokens = reference.predict_tokens(tokens, alternatives=2)
    by_text = reference.predict_texts(UTTERANCES, alternatives=2)
    mixed = reference.predict_mixed([tokens[0], UTTERANCES[1], tokens[2], UTTERANCES[3]], alternatives=2)
    for row, prediction in enumerate(mixed):
        assert prediction == (by_tokens if row % 2 == 0 else by_text)[row]
    for bad in (-1, True, 2.0, "3"):
        with pytest.raises(ValueError, match="alternatives"):
            reference.predict_texts(UTTERANCES, alternatives=bad)
    assert reference.predict_texts(UTTERANCES, alternatives=0) == reference.predict_texts(UTTERANCES)


# --------------------------------------------------------------------------- a softmax model: top labels


@pytest.fixture(scope="module", params=["torch", "onnx"])
def softmax_predictor(request, sample_softmax_model_dir):
    from slotfill.inference.predictor import Predictor

    loaded = Predictor.load(sample_softmax_model_dir, backend=request.param)
    assert loaded.backend == request.param and loaded.config.decoder == "softmax"
    return loaded


def test_a_softmax_model_gives_each_token_its_top_labels(softmax_predictor) -> None:
    from slotfill.decoding.reference import softmax

    predictor = softmax_predictor
    count = len(predictor.labels)
    plain = predictor.predict_texts(UTTERANCES)
    norms = [[token.norm or token.text for token in predictor.tokenize(text)] for text in UTTERANCES]
    emissions, _, lengths = predictor.run_network(norms)
    predictor.set_temperatures(1.7, predictor.intent_temperature)  # a slot temperature that is not 1: it is used
    try:
        calibrated = predictor.predict_texts(UTTERANCES)
        probabilities = softmax(emissions.astype(np.float64) / 1.7)
        for k in (1, 3, count + 2):
            for row, (before, after) in enumerate(zip(calibrated, predictor.predict_texts(UTTERANCES, alternatives=k))):
                assert after.alternatives is None, "sequences are a CRF's; a softmax model ranks each token's labels"
                assert [dataclasses_without_top(t) for t in after.tokens] == list(before.tokens)
                assert (after.slots, after.intent) == (before.slots, before.intent)
                raw, scheme = [token.top_labels[0].label for token in after.tokens], predictor.config.scheme
                for position, token in enumerate(after.tokens):
                    top = token.top_labels
                    assert len(top) == min(k, count) and len({label for label, _ in top}) == len(top)
                    # The model's own choice, with exactly the token's confidence (the same calibrated softmax);
                    # where softmax decoding spelt an invalid sequence (O I-x), the token's label is its repair.
                    assert top[0].label == predictor.labels[int(emissions[row, position].argmax())]
                    assert top[0].confidence == token.confidence
                    assert top[0].label == token.label or (
                        parse_tag(top[0].label)[1] == parse_tag(token.label)[1] and validate(raw, scheme) != [])
                    confidences = [confidence for _, confidence in top]
                    assert confidences == sorted(confidences, reverse=True)
                    for label, confidence in top:
                        assert confidence == pytest.approx(
                            probabilities[row, position, predictor.labels.index(label)], abs=2e-6)
                    assert sum(confidences) <= 1 + len(top) * 5e-7
                    if k >= count:
                        assert sum(confidences) == pytest.approx(1.0, abs=count * 5e-7)
                out = after.to_dict()["tokens"]
                assert [t["top_labels"] for t in out] == [[{"label": label, "confidence": confidence}
                                                            for label, confidence in t.top_labels]
                                                           for t in after.tokens]
    finally:
        predictor.set_temperatures((predictor.loaded.calibration or {}).get("slot_temperature", 1.0),
                                   predictor.intent_temperature)
    for before, token_out in zip(plain, (p.to_dict() for p in plain)):
        assert all("top_labels" not in t and "dropped_label" not in t for t in token_out["tokens"])
    [empty] = predictor.predict_texts(["?!"], alternatives=3)
    assert empty.alternatives is None and empty.tokens == ()


def dataclasses_without_top(token):
    import dataclasses

    return dataclasses.replace(token, top_labels=None)


# --------------------------------------------------------------------------- slotfill tag --alternatives


def test_tag_cli_adds_alternatives(sample_model_dir, sample_softmax_model_dir, tmp_path, capsys) -> None:
    import json

    from slotfill.inference.predictor import Predictor
    from training.cli import main as cli_main

    source = tmp_path / "in.txt"
    source.write_text(f"{UTTERANCES[0]}\n{{\"tokens\": {json.dumps(UTTERANCES[1].split())}}}\n")
    for model_dir in (sample_model_dir, sample_softmax_model_dir):
        plain, ranked = tmp_path / "plain.jsonl", tmp_path / "ranked.jsonl"
        assert cli_main(["tag", "--model", str(model_dir), "--input", str(source), "--output", str(plain)]) == 0
        assert cli_main(["tag", "--model", str(model_dir), "--input", str(source), "--output", str(ranked),
                         "--alternatives", "3"]) == 0
        predictor = Predictor.load(model_dir)
        expected = [predictor.predict_texts([UTTERANCES[0]], alternatives=3)[0],
                    predictor.predict_tokens([UTTERANCES[1].split()], alternatives=3)[0]]
        for plain_line, ranked_line, prediction in zip(plain.read_text().splitlines(),
                                                       ranked.read_text().splitlines(), expected):
            before, after = json.loads(plain_line), json.loads(ranked_line)
            assert after == {"line": before["line"], **json.loads(json.dumps(prediction.to_dict()))}
            if model_dir == sample_model_dir:
                alternatives = after.pop("alternatives")
                assert len(alternatives) == 3 and alternatives[0]["labels"] == before["labels"]
            else:
                assert "alternatives" not in after
                tops = [token.pop("top_labels") for token in after["tokens"]]
                assert all(len(top) == 3 and top[0]["label"] == token["label"]
                           for top, token in zip(tops, after["tokens"]))
            assert after == before and before["text"] == prediction.text
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--alternatives", bad])
        assert exit_info.value.code == 2
        assert "--alternatives" in capsys.readouterr().err
