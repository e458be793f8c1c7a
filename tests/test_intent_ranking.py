"""Intent ranking: ``intent_top_k`` on the predictor's calls (every backend), ``slotfill tag --intent-ranking``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from slotfill.decoding.reference import softmax
from slotfill.inference.predictor import Predictor
from training.cli import main as cli_main

UTTERANCES = ["book a table for two at chez pierre tomorrow at 7pm", "cancel my booking",
              "find me a cheap thai restaurant in san francisco", "is there parking at bella napoli"]


@pytest.fixture(scope="module", params=["torch", "onnx", "onnx-int8"])
def predictor(request: pytest.FixtureRequest, int8_model_dir: Path) -> Predictor:
    loaded = Predictor.load(int8_model_dir, backend=request.param)
    assert loaded.backend == request.param
    return loaded


def test_the_ranking_is_the_calibrated_softmax_sorted_and_starts_with_the_intent(predictor: Predictor) -> None:
    n = len(predictor.intents)
    assert n >= 3, "the sample model has several intents"
    predictor.set_temperatures(predictor.slot_temperature, 1.7)  # a temperature that is not 1: it must be used
    try:
        for k in (1, 2, n):
            for prediction in predictor.predict_texts(UTTERANCES, intent_top_k=k):
                ranking = prediction.intent.ranking
                assert len(ranking) == k
                assert ranking[0] == (prediction.intent.name, prediction.intent.confidence)  # exactly
                confidences = [confidence for _, confidence in ranking]
                assert confidences == sorted(confidences, reverse=True)
                assert len({name for name, _ in ranking}) == k and {name for name, _ in ranking} <= set(
                    predictor.intents)
                assert sum(confidences) <= 1 + 1e-6 * k  # six-digit rounding of each
        # Every intent's confidence is the calibrated softmax's (logits / intent temperature).
        norms = [[token.norm or token.text for token in predictor.tokenize(text)] for text in UTTERANCES]
        _, logits, _ = predictor.run_network(norms)
        probs = softmax(logits / 1.7)
        for row, prediction in enumerate(predictor.predict_texts(UTTERANCES, intent_top_k=n)):
            expected = {predictor.intents[i]: round(float(p), 6) for i, p in enumerate(probs[row])}
            assert dict(prediction.intent.ranking) == expected
            assert sum(c for _, c in prediction.intent.ranking) == pytest.approx(1.0, abs=1e-5)
    finally:
        predictor.set_temperatures(predictor.slot_temperature,
                                   (predictor.loaded.calibration or {}).get("intent_temperature", 1.0))


def test_without_top_k_nothing_changes(predictor: Predictor) -> None:
    plain = predictor.predict_texts(UTTERANCES)
    ranked = predictor.predict_texts(UTTERANCES, intent_top_k=3)
    for a, b in zip(plain, ranked):
        assert a.intent.ranking is None
        assert (a.intent.name, a.intent.confidence) == (b.intent.name, b.intent.confidence)
        assert (a.tokens, a.slots) == (b.tokens, b.slots)
        assert "ranking" not in a.to_dict()["intent"]
        assert b.to_dict()["intent"]["ranking"] == [{"name": n, "confidence": c} for n, c in b.intent.ranking]


def test_every_predict_call_takes_top_k(predictor: Predictor) -> None:
    tokens = [text.split() for text in UTTERANCES]
    by_tokens = predictor.predict_tokens(tokens, intent_top_k=2)
    mixed = predictor.predict_mixed([UTTERANCES[0], tokens[1], UTTERANCES[2], tokens[3]], intent_top_k=2)
    by_text = predictor.predict_texts(UTTERANCES, intent_top_k=2)
    for a, b, c in zip(by_tokens, mixed, by_text):
        assert a.intent.ranking == b.intent.ranking == c.intent.ranking
    [empty] = predictor.predict_texts(["?!"], intent_top_k=2)  # no tokens: no intent to rank
    assert empty.intent is None


@pytest.mark.parametrize("k", [-1, "all"])
def test_top_k_is_checked(predictor: Predictor, k: object) -> None:
    with pytest.raises(ValueError, match="intent_top_k"):
        predictor.predict_texts(UTTERANCES, intent_top_k=k)  # type: ignore[arg-type]


def test_top_k_past_the_intents_or_not_an_int_is_refused(predictor: Predictor) -> None:
    n = len(predictor.intents)
    with pytest.raises(ValueError, match=rf"from 1 to the number of intents \({n}\).*got {n + 1}"):
        predictor.predict_tokens([["cancel", "my", "booking"]], intent_top_k=n + 1)
    for bad in (True, 2.0, None):
        with pytest.raises(ValueError, match="intent_top_k must be an integer"):
            predictor.predict_mixed(["cancel my booking"], intent_top_k=bad)  # type: ignore[arg-type]
    assert predictor.predict_texts(["cancel my booking"], intent_top_k=0)[0].intent.ranking is None


def test_a_model_without_intents_ranks_nothing(sample_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    predictor = Predictor.load(sample_model_dir, backend="torch")
    run = predictor.run_network
    monkeypatch.setattr(predictor, "run_network", lambda norms: (run(norms)[0], None, run(norms)[2]))
    monkeypatch.setattr(predictor, "intents", None)
    for prediction in predictor.predict_texts(UTTERANCES, intent_top_k=50):
        assert prediction.intent is None
        assert prediction.to_dict()["intent"] is None


# --------------------------------------------------------------------------- slotfill tag --intent-ranking


def test_tag_cli_adds_the_ranking(sample_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.txt"
    source.write_text("book a table for two tomorrow\n{\"tokens\": [\"cancel\", \"my\", \"booking\"]}\n")
    plain, ranked = tmp_path / "plain.jsonl", tmp_path / "ranked.jsonl"
    assert cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(plain)]) == 0
    assert cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--output", str(ranked),
                     "--intent-ranking", "3"]) == 0
    predictor = Predictor.load(sample_model_dir)
    expected = [predictor.predict_texts(["book a table for two tomorrow"], intent_top_k=3)[0],
                predictor.predict_tokens([["cancel", "my", "booking"]], intent_top_k=3)[0]]
    for plain_line, ranked_line, prediction in zip(plain.read_text().splitlines(), ranked.read_text().splitlines(),
                                                   expected):
        before, after = json.loads(plain_line), json.loads(ranked_line)
        assert "ranking" not in before["intent"]
        ranking = after["intent"].pop("ranking")
        assert after == before  # the rest of the line is unchanged
        assert ranking == [{"name": n, "confidence": c} for n, c in prediction.intent.ranking]
        assert len(ranking) == 3 and ranking[0] == {"name": before["intent"]["name"],
                                                    "confidence": before["intent"]["confidence"]}

    n = len(predictor.intents)
    assert cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source),
                     "--intent-ranking", str(n + 1)]) == 2
    assert capsys.readouterr().err == (f"slotfill tag: error: --intent-ranking {n + 1}: the model has {n} intents; "
                                       f"give 1 to {n}\n")
    for bad in ("0", "two"):
        with pytest.raises(SystemExit) as exit_info:
            cli_main(["tag", "--model", str(sample_model_dir), "--input", str(source), "--intent-ranking", bad])
        assert exit_info.value.code == 2
        assert "--intent-ranking" in capsys.readouterr().err
