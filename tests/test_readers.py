"""Readers and writers: folder, CoNLL, JSONL; every error names file and line."""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

import pytest

from slotfill.data import (
    Corpus,
    Example,
    load_corpus,
    load_split,
    read_conll,
    read_folder_split,
    read_jsonl,
    write_conll,
    write_folder_split,
    write_jsonl,
)
from slotfill.errors import DataError
from slotfill.text.tokenizer import TokenizerConfig

RESOURCES = Path(__file__).parent / "resources"
FOLDER = RESOURCES / "folder"
CONLL = RESOURCES / "conll"
JSONL = RESOURCES / "jsonl"
DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


@contextmanager
def raises_at(path: Path, line: int | None, match: str):
    """Expect a DataError whose message starts with ``path:line:`` and contains ``match``."""
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    with pytest.raises(DataError, match=match) as info:
        yield info
    assert str(info.value).startswith(prefix), f"{info.value} does not start with {prefix!r}"
    assert info.value.line == line


# ------------------------------------------------------------------ folder format


def test_read_folder_good():
    examples = read_folder_split(FOLDER / "good")
    assert [e.intent for e in examples] == ["atis_flight", "PlayMusic", "atis_flight#atis_airfare"]
    assert examples[0].tokens[-2:] == ("st.", "louis")
    assert examples[0].tags[-2:] == ("B-toloc.city_name", "I-toloc.city_name")
    # trailing spaces and CRLF make no empty tokens
    assert examples[1].tokens == ("play", "the", "beatles") and examples[1].tags == ("O", "B-artist", "I-artist")
    assert examples[2].source == f"{FOLDER / 'good' / 'seq.in'}:3"


def test_read_folder_without_label():
    examples = read_folder_split(FOLDER / "no_label")
    assert [e.intent for e in examples] == [None, None]
    assert examples[1].tags == ("O", "B-party_size")


@pytest.mark.parametrize(
    ("case", "file", "line", "match"),
    [
        ("count_mismatch", "seq.out", 2, "2 tags for 3 tokens"),
        ("line_mismatch", "seq.out", 3, "has 2 lines but seq.in has 3"),
        ("label_mismatch", "label", 3, "has 3 lines but seq.in has 2"),
        ("bad_tag", "seq.out", 2, r"token 5 'new': 'I-city' follows 'O'.*; to read it as conlleval does, train "
                                  r"with --set repair=true \(repair=True in Python\)$"),
        ("unknown_prefix", "seq.out", 1, "unknown prefix 'X'"),
        ("bad_utf8", "seq.in", 2, "not valid UTF-8"),
        ("empty_utterance", "seq.in", 2, "empty utterance"),
        ("empty_intent", "label", 2, "empty intent"),
    ],
)
def test_read_folder_errors(case, file, line, match):
    with raises_at(FOLDER / case / file, line, match):
        read_folder_split(FOLDER / case)


def test_read_folder_missing_files(tmp_path):
    with raises_at(tmp_path / "nope", None, "split folder not found"):
        read_folder_split(tmp_path / "nope")
    (tmp_path / "seq.in").write_text("a\n")
    with raises_at(tmp_path / "seq.out", None, "file not found"):
        read_folder_split(tmp_path)


def test_read_folder_repair():
    examples = read_folder_split(FOLDER / "bad_tag", repair=True)
    assert examples[1].tags == ("O", "O", "B-city", "O", "B-city", "I-city")
    # repair cannot invent a prefix
    with raises_at(FOLDER / "unknown_prefix" / "seq.out", 1, "unknown prefix"):
        read_folder_split(FOLDER / "unknown_prefix", repair=True)


def test_read_folder_in_other_scheme(tmp_path):
    write_folder_split([Example(("a", "b", "c"), ("S-x", "B-y", "E-y"))], tmp_path)
    assert read_folder_split(tmp_path, scheme="BIOES")[0].tags == ("S-x", "B-y", "E-y")
    with raises_at(tmp_path / "seq.out", 1, "unknown prefix 'S'"):
        read_folder_split(tmp_path, scheme="IOB2")


# ------------------------------------------------------------------ CoNLL


def test_read_conll_good():
    examples = read_conll(CONLL / "good.conll")
    assert len(examples) == 3
    first, second, third = examples
    assert first.tokens == ("book", "a", "table", "for", "four")
    assert first.tags[-1] == "B-party_size"  # LAST column is the tag
    assert first.intent == "book_table" and first.source == f"{CONLL / 'good.conll'}:4"
    assert second.intent == "find_restaurant"  # other "# key = value" comments are ignored
    assert second.tags == ("B-cuisine", "O", "O", "B-location", "I-location")
    # "# O" is a token line (token "#"), not a comment; several blank lines are fine
    assert third.tokens == ("#", "hash") and third.intent is None


@pytest.mark.parametrize(
    ("name", "line", "match"),
    [
        ("bad_tag.conll", 4, r"token 1 'new': 'I-city' follows the start"),
        ("one_column.conll", 2, "expected a token and a tag"),
        ("empty_intent_sentence.conll", 1, "empty utterance"),
        ("bad_utf8.conll", 3, "not valid UTF-8"),
        ("missing.conll", None, "file not found"),
    ],
)
def test_read_conll_errors(name, line, match):
    with raises_at(CONLL / name, line, match):
        read_conll(CONLL / name)


