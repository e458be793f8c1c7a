"""Chinese and Japanese end to end: a tiny model trained on character-tagged BIOES data (with intents) tags
raw text written without spaces one character a token, through ``slotfill tag``, the Python API and the
service on a real socket, with slots at exact character offsets into the text as sent."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from service_testlib import REPO, TINY_TAGGER, cli, start_server, stop_server

from slotfill import schemes
from slotfill.data import load_corpus

RESOURCES = REPO / "tests" / "resources"
CHINESE = RESOURCES / "bioes_chars"
JAPANESE = RESOURCES / "bioes_japanese"


def _characters(text: str) -> list[str]:
    """The expected tokens of a text of Han and Kana: each character, but not the punctuation."""
    return [ch for ch in text if ch not in "。？、！"]


# (text, its tokens, its slots as (slot, value, start, end), its intent); None: not asserted (the model
# cannot know it: a phone it never saw, an intent it gets right only by chance)
CASES = {
    "zh": [
        ("我想订一张明天去北京的机票", _characters("我想订一张明天去北京的机票"),
         [("date", "明天", 5, 7), ("toloc", "北京", 8, 10)], "book_flight"),
        ("我想订一张明天从北京到上海的机票", _characters("我想订一张明天从北京到上海的机票"),
         [("date", "明天", 5, 7), ("fromloc", "北京", 8, 10), ("toloc", "上海", 11, 13)], "book_flight"),
        ("帮我查一下明天北京的天气。", _characters("帮我查一下明天北京的天气"),
         [("date", "明天", 5, 7), ("city", "北京", 7, 9)], "get_weather"),
        ("北京明天会下雨吗？", _characters("北京明天会下雨吗"), [("city", "北京", 0, 2), ("date", "明天", 2, 4)],
         "get_weather"),
        ("我想买iphone15", ["我", "想", "买", "iphone15"], None, None),
    ],
    "ja": [
        ("明日の東京の天気は？", _characters("明日の東京の天気は"), [("date", "明日", 0, 2), ("city", "東京", 3, 5)],
         "get_weather"),
        ("YOASOBIの曲をかけて", ["YOASOBI", *"の曲をかけて"], [("artist", "YOASOBI", 0, 7)], "play_music"),
        ("来週の月曜日、京都から那覇までの飛行機を予約して。", _characters("来週の月曜日京都から那覇までの飛行機を予約して"),
         [("date", "来週の月曜日", 0, 6), ("fromloc", "京都", 7, 9), ("toloc", "那覇", 11, 13)], "book_flight"),
        # halfwidth katakana: the model saw the fullwidth ニューヨーク; NFKC gives it that, offsets stay here
        ("ﾆｭｰﾖｰｸの明日の天気は", [*"ﾆｭｰﾖｰｸ", *"の明日の天気は"],
         [("city", "ﾆｭｰﾖｰｸ", 0, 6), ("date", "明日", 7, 9)], None),
    ],
}


def _train(data: Path, out: Path, epochs: int, *extra: str) -> tuple[Path, str]:
    """The model trained through the CLI and its training log."""
    result = cli("train", "--data", str(data), "--out", str(out), "--seed", "0", "--set", "scheme=BIOES",
                 f"epochs={epochs}", *TINY_TAGGER, *extra)
    return out, result.stderr


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Per language, (model, training log): Chinese on bioes_chars, Japanese on bioes_japanese (60 sentences:
    smaller batches, more epochs)."""
    root = tmp_path_factory.mktemp("scripts")
    return {"zh": _train(CHINESE, root / "zh", 12),
            "ja": _train(JAPANESE, root / "ja", 30, "batch_size=8")}


def _check(answer: dict[str, Any], case: tuple, *, echoes_text: bool = True) -> None:
    """Tokens, labels, slots and intent of one answer (CLI, API or HTTP: the same JSON shape, but the HTTP
    answer does not echo the text)."""
    text, tokens, slots, intent = case
    if echoes_text:
        assert answer["text"] == text
    assert [token["text"] for token in answer["tokens"]] == tokens
    previous_end = 0
    for token in answer["tokens"]:
        assert text[token["start"]:token["end"]] == token["text"]
        assert previous_end <= token["start"] < token["end"]
        previous_end = token["end"]
    labels = [token["label"] for token in answer["tokens"]]
    assert schemes.validate(labels, "BIOES") == []
    found = [(slot["slot"], slot["value"], slot["start"], slot["end"]) for slot in answer["slots"]]
    assert all(text[start:end] == value for _, value, start, end in found)
    if slots is not None:
        assert found == slots
    if intent is not None:
        assert answer["intent"]["name"] == intent


@pytest.mark.parametrize("language", ["zh", "ja"])
def test_training_reports_the_tokenizer_check(models, language):
    model, log = models[language]
    report = json.loads((model / "report.json").read_text(encoding="utf-8"))
    sentences = len(load_corpus(CHINESE if language == "zh" else JAPANESE, scheme="BIOES").train)
    assert report["tokenizer_check"] == {"sentences": sentences, "mismatched": 0, "rate": 0.0, "max_rate": 0.01,
                                         "examples": []}
    assert f"tokenizer check: 0/{sentences} training sentences (0.00%)" in log
    assert report["scheme"] == "BIOES" and report["slot_f1"] > 0.8 and report["intent_accuracy"] > 0.8


@pytest.mark.parametrize("language", ["zh", "ja"])
def test_cli_tags_raw_text_one_character_a_token(models, language):
    model, _ = models[language]
    cases = CASES[language]
    output = cli("tag", "--model", str(model), stdin="".join(text + "\n" for text, *_ in cases)).stdout
    answers = [json.loads(line) for line in output.splitlines()]
    assert len(answers) == len(cases)
    for answer, case in zip(answers, cases):
        _check(answer, case)


@pytest.mark.parametrize("language", ["zh", "ja"])
def test_python_api_tags_raw_text_one_character_a_token(models, language):
    from slotfill.inference.predictor import Predictor

    predictor = Predictor.load(models[language][0])
    assert predictor.tokenizer_config.char_tokens == "script"
    cases = CASES[language]
    for prediction, case in zip(predictor.predict_texts([text for text, *_ in cases]), cases):
        _check(prediction.to_dict(), case)


@pytest.mark.parametrize("language", ["zh", "ja"])
def test_service_tags_raw_text_one_character_a_token(models, language, tmp_path):
    server = start_server(models[language][0], tmp_path / "server.log")
    try:
        with server.client() as http:
            for case in CASES[language]:
                response = http.post("/v1/tag", json={"text": case[0]})
                assert response.status_code == 200, response.text
                _check(response.json(), case, echoes_text=False)
    finally:
        stop_server(server)


def test_character_tagged_tokens_requests_tag_like_the_data(models):
    """Pre-split requests (one character a token, as the data is written) are tagged as the data is."""
    model, _ = models["zh"]
    test = load_corpus(CHINESE, scheme="BIOES").test[:20]
    requests = "".join(json.dumps({"tokens": list(e.tokens)}, ensure_ascii=False) + "\n" for e in test)
    answers = [json.loads(line) for line in cli("tag", "--model", str(model), stdin=requests).stdout.splitlines()]
    right = 0
    for example, answer in zip(test, answers):
        text = " ".join(example.tokens)
        _check(answer, (text, list(example.tokens), None, None))
        right += [t["label"] for t in answer["tokens"]] == list(example.tags)
    assert right >= len(test) // 2
