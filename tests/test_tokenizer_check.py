"""The train/serve tokenizer check: the typed text, the mismatch rate, and training refusing a tokenizer that
would feed the model other tokens at serving time than in training."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from slotfill.data import Example, load_corpus, write_folder_split
from slotfill.errors import ConfigError, DataError
from slotfill.text.tokenizer import TokenizerConfig, infer_tokenizer_config
from training.config import TrainConfig
from training.prepare import normalise_examples
from training.tokenizer_check import check_tokenizer, enforce, typed_text

from .conftest import REPO, SHARED_DATASETS

JAPANESE = REPO / "tests" / "resources" / "bioes_japanese"
DEFAULT_LIMIT = TrainConfig().max_tokenizer_mismatch


def test_typed_text_spaces_words_not_unspaced_scripts():
    assert typed_text(["我", "想", "买", "iphone15", "和", "ipad", "pro", "吗"]) == "我想买iphone15和ipad pro吗"
    assert typed_text(["明", "日", "の", "YOASOBI", "ライブ"]) == "明日のYOASOBIライブ"
    # a Thai token ending in a tone mark is still a Thai character
    assert typed_text(["ไม่", "ok", "ครับ"]) == "ไม่okครับ"
    assert typed_text(["book", "a", "flight"]) == "book a flight"
    assert typed_text([]) == ""
    # a corpus that split every word into characters was typed without those spaces
    letters = ["我", "买", "i", "p", "h", "o", "n", "e", "1", "5"]
    assert typed_text(letters) == "我买i p h o n e 1 5"
    assert typed_text(letters, glue_characters=True) == "我买iphone15"


def _examples(token_lists: list[list[str]]) -> list[Example]:
    return [Example(tokens, ["O"] * len(tokens), None, f"train/seq.in:{i + 1}") for i, tokens in enumerate(token_lists)]


def _check(token_lists: list[list[str]], tokenizer: TokenizerConfig):
    examples = _examples(token_lists)
    glue = infer_tokenizer_config(token_lists).char_tokens == "all"
    return check_tokenizer(examples, normalise_examples(examples, tokenizer), tokenizer, glue_characters=glue,
                           max_rate=0.01)


def test_check_counts_sentences_the_tokenizer_does_not_reproduce():
    data = [list("我想订一张明天去北京的机票"), ["我", "想", "买", "iphone15"], ["播", "放", "lisa", "的", "歌"],
            list("帮我查一下天气")]
    assert _check(data, TokenizerConfig()).mismatched == 0
    check = _check(data, TokenizerConfig(char_tokens="all"))  # words data, every character a token
    assert (check.sentences, check.mismatched, check.rate) == (4, 2, 0.5) and not check.passed
    assert check.examples[0] == {"source": "train/seq.in:2", "text": "我想买iphone15",
                                 "tokens": ["我", "想", "买", "iphone15"], "tokenized": ["我", "想", "买", *"iphone15"]}
    # the other way round: data that split Latin words into letters, a tokenizer that keeps words
    letters = [["我", "想", "买", *"iphone15"], ["播", "放", *"lisa", "的", "歌"], list("帮我查一下天气")] * 2
    assert _check(letters, TokenizerConfig(char_tokens="all")).mismatched == 0
    check = _check(letters, TokenizerConfig())
    assert check.mismatched == 4 and check.examples[1]["tokenized"] == ["播", "放", "lisa", "的", "歌"]
    # a word-segmented Chinese corpus: serving text would come one character a token
    assert _check([["我", "想", "订", "机票"], ["北京", "天气"]], TokenizerConfig()).rate == 1.0


def test_enforce_raises_one_line_naming_the_data_rate_and_setting(tmp_path):
    check = _check([["我", "想", "买", "iphone15"], list("天气")], TokenizerConfig(char_tokens="all"))
    with pytest.raises(DataError) as error:
        enforce(check, tmp_path)
    message = str(error.value)
    assert "\n" not in message and message.startswith(f"{tmp_path}: tokenizer check: 1/2 training sentences (50.00%)")
    assert "limit 1.00%, max_tokenizer_mismatch" in message and "'我想买iphone15' gives [我 想 买 i p h o n e 1 5]" in message
    enforce(_check([list("天气")], TokenizerConfig()), tmp_path)  # passes: nothing raised


def test_max_tokenizer_mismatch_is_a_validated_setting():
    config = TrainConfig()
    config.apply_overrides(["max_tokenizer_mismatch=0.2"])
    assert config.max_tokenizer_mismatch == 0.2
    config.max_tokenizer_mismatch = 1.5
    with pytest.raises(ConfigError, match=r"max_tokenizer_mismatch: must be in \[0, 1\], got 1.5"):
        config.validate()


# The rates written in training/config.py (max_tokenizer_mismatch) and README: the default limit must sit
# above every correctly inferred tokenizer and below every mismatched one.
BENCHMARK_RATES = [
    ("atis", {}, 0.0, 0.0),
    ("snips", {}, 0.0029, 0.0031),
    ("atis", {"keep_abbreviations": False}, 0.023, 0.025),
    ("atis", {"split_clitics": True}, 0.09, 0.093),
    ("snips", dataclasses.asdict(TokenizerConfig()), 0.022, 0.023),
    ("atis", {"char_tokens": "all"}, 1.0, 1.0),
]


@pytest.mark.skipif(not SHARED_DATASETS.is_dir(), reason=f"benchmark data not found at {SHARED_DATASETS}")
@pytest.mark.parametrize(("name", "override", "low", "high"), BENCHMARK_RATES)
def test_benchmark_mismatch_rates(name, override, low, high):
    train = load_corpus(SHARED_DATASETS / name).train
    inferred = infer_tokenizer_config([e.tokens for e in train])
    tokenizer = dataclasses.replace(inferred, **override)
    check = check_tokenizer(train, normalise_examples(train, tokenizer), tokenizer, glue_characters=False,
                            max_rate=DEFAULT_LIMIT)
    assert low <= check.rate <= high
    assert check.passed == (not override)


def slotfill(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "training.cli", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def _letters_split(tmp_path: Path) -> Path:
    """bioes_japanese with its Latin artist names split into letters (tags in BIOES), as char-level corpora
    are written."""
    corpus = load_corpus(JAPANESE, scheme="BIOES")
    for split in ("train", "valid", "test"):
        examples = []
        for example in getattr(corpus, split):
            tokens, tags = [], []
            for token, tag in zip(example.tokens, example.tags):
                if token.isascii() and len(token) > 1:
                    slot = tag[2:]
                    tokens += list(token)
                    tags += [f"B-{slot}", *[f"I-{slot}"] * (len(token) - 2), f"E-{slot}"]
                else:
                    tokens.append(token)
                    tags.append(tag)
            examples.append(dataclasses.replace(example, tokens=tokens, tags=tags))
        write_folder_split(examples, tmp_path / "data" / split)
    return tmp_path / "data"


@pytest.mark.parametrize("case", ["words data, every character a token", "letters data, words kept"])
def test_training_refuses_a_mismatched_tokenizer_in_one_line_writing_nothing(case, tmp_path):
    if case.startswith("words"):
        data, setting = JAPANESE, "tokenizer.char_tokens=all"
        example = "'YOASOBIの歌を流して' gives [y o a s o b i の 歌 を 流 し て], the data has [yoasobi の 歌 を 流 し て]"
    else:
        data, setting = _letters_split(tmp_path), "tokenizer.char_tokens=script"
        example = "'YOASOBIの歌を流して' gives [yoasobi の 歌 を 流 し て], the data has [y o a s o b i の 歌 を 流 し て]"
    out = tmp_path / "model"
    result = slotfill("train", "--data", str(data), "--out", str(out), "--set", "scheme=BIOES", setting)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"slotfill train: error: {data}: tokenizer check: 4/60 training sentences (6.67%) "
                               "tokenise differently from their text as typed (limit 1.00%")
    assert example in lines[0]
    assert not out.exists()


def test_a_raised_limit_trains_and_reports_the_mismatch(tmp_path):
    out = tmp_path / "model"
    result = slotfill("train", "--data", str(JAPANESE), "--out", str(out), "--set", "scheme=BIOES",
                      "tokenizer.char_tokens=all", "max_tokenizer_mismatch=0.1", "epochs=1", "hidden_size=16",
                      "word_dim=8", "char_dim=8", "char_channels=8", "threads=1", "export_onnx=false",
                      "calibrate=false")
    assert result.returncode == 0, result.stderr
    assert "tokenizer check: 4/60 training sentences (6.67%)" in result.stderr
    check = json.loads((out / "report.json").read_text(encoding="utf-8"))["tokenizer_check"]
    assert (check["sentences"], check["mismatched"], check["max_rate"]) == (60, 4, 0.1)
    assert check["rate"] == pytest.approx(4 / 60)
    assert [e["text"][:7] for e in check["examples"]] == ["YOASOBI", "YOASOBI", "Perfume"]
    assert check["examples"][0]["source"] == f"{JAPANESE}/train/seq.in:9"