def test_read_conll_repair():
    examples = read_conll(CONLL / "bad_tag.conll", repair=True)
    assert examples[1].tags == ("B-city", "I-city")


# ------------------------------------------------------------------ JSONL


def test_read_jsonl_good():
    examples = read_jsonl(JSONL / "good.jsonl", TokenizerConfig())
    assert len(examples) == 3  # the trailing blank line is ignored
    first = examples[0]
    assert first.tokens == ("book", "a", "table", "at", "the", "golden", "dragon", "tomorrow")
    assert first.tags == ("O", "O", "O", "O", "B-restaurant_name", "I-restaurant_name", "I-restaurant_name", "B-date")
    assert first.intent == "book_table" and first.source == f"{JSONL / 'good.jsonl'}:1"
    assert examples[1].tags == ("O", "O") and examples[1].intent is None
    # a span may include stripped punctuation ("São Paulo,") but not cut a token
    assert examples[2].tokens[-3:] == ("são", "paulo", "please")
    assert examples[2].tags == ("O", "B-cuisine", "O", "B-location", "I-location", "O")


def test_read_jsonl_other_scheme_and_case():
    examples = read_jsonl(JSONL / "good.jsonl", TokenizerConfig(lowercase=False), scheme="BIOES")
    assert examples[0].tokens[4:7] == ("The", "Golden", "Dragon")
    assert examples[0].tags[4:] == ("B-restaurant_name", "I-restaurant_name", "E-restaurant_name", "S-date")


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("bad_json", "invalid JSON"),
        ("not_object", "expected a JSON object, got list"),
        ("no_text", "'text'"),
        ("inside_token", r"cuts the token 'boston' \[7, 13\)"),
        ("overlap", r"entities .* overlap"),
        ("out_of_range", "outside the text"),
        ("empty_span", "is empty"),
        ("no_token", "covers no token"),
        ("empty_text", "empty utterance"),
        ("bad_label", "'label'"),
        ("bad_utf8", "not valid UTF-8"),
    ],
)
def test_read_jsonl_errors(name, match):
    path = JSONL / f"{name}.jsonl"
    line = 2 if name == "bad_utf8" else 3
    with raises_at(path, line, match):
        read_jsonl(path)


# ------------------------------------------------------------------ load_split / load_corpus


def test_load_split_dispatch(tmp_path):
    assert len(load_split(FOLDER / "good")) == 3
    assert len(load_split(CONLL / "good.conll")) == 3
    assert len(load_split(JSONL / "good.jsonl")) == 3
    (tmp_path / "data.csv").write_text("a,b\n")
    with raises_at(tmp_path / "data.csv", None, "unknown data format '.csv'"):
        load_split(tmp_path / "data.csv")


def test_load_corpus_folder_with_dev_alias(tmp_path):
    shutil.copytree(FOLDER / "good", tmp_path / "train")
    shutil.copytree(FOLDER / "no_label", tmp_path / "dev")
    corpus = load_corpus(tmp_path)
    assert isinstance(corpus, Corpus)
    assert (len(corpus.train), len(corpus.valid), corpus.test) == (3, 2, [])


def test_load_corpus_files(tmp_path):
    shutil.copy(JSONL / "good.jsonl", tmp_path / "train.jsonl")
    shutil.copy(CONLL / "good.conll", tmp_path / "test.conll")
    corpus = load_corpus(tmp_path, tokenizer_config=TokenizerConfig(lowercase=False))
    assert corpus.train[0].tokens[0] == "Book"
    assert len(corpus.test) == 3 and corpus.valid == []


def test_load_corpus_errors(tmp_path):
    layout = ("expected a data folder holding train, and optionally valid (or dev) and test, each a folder of "
              "seq.in/seq.out[/label], a .jsonl file or a CoNLL file (.conll, .txt, .bio, .iob), or one such file "
              "or folder alone, read as the training data")
    with raises_at(tmp_path / "missing", None, "no such data folder or file") as info:
        load_corpus(tmp_path / "missing")
    assert str(info.value) == f"{tmp_path / 'missing'}: no such data folder or file; {layout}"
    (tmp_path / "valid.jsonl").write_text("")
    with raises_at(tmp_path, None, r"no training data: looked for train/seq.in, train.jsonl, train.conll") as info:
        load_corpus(tmp_path)
    assert str(info.value).endswith(f"; {layout}")
    (tmp_path / "notes.md").write_text("# not data\n")
    with raises_at(tmp_path / "notes.md", None, r"unknown data format '.md'"):
        load_corpus(tmp_path / "notes.md")
    (tmp_path / "train.jsonl").write_text("\n")
    with raises_at(tmp_path / "train.jsonl", None, "training data holds no examples"):
        load_corpus(tmp_path)
    shutil.copy(JSONL / "good.jsonl", tmp_path / "train.jsonl")
    shutil.copy(CONLL / "good.conll", tmp_path / "train.conll")
    with raises_at(tmp_path, None, "ambiguous train data: train.jsonl, train.conll"):
        load_corpus(tmp_path)


