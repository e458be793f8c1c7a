"""slotfill data convert: Rasa, snips-nlu, doccano and HF token classification into slotfill's formats."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

from slotfill.data import Example, load_corpus, load_split
from slotfill.data.importers import (
    convert,
    read_doccano,
    read_rasa,
    read_snips,
    read_source,
    read_token_classification,
)
from slotfill.errors import DataError
from slotfill.text.tokenizer import normalize_token

from .conftest import REPO

RESOURCES = Path(__file__).parent / "resources" / "importers"
RASA = RESOURCES / "nlu.yml"
SNIPS = RESOURCES / "snips.json"
DOCCANO = RESOURCES / "doccano.jsonl"
HF = RESOURCES / "hf.jsonl"
INPUTS = {"rasa": RASA, "snips": SNIPS, "doccano": DOCCANO, "tokens": HF}


def plain(examples: list[Example]) -> list[tuple]:
    return [(e.tokens, e.tags, e.intent) for e in examples]


@contextmanager
def raises_at(path: Path, line: int | None, match: str):
    """A DataError whose message starts with ``path:line:`` and contains ``match`` (a plain string)."""
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    with pytest.raises(DataError) as info:
        yield info
    assert str(info.value).startswith(prefix), f"{info.value} does not start with {prefix!r}"
    assert match in str(info.value), str(info.value)
    assert "\n" not in str(info.value)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ each source


def test_rasa_reads_all_three_annotation_forms_and_skips_other_sections():
    notes = []
    examples = read_rasa(RASA, note=notes.append)
    assert plain(examples) == [
        (("fly", "from", "boston", "to", "denver"), ("O", "O", "B-city", "O", "B-city"), "book_flight"),
        (("a", "flight", "to", "nyc", "please"), ("O", "O", "O", "B-city", "O"), "book_flight"),
        (("tomorrow", "to", "chicago"), ("B-date", "O", "B-city"), "book_flight"),
        (("hello", "there"), ("O", "O"), "greet"),
        (("hi",), ("O",), "greet"),
    ]
    assert [e.source for e in examples] == [f"{RASA}:{n}" for n in (6, 7, 8, 12, 13)]
    assert notes == [f"{RASA}: skipped 1 lookup item(s), 1 regex item(s), 1 synonym item(s), "
                     "1 other section(s) (responses): not training examples"]


def test_rasa_roles_become_suffixes_with_keep_roles():
    examples = read_rasa(RASA, keep_roles=True)
    assert examples[0].tags == ("O", "O", "B-city", "O", "B-city.destination")
    assert examples[2].tags == ("B-date", "O", "B-city.destination")


def test_snips_slot_names_are_the_labels():
    assert plain(read_snips(SNIPS)) == [
        (("play", "the", "beatles", "on", "spotify"), ("O", "B-artist", "I-artist", "O", "B-service"), "PlayMusic"),
        (("play", "some", "music"), ("O", "O", "O"), "PlayMusic"),
        (("weather", "in", "paris", "tomorrow"), ("O", "O", "B-city", "O"), "GetWeather"),
    ]


def test_doccano_both_label_forms_and_intents_from_cats_or_intent():
    examples = read_doccano(DOCCANO)
    assert plain(examples) == [
        (("book", "a", "table", "for", "4", "at", "7pm"), ("O", "O", "O", "O", "B-party_size", "O", "B-time"),
         "book_table"),
        (("cancel", "my", "booking", "at", "luigi's"), ("O", "O", "O", "O", "B-restaurant"), "cancel"),
        (("what's", "open", "now"), ("O", "O", "O"), "search"),
    ]
    assert [e.source for e in examples] == [f"{DOCCANO}:{n}" for n in (1, 2, 3)]


EXPECTED_HF = [
    (("EU", "rejects", "German", "call"), ("B-ORG", "O", "B-MISC", "O"), None),
    (("Peter", "Blackburn", "in", "New", "York"), ("B-PER", "I-PER", "O", "B-LOC", "I-LOC"), None),
]


def test_token_classification_with_the_dataset_info_sidecar():
    assert plain(read_token_classification(HF)) == EXPECTED_HF


def test_token_classification_with_a_labels_file_and_a_json_list(tmp_path):
    records = [json.loads(line) for line in HF.read_text().splitlines()]
    records[1]["intent"] = "news"
    data = write(tmp_path / "train.json", json.dumps(records, indent=1))
    labels = write(tmp_path / "labels.txt", "O\nB-PER\nI-PER\nB-ORG\nI-ORG\nB-LOC\nI-LOC\nB-MISC\nI-MISC\n")
    examples = read_token_classification(data, labels)
    assert plain(examples) == [EXPECTED_HF[0], (*EXPECTED_HF[1][:2], "news")]


def test_token_classification_without_label_names_says_how_to_give_them(tmp_path):
    data = write(tmp_path / "train.jsonl", HF.read_text())
    with raises_at(data, None, "pass --labels FILE"):
        read_token_classification(data)


# ------------------------------------------------------------------ round trips through the project's reader


@pytest.mark.parametrize("fmt, name", [("jsonl", "train.jsonl"), ("conll", "train.conll"), ("folder", "train")])
@pytest.mark.parametrize("source", sorted(INPUTS))
def test_converted_data_reads_back_as_the_same_examples(tmp_path, source, fmt, name):
    out = tmp_path / "data" / name
    examples, written = convert(source, INPUTS[source], out)  # the format follows from --out
    assert written == fmt
    back = load_split(out)
    expected = plain(examples)
    if fmt == "jsonl":  # JSONL holds text: the reader gives each token's norm (lower-cased)
        expected = [(tuple(normalize_token(t) for t in tokens), tags, intent) for tokens, tags, intent in expected]
    assert plain(back) == expected
    assert plain(load_corpus(out).train) == expected  # as `slotfill train --data OUT` reads it
    assert [p.name for p in out.parent.iterdir()] == [name]  # no temp files left beside it


def test_folder_output_replaces_an_existing_split_folder(tmp_path):
    out = tmp_path / "train"
    convert("snips", SNIPS, out)
    convert("doccano", DOCCANO, out)
    assert plain(load_split(out)) == plain(read_doccano(DOCCANO))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train"]


def test_folder_output_refuses_a_folder_holding_other_files(tmp_path):
    out = tmp_path / "train"
    out.mkdir()
    write(out / "notes.txt", "mine")
    with raises_at(out, None, "is not a split folder"):
        convert("snips", SNIPS, out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_folder_output_needs_all_or_no_intents(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "a b", "cats": ["x"]}\n{"text": "c d"}\n')
    with pytest.raises(DataError, match="all examples or none must have an intent"):
        convert("doccano", data, tmp_path / "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl"]


# ------------------------------------------------------------------ errors: file, line, what is wrong


def test_a_span_cutting_a_token_names_both_edges_and_the_token(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "fly to Boston", "label": []}\n'
                                       '{"text": "fly to Boston", "label": [[9, 13, "city"]]}\n')
    with raises_at(data, 2, "entity 'city' [9, 13) cuts the token 'Boston' [7, 13)"):
        read_doccano(data)


def test_a_rasa_annotation_cutting_a_token_names_the_line(tmp_path):
    data = write(tmp_path / "nlu.yml", 'version: "3.1"\nnlu:\n- intent: fly\n  examples: |\n'
                                       "    - fly to boston\n    - fly to bo[ston](city)\n")
    with raises_at(data, 6, "entity 'city' [9, 13) cuts the token 'boston' [7, 13)"):
        read_rasa(data)


def test_overlapping_spans_are_an_error(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "new york city", "label": [[0, 8, "city"], [4, 13, "place"]]}\n')
    with raises_at(data, 1, "entities 'city' [0, 8) and 'place' [4, 13) overlap"):
        read_doccano(data)


def test_a_record_without_text_is_an_error(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "hi", "label": []}\n\n{"label": [[0, 2, "x"]]}\n')
    with raises_at(data, 3, "record has no text"):
        read_doccano(data)


def test_a_snips_utterance_without_text_names_the_intent_and_index(tmp_path):
    dataset = json.loads(SNIPS.read_text())
    dataset["intents"]["GetWeather"]["utterances"].append({"data": [{"entity": "x", "slot_name": "x"}]})
    data = write(tmp_path / "snips.json", json.dumps(dataset))
    with raises_at(data, None, "intent 'GetWeather', utterance 1: chunk 0 has no text"):
        read_snips(data)


def test_an_unknown_label_index_is_an_error(tmp_path):
    data = write(tmp_path / "hf.jsonl", HF.read_text() + '{"tokens": ["Paris"], "ner_tags": [9]}\n')
    shutil.copy(RESOURCES / "dataset_info.json", tmp_path)
    with raises_at(data, 3, "ner_tags[0] = 9 is not a label index (0..8)"):
        read_token_classification(data)


def test_invalid_bio_tags_are_an_error(tmp_path):
    data = write(tmp_path / "hf.jsonl", '{"tokens": ["in", "York"], "ner_tags": [0, 6]}\n')
    shutil.copy(RESOURCES / "dataset_info.json", tmp_path)
    with raises_at(data, 1, "token 1 'York'"):
        read_token_classification(data)


def test_malformed_yaml_names_the_line(tmp_path):
    data = write(tmp_path / "nlu.yml", 'version: "3.1"\nnlu:\n- intent: a\n  examples: [unclosed\n')
    with pytest.raises(DataError, match="invalid YAML") as info:
        read_rasa(data)
    assert str(info.value).startswith(f"{data}:") and info.value.line is not None


@pytest.mark.parametrize("source, name, text, line", [
    ("snips", "snips.json", '{"intents": {\n  "A": {"utterances": [}\n}', 2),
    ("doccano", "d.jsonl", '{"text": "ok"}\n{"text": "broken"\n', 2),
    ("tokens", "hf.jsonl", '{"tokens": ["a"], "ner_tags": [0]}\n{"tokens": [\n', 2),
])
def test_malformed_json_names_the_line(tmp_path, source, name, text, line):
    data = write(tmp_path / name, text)
    shutil.copy(RESOURCES / "dataset_info.json", tmp_path)
    with raises_at(data, line, "invalid JSON"):
        read_source(source, data)


@pytest.mark.parametrize("name", ["out.jsonl", "out.conll", "out"])
def test_nothing_is_written_on_error(tmp_path, name):
    data = write(tmp_path / "d.jsonl", '{"text": "fine", "label": []}\n{"text": "Boston", "label": [[1, 6, "x"]]}\n')
    out = tmp_path / "o" / name
    with raises_at(data, 2, "cuts the token"):
        convert("doccano", data, out)
    assert not out.exists() and not (tmp_path / "o").exists()


def test_an_existing_output_file_is_unchanged_on_error(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "a b", "label": [[0, 3, "x"], [2, 3, "y"]]}\n')
    out = write(tmp_path / "train.jsonl", "precious\n")
    with raises_at(data, 1, "overlap"):
        convert("doccano", data, out)
    assert out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d.jsonl", "train.jsonl"]


# ------------------------------------------------------------------ the command line


def slotfill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_cli_converts_rasa_with_a_note_on_what_it_skipped(tmp_path):
    out = tmp_path / "train.conll"
    result = slotfill("data", "convert", "--from", "rasa", str(RASA), "--out", str(out), "--keep-roles")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"wrote 5 examples to {out} (conll)\n"
    assert result.stderr.count("\n") == 1 and "slotfill data: note:" in result.stderr
    assert "1 lookup item(s)" in result.stderr
    assert load_split(out)[0].tags == ("O", "O", "B-city", "O", "B-city.destination")


def test_cli_tokens_with_labels_into_a_folder(tmp_path):
    data = write(tmp_path / "hf.jsonl", HF.read_text())
    labels = write(tmp_path / "labels.txt", "O\nB-PER\nI-PER\nB-ORG\nI-ORG\nB-LOC\nI-LOC\nB-MISC\nI-MISC\n")
    out = tmp_path / "data" / "train"
    result = slotfill("data", "convert", "--from", "tokens", str(data), "--labels", str(labels), "--out", str(out),
                      "--format", "folder")
    assert result.returncode == 0, result.stderr
    assert plain(load_corpus(tmp_path / "data").train) == EXPECTED_HF


def test_cli_error_is_one_line_with_exit_2_and_writes_nothing(tmp_path):
    data = write(tmp_path / "d.jsonl", '{"text": "fly to Boston", "label": [[9, 13, "city"]]}\n')
    out = tmp_path / "train.jsonl"
    result = slotfill("data", "convert", "--from", "doccano", str(data), "--out", str(out))
    assert result.returncode == 2
    assert result.stderr == (f"slotfill data: error: {data}:1: entity 'city' [9, 13) cuts the token 'Boston' "
                             "[7, 13)\n")
    assert not out.exists()


def test_tokens_that_jsonl_text_would_lose_are_refused_for_jsonl_but_fine_for_conll(tmp_path):
    data = write(tmp_path / "hf.jsonl", '{"tokens": ["EU", "rejects", "it", "."], "ner_tags": [3, 0, 0, 0]}\n')
    shutil.copy(RESOURCES / "dataset_info.json", tmp_path)
    with raises_at(data, 1, "token 3 '.' would not survive JSONL's re-tokenisation"):
        convert("tokens", data, tmp_path / "train.jsonl")
    assert not (tmp_path / "train.jsonl").exists()
    convert("tokens", data, tmp_path / "train.conll")
    assert load_split(tmp_path / "train.conll")[0].tokens == ("EU", "rejects", "it", ".")
