"""IOB2, IOB1 and BIOES end to end: a tiny model per scheme trains, evaluates and tags through the CLI
and answers over HTTP (a real server on a real socket); scores equal seqeval's in the data's scheme,
and the answers' spans do not depend on the scheme the labels are written in."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from seqeval.metrics import f1_score
from seqeval.scheme import IOB1, IOB2, IOBES
from service_testlib import TINY_TAGGER, cli, start_server, stop_server

from slotfill import schemes
from slotfill.data import load_corpus, write_folder_split

SEQEVAL = {"IOB2": IOB2, "IOB1": IOB1, "BIOES": IOBES}
SETTINGS = ["epochs=8", *TINY_TAGGER]


@pytest.fixture(scope="module", params=["IOB2", "IOB1", "BIOES"])
def trained(request, small_corpus: Path, tmp_path_factory) -> tuple[str, Path, Path]:
    """(scheme, data folder in that scheme, model trained on it through the CLI)."""
    scheme = request.param
    root = tmp_path_factory.mktemp(f"scheme-{scheme}")
    data = root / "data"
    corpus = load_corpus(small_corpus)
    for split in ("train", "valid", "test"):
        examples = [dataclasses.replace(example, tags=tuple(schemes.convert(example.tags, "IOB2", scheme)))
                    for example in getattr(corpus, split)]
        write_folder_split(examples, data / split)
    model = root / "model"
    cli("train", "--data", str(data), "--out", str(model), "--seed", "0", "--set", f"scheme={scheme}", *SETTINGS)
    return scheme, data, model


def test_evaluate_scores_equal_seqeval_in_the_scheme(trained, tmp_path):
    scheme, data, model = trained
    from slotfill.inference.predictor import Predictor
    from slotfill.text.tokenizer import normalize_token

    cli("evaluate", "--model", str(model), "--data", str(data), "--out", str(tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    predictor = Predictor.load(model)
    test = load_corpus(data, scheme=scheme).test
    gold = [list(e.tags) for e in test]
    assert any(tag.startswith(("E-", "S-")) for tags in gold for tag in tags) == (scheme == "BIOES")
    predicted, _ = predictor.predict_labels([[normalize_token(t, predictor.tokenizer_config) or t for t in e.tokens]
                                             for e in test])
    assert report["scheme"] == scheme
    assert report["slot_f1"] == pytest.approx(f1_score(gold, predicted, zero_division=0))
    assert report["slot_f1_strict"] == pytest.approx(
        f1_score(gold, predicted, mode="strict", scheme=SEQEVAL[scheme], zero_division=0))
    assert report["slot_f1"] > 0.6  # the model learned: the equality is not 0 == 0
    # The model card and the training report agree with the scheme too.
    assert json.loads((model / "config.json").read_text())["scheme"] == scheme
    assert json.loads((model / "report.json").read_text())["scheme"] == scheme


def _check_answer(answer: dict, scheme: str, text: str) -> None:
    """Labels in the model's scheme and valid there; the spans are the labels' spans in that scheme and
    in IOB2 alike, at the right character offsets."""
    labels = [token["label"] for token in answer["tokens"]]
    assert schemes.validate(labels, scheme) == []
    assert all(schemes.tag_problem(label, scheme) is None for label in labels)
    found = schemes.spans(labels, scheme)
    assert found == schemes.spans(schemes.convert(labels, scheme, "IOB2"), "IOB2")
    tokens = answer["tokens"]
    expected = [(slot, tokens[s]["start"], tokens[e - 1]["end"]) for slot, s, e in found]
    assert [(slot["slot"], slot["start"], slot["end"]) for slot in answer["slots"]] == expected
    for slot in answer["slots"]:
        assert text[slot["start"]:slot["end"]] == slot["value"]


def test_tag_and_serve_answer_in_the_scheme(trained, tmp_path):
    scheme, data, model = trained
    texts = (data / "test" / "seq.in").read_text(encoding="utf-8").splitlines()[:40]
    tagged = [json.loads(line) for line in cli("tag", "--model", str(model), stdin="\n".join(texts) + "\n")
              .stdout.splitlines()]
    assert [answer["text"] for answer in tagged] == texts
    for answer in tagged:
        _check_answer(answer, scheme, answer["text"])
    assert any(answer["slots"] for answer in tagged)

    server = start_server(model, tmp_path / "server.log")
    try:
        with server.client() as http:
            for text, from_cli in zip(texts, tagged):
                response = http.post("/v1/tag", json={"text": text})
                assert response.status_code == 200, response.text
                answer = response.json()
                _check_answer(answer, scheme, text)
                assert [t["label"] for t in answer["tokens"]] == [t["label"] for t in from_cli["tokens"]]
                assert [(s["slot"], s["start"], s["end"]) for s in answer["slots"]] == \
                    [(s["slot"], s["start"], s["end"]) for s in from_cli["slots"]]
    finally:
        stop_server(server)