@pytest.mark.parametrize("source", [JSONL / "good.jsonl", CONLL / "good.conll", FOLDER / "good"],
                         ids=["jsonl file", "conll file", "split folder"])
def test_one_file_or_split_folder_is_read_as_the_training_data(source):
    """--data some/train.jsonl (or a CoNLL file, or a folder of seq.in/seq.out): the training data alone."""
    corpus = load_corpus(source)
    assert corpus.train == load_split(source) and len(corpus.train) >= 2
    assert corpus.valid == [] and corpus.test == []


def test_load_corpus_propagates_repair(tmp_path):
    shutil.copytree(FOLDER / "bad_tag", tmp_path / "train")
    with raises_at(tmp_path / "train" / "seq.out", 2, "follows"):
        load_corpus(tmp_path)
    assert load_corpus(tmp_path, repair=True).train[1].tags[4] == "B-city"


# ------------------------------------------------------------------ writers

EXAMPLES = [
    Example(("book", "a", "table", "at", "the", "golden", "dragon"), ("O", "O", "O", "O", "B-r", "I-r", "I-r"), "book"),
    # one token per Han or Kana character, as the tokenizer reads the JSONL text back
    Example(("東", "京", "に", "st.", "louis"), ("B-city", "I-city", "O", "B-city", "I-city"), "atis_flight#atis_airfare"),
]


def _strip_sources(examples):
    return [(e.tokens, e.tags, e.intent) for e in examples]


def test_write_read_roundtrips(tmp_path):
    write_folder_split(EXAMPLES, tmp_path / "folder")
    assert _strip_sources(read_folder_split(tmp_path / "folder")) == _strip_sources(EXAMPLES)
    write_conll(EXAMPLES, tmp_path / "x.conll")
    assert _strip_sources(read_conll(tmp_path / "x.conll")) == _strip_sources(EXAMPLES)
    write_jsonl(EXAMPLES, tmp_path / "x.jsonl")
    assert _strip_sources(read_jsonl(tmp_path / "x.jsonl")) == _strip_sources(EXAMPLES)
    assert '"text": "東 京 に st. louis"' in (tmp_path / "x.jsonl").read_text(encoding="utf-8")
    # no temporary files left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["folder", "x.conll", "x.jsonl"]


def test_write_folder_without_intents_removes_stale_label(tmp_path):
    write_folder_split(EXAMPLES, tmp_path)
    assert (tmp_path / "label").exists()
    write_folder_split([Example(("a",), ("O",))], tmp_path)
    assert not (tmp_path / "label").exists()
    with pytest.raises(ValueError, match="all examples or none"):
        write_folder_split([Example(("a",), ("O",), "x"), Example(("b",), ("O",))], tmp_path)


def test_write_refuses_tokens_with_whitespace(tmp_path):
    with pytest.raises(ValueError, match="whitespace"):
        write_conll([Example(("new york",), ("B-city",))], tmp_path / "x.conll")
    assert not (tmp_path / "x.conll").exists()


def test_example_checks_lengths_and_coerces_tuples():
    example = Example(["a", "b"], ["O", "B-x"])
    assert example.tokens == ("a", "b") and hash(example)
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        Example(("a", "b"), ("O",))


# ------------------------------------------------------------------ real benchmarks


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"benchmark data not found at {DATASETS}")
@pytest.mark.parametrize(("name", "n_train", "n_test"), [("atis", 4478, 893), ("snips", 13084, 700)])
def test_real_benchmarks(name, n_train, n_test):
    corpus = load_corpus(DATASETS / name)
    assert (len(corpus.train), len(corpus.test)) == (n_train, n_test)
    assert all(e.tokens and len(e.tokens) == len(e.tags) and "" not in e.tokens for e in corpus.train)
    if name == "atis":
        assert "atis_flight#atis_airfare" in {e.intent for e in corpus.train}
        assert any("B-fromloc.city_name" in e.tags for e in corpus.train)
    else:
        # SNIPS lines end with spaces: the token and tag counts still agree
        raw = (DATASETS / name / "train" / "seq.in").read_text(encoding="utf-8").splitlines()
        assert any(line.endswith(" ") for line in raw)
        assert {e.intent for e in corpus.train} == {
            "AddToPlaylist", "BookRestaurant", "GetWeather", "PlayMusic", "RateBook", "SearchCreativeWork",
            "SearchScreeningEvent",
        }  # fmt: skip


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"benchmark data not found at {DATASETS}")
def test_real_benchmark_error_names_file_and_line(tmp_path):
    """One dropped tag deep inside ATIS train is reported at its exact line."""
    split = tmp_path / "train"
    shutil.copytree(DATASETS / "atis" / "train", split)
    lines = (split / "seq.out").read_text(encoding="utf-8").split("\n")
    lines[2999] = lines[2999].rsplit(" ", 1)[0]
    (split / "seq.out").write_text("\n".join(lines), encoding="utf-8")
    with raises_at(split / "seq.out", 3000, "tags for"):
        read_folder_split(split)
