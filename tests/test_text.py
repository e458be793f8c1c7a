"""Tokeniser: offsets, normalisation, config, style inference."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slotfill.errors import ConfigError
from slotfill.text.tokenizer import Token, TokenizerConfig, infer_tokenizer_config, normalize_token, norms, tokenize

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
SNIPS_STYLE = TokenizerConfig(split_clitics=True)


def test_offsets_and_norms_basic():
    text = "Book a table, for Four!"
    tokens = tokenize(text, TokenizerConfig())
    assert [t.norm for t in tokens] == ["book", "a", "table", "for", "four"]
    assert tokens[2] == Token("table", "table", 7, 12)
    assert tokens[4] == Token("Four", "four", 18, 22)
    assert all(text[t.start : t.end] == t.text for t in tokens)


def test_lowercase_off_keeps_case():
    assert norms("New York", TokenizerConfig(lowercase=False)) == ["New", "York"]


def test_abbreviations_keep_their_period():
    text = "flights to St. Louis at 7 a.m. or 8 p.m.. Dr. Smith said hi."
    assert norms(text) == [
        "flights", "to", "st.", "louis", "at", "7", "a.m.", "or", "8", "p.m.", "dr.", "smith", "said", "hi",
    ]  # fmt: skip
    assert norms("st. louis", TokenizerConfig(keep_abbreviations=False)) == ["st", "louis"]
    # a single letter keeps its period (initials), a normal word does not
    assert norms("plan b. ok.") == ["plan", "b.", "ok"]


def test_split_clitics_snips_style():
    assert norms("what's on at Gretchen's", SNIPS_STYLE) == ["what", "s", "on", "at", "gretchen", "s"]
    tokens = tokenize("what’s up", SNIPS_STYLE)  # typographic apostrophe too
    assert [(t.text, t.start, t.end) for t in tokens] == [("what", 0, 4), ("s", 5, 6), ("up", 7, 9)]
    # default keeps the apostrophe inside the word (ATIS style: i'd, o'clock)
    assert norms("i'd like it at 8 o'clock") == ["i'd", "like", "it", "at", "8", "o'clock"]


def test_edge_punctuation_and_quotes_are_stripped_inner_kept():
    text = "«Hello», (world) “quoted” 8:30 rock-n-roll ... ¿qué?"
    assert norms(text) == ["hello", "world", "quoted", "8:30", "rock-n-roll", "qué"]


def test_unicode_whitespace_and_invisible_characters():
    text = "a\u00a0b\u2003c\u3000d\u200be\ufeff \u200d\u200b f\u2028g"
    tokens = tokenize(text)
    assert [t.norm for t in tokens] == ["a", "b", "c", "de", "f", "g"]
    # the token's text is still the exact original substring (with the ZWSP inside)
    assert tokens[3].text == "d\u200be" and text[tokens[3].start : tokens[3].end] == "d\u200be"


def test_combining_marks_stay_with_base_and_compose():
    text = "cafe\u0301 \"e\u0301\" .\u0301x"
    tokens = tokenize(text)
    assert tokens[0].norm == "caf\u00e9"  # NFKC composes
    assert tokens[1].text == "e\u0301" and tokens[1].norm == "\u00e9"
    # a stripped punctuation mark takes its combining mark with it
    assert tokens[2].text == "x"


def test_cjk_emoji_fullwidth():
    text = "東京 に 行きたい 👍🏽 ＢＯＳＴＯＮ！"
    tokens = tokenize(text)
    assert [t.norm for t in tokens] == ["東京", "に", "行きたい", "👍🏽", "boston"]
    assert tokens[-1].text == "ＢＯＳＴＯＮ"  # fullwidth "！" counts as punctuation


def test_tokens_that_normalise_to_empty_are_dropped():
    assert tokenize("... !!! \u200b \u00ad") == []
    assert tokenize("") == []


def test_nfkc_whitespace_is_removed_from_norm():
    # NFKC("¨") is " \u0308": the space must not reach the model
    [token] = tokenize("x¨")
    assert " " not in token.norm and token.text == "x¨"


def test_unicode_form_none_keeps_characters():
    assert norms("ＡＢ", TokenizerConfig(unicode_form=None, lowercase=False)) == ["ＡＢ"]


def test_normalize_token_matches_tokenize_norms():
    assert normalize_token("ＢＯＳＴＯＮ") == "boston"
    assert normalize_token("St.") == "st."  # no stripping: the token is given
    assert normalize_token("ii:") == "ii:"
    assert normalize_token("\u200b") == ""
    assert normalize_token("Caf\u00e9", TokenizerConfig(lowercase=False, unicode_form="NFD")) == "Cafe\u0301"
    for token in tokenize("Ａ d\u200be Café s\u0301"):
        assert normalize_token(token.text) == token.norm


def test_config_roundtrip_and_unknown_key():
    config = TokenizerConfig(lowercase=False, split_clitics=True, strip_punctuation=",.")
    assert TokenizerConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="lowercse"):
        TokenizerConfig.from_dict({"lowercse": True})
    with pytest.raises(ConfigError, match="unicode_form"):
        TokenizerConfig(unicode_form="NFX")
    with pytest.raises(ConfigError, match="lowercase"):
        TokenizerConfig.from_dict({"lowercase": "yes"})


def test_infer_config_from_styles():
    atis_like = [["i'd", "like", "to", "fly", "to", "st.", "louis"], ["what's", "the", "fare"]] * 5
    config = infer_tokenizer_config(atis_like)
    assert config.lowercase and not config.split_clitics and config.keep_abbreviations

    snips_like = [["what", "s", "the", "weather"], ["play", "gretchen", "s", "song"], ["i", "d", "like"]] * 5
    config = infer_tokenizer_config(snips_like)
    assert config.split_clitics and not config.keep_abbreviations

    cased = [["Book", "a", "table", "in", "Paris"], ["Show", "me", "flights"]]
    assert infer_tokenizer_config(cased).lowercase is False

    # a corpus that writes ":" attached to tokens keeps it
    colons = [["star", "wars", "episode", "ii:", "attack"]] * 10
    assert ":" not in infer_tokenizer_config(colons).strip_punctuation
    assert ":" in infer_tokenizer_config(atis_like).strip_punctuation


@pytest.mark.skipif(not DATASETS.is_dir(), reason=f"benchmark data not found at {DATASETS}")
@pytest.mark.parametrize(("name", "max_mismatch"), [("atis", 0), ("snips", 0.005)])
def test_inferred_config_reproduces_benchmark_tokenisation(name, max_mismatch):
    """Tokenising the joined training tokens gives the tokens back (SNIPS: its own inconsistencies aside)."""
    lines = (DATASETS / name / "train" / "seq.in").read_text(encoding="utf-8").splitlines()
    token_lists = [line.split() for line in lines]
    config = infer_tokenizer_config(token_lists)
    mismatches = sum(norms(line, config) != tokens for line, tokens in zip(lines, token_lists))
    assert mismatches <= max_mismatch * len(lines)
    if name == "atis":
        assert config == TokenizerConfig(lowercase=True, keep_abbreviations=True, split_clitics=False)
    else:
        assert config.split_clitics and config.lowercase and not config.keep_abbreviations


# ------------------------------------------------------------------ properties

_configs = st.builds(
    TokenizerConfig,
    lowercase=st.booleans(),
    unicode_form=st.sampled_from([None, "NFC", "NFKC", "NFD", "NFKD"]),
    keep_abbreviations=st.booleans(),
    split_clitics=st.booleans(),
)
# Bias text towards the interesting characters: whitespace of all kinds, format
# characters, combining marks, punctuation, apostrophes, CJK, emoji.
_interesting = st.sampled_from(
    list(" \t\n\u00a0\u2003\u3000\u2028\u200b\u200d\ufeff\u00ad\u0301\u0308.,'’\"!?:;()«»…¨ﬁＡ！東👍🏽ßİ")
)
_alphabet = st.one_of(st.characters(), _interesting, st.sampled_from("abcst"))
_texts = st.text(alphabet=_alphabet, max_size=60)


@settings(max_examples=300, deadline=None)
@given(_texts, _configs)
def test_tokenize_invariants(text, config):
    tokens = tokenize(text, config)
    previous_end = 0
    for token in tokens:
        assert text[token.start : token.end] == token.text
        assert previous_end <= token.start < token.end
        previous_end = token.end
        assert token.norm
        assert not any(ch.isspace() for ch in token.norm)
        assert not any(unicodedata.category(ch) in ("Cf", "Cc") for ch in token.norm)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=8), max_size=10))
def test_plain_words_roundtrip(words):
    """Words of letters and digits joined by spaces come back as the same tokens."""
    config = TokenizerConfig(lowercase=False, unicode_form=None)
    text = " ".join(words)
    assert [t.text for t in tokenize(text, config)] == words
