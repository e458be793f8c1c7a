"""Confidence floor: ``min_span_confidence`` on the predictor's calls (every backend), ``slotfill tag
--min-confidence``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slotfill.decoding.reference import forward_backward
from slotfill.inference.predictor import Predictor
from slotfill.schemes import validate
from training.cli import main as cli_main

UTTERANCES = ["book a table for two at chez pierre tomorrow at 7pm", "cancel my booking at bella napoli",
              "find me a cheap thai restaurant in san francisco", "is there parking at bella napoli tonight",
              "a table for 4 at the golden dragon on friday", "reserve sushi zen for six people next monday"]


@pytest.fixture(scope="module", params=["torch", "onnx", "onnx-int8"])
def predictor(request: pytest.FixtureRequest, int8_model_dir: Path) -> Predictor:
    loaded = Predictor.load(int8_model_dir, backend=request.param)
    assert loaded.backend == request.param
    return loaded


def _confidences(predictions) -> list[float]:
    return sorted({slot.confidence for prediction in predictions for slot in prediction.slots})


def test_spans_below_the_floor_are_dropped_and_their_tokens_become_o(predictor: Predictor) -> None:
    plain = predictor.predict_texts(UTTERANCES)
    confidences = _confidences(plain)
    assert len(confidences) >= 3, "the sample model finds spans of several confidences"
    floor = confidences[len(confidences) // 2]  # some spans are below, some at or above
    floored = predictor.predict_texts(UTTERANCES, min_span_confidence=floor)
    dropped = kept = 0
    norms = [[token.norm or token.text for token in predictor.tokenize(text)] for text in UTTERANCES]
    emissions, _, lengths = predictor.run_network(norms)
    marginals = forward_backward(emissions.astype(np.float64) / predictor.slot_temperature, lengths,
                                 predictor._decoder.tables.scaled(1 / predictor.slot_temperature)
                                 .astype(np.float64)).marginals
    outside = predictor.labels.index("O")
    for row, (before, after) in enumerate(zip(plain, floored)):
        assert after.slots == tuple(slot for slot in before.slots if slot.confidence >= floor)
        assert after.intent == before.intent and after.text == before.text
        assert validate(after.labels, predictor.config.scheme) == []
        removed = [slot for slot in before.slots if slot.confidence < floor]
        dropped += len(removed)
        kept += len(after.slots)
        inside = {i for slot in removed for i, token in enumerate(before.tokens)
                  if slot.start <= token.start and token.end <= slot.end}
        for i, (a, b) in enumerate(zip(before.tokens, after.tokens)):
            assert (a.text, a.start, a.end) == (b.text, b.start, b.end)
            if i in inside:  # now O, with the model's (calibrated) probability of O there, marked with its label
                assert b.label == "O" and a.label != "O" and b.dropped_label == a.label
                assert b.confidence == pytest.approx(marginals[row, i, outside], abs=2e-6)
                assert after.to_dict()["tokens"][i]["dropped_label"] == a.label
            else:
                assert b == a and a.dropped_label is None and "dropped_label" not in after.to_dict()["tokens"][i]
    assert dropped and kept


def test_floor_zero_changes_nothing_and_floor_one_keeps_only_certain_spans(predictor: Predictor) -> None:
    plain = predictor.predict_texts(UTTERANCES)
    assert predictor.predict_texts(UTTERANCES, min_span_confidence=0.0) == plain
    assert predictor.predict_texts(UTTERANCES, min_span_confidence=None) == plain
    top = predictor.predict_texts(UTTERANCES, min_span_confidence=1)
    for before, after in zip(plain, top):
        assert after.slots == tuple(slot for slot in before.slots if slot.confidence == 1.0)
        assert validate(after.labels, predictor.config.scheme) == []


def test_every_call_takes_the_floor_and_each_input_may_have_its_own(predictor: Predictor) -> None:
    floor = _confidences(predictor.predict_texts(UTTERANCES))[1]
    tokens = [text.split() for text in UTTERANCES]
    by_text = predictor.predict_texts(UTTERANCES, min_span_confidence=floor)
    by_tokens = predictor.predict_tokens(tokens, min_span_confidence=floor)
    mixed = predictor.predict_mixed([UTTERANCES[0], tokens[1], UTTERANCES[2], tokens[3], UTTERANCES[4], tokens[5]],
                                    min_span_confidence=floor)
    for row, prediction in enumerate(mixed):
        assert prediction == (by_text if row % 2 == 0 else by_tokens)[row]
    # Compared within one batch of the same two texts: the int8 graph quantizes its activations per batch.
    own = predictor.predict_texts(UTTERANCES[:2], min_span_confidence=[None, floor])
    assert own[0] == predictor.predict_texts(UTTERANCES[:2])[0]
    assert own[1] == predictor.predict_texts(UTTERANCES[:2], min_span_confidence=floor)[1]
    [empty] = predictor.predict_texts(["?!"], min_span_confidence=0.5)
    assert empty.slots == () and empty.intent is None


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), float("inf"), "0.5", True, [0.5]])
def test_bad_floors_are_refused(predictor: Predictor, bad: object) -> None:
    with pytest.raises(ValueError, match="min_span_confidence"):
        predictor.predict_texts(UTTERANCES[:2], min_span_confidence=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- slotfill tag --min-confidence


def test_tag_cli_applies_the_floor(sample_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_text(f"{UTTERANCES[0]}\n{{\"tokens\": {json.dumps(UTTERANCES[2].split())}}}\n")
    out = tmp_path / "out.jsonl"
    assert cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(out),
                     "--min-confidence", "0.9"]) == 0
    predictor = Predictor.load(sample_model_dir)
    expected = [predictor.predict_texts([UTTERANCES[0]], min_span_confidence=0.9)[0],
                predictor.predict_tokens([UTTERANCES[2].split()], min_span_confidence=0.9)[0]]
    plain = [predictor.predict_texts([UTTERANCES[0]])[0], predictor.predict_tokens([UTTERANCES[2].split()])[0]]
    marked = 0
    for line, prediction, before in zip(out.read_text().splitlines(), expected, plain):
        record = json.loads(line)
        record.pop("line")
        assert record == json.loads(json.dumps(prediction.to_dict()))
        assert all(slot["confidence"] >= 0.9 for slot in record["slots"])
        # The tokens of the dropped slots, and only they, carry the label they lost.
        dropped = [slot for slot in before.slots if slot.confidence < 0.9]
        inside = [any(slot.start <= t.start and t.end <= slot.end for slot in dropped) for t in before.tokens]
        assert [t.get("dropped_label") for t in record["tokens"]] == [
            t.label if hit else None for t, hit in zip(before.tokens, inside)]
        marked += sum(inside)
    assert marked, "the floor drops some slot of these lines"
    for bad in ("1.5", "-1", "nan", "high"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--min-confidence", bad])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--min-confidence" in err and err.strip().splitlines()[-1].startswith("slotfill tag: error:")
