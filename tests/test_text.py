"""Tokeniser: offsets, normalisation, config, style inference."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slotfill.errors import ConfigError
from slotfill.text.tokenizer import (
    Token,
    TokenizerConfig,
    infer_tokenizer_config,
    is_mark,
    normalize_token,
    norms,
    tokenize,
    writes_without_spaces,
)

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
    assert [t.norm for t in tokens] == ["東", "京", "に", "行", "き", "た", "い", "👍🏽", "boston"]
    assert tokens[-1].text == "ＢＯＳＴＯＮ"  # fullwidth "！" counts as punctuation


def _spans(text: str, config: TokenizerConfig | None = None) -> list[tuple[str, int, int]]:
    tokens = tokenize(text, config)
    assert all(text[t.start : t.end] == t.text for t in tokens)
    return [(t.text, t.start, t.end) for t in tokens]


def test_han_is_one_token_per_character():
    text = "我想订一张明天去北京的机票"
    assert _spans(text) == [(ch, i, i + 1) for i, ch in enumerate(text)]
    # Extension A (㐀), Extension B (𠀀, two UTF-16 units but one Python character), a compatibility
    # ideograph (豈, NFKC -> 豈), a Kangxi radical (⼀, NFKC -> 一), the iteration mark 々
    assert [(t.text, t.norm) for t in tokenize("㐀𠀀豈⼀人々")] == [
        ("㐀", "㐀"), ("𠀀", "𠀀"), ("豈", "\u8c48"), ("⼀", "一"), ("人", "人"), ("々", "々")]


def test_kana_one_token_per_character_with_sound_marks_kept():
    assert _spans("東京から大阪まで") == [(ch, i, i + 1) for i, ch in enumerate("東京から大阪まで")]
    # the prolonged sound mark is a character of its own, as in the training data
    assert norms("ラーメン") == ["ラ", "ー", "メ", "ン"]
    # halfwidth katakana: NFKC gives the fullwidth norm, the offsets stay on the original; the halfwidth
    # voiced mark (a spacing letter, not a combining mark) stays with its kana: ｶﾞ is one ガ, as is the
    # decomposed カ + U+3099 and the spacing ゛ after a kana
    text = "ﾆｭｰﾖｰｸ ｶﾞｲﾄﾞ カ\u3099 か゛"
    assert [(t.text, t.norm, t.start, t.end) for t in tokenize(text)] == [
        ("ﾆ", "ニ", 0, 1), ("ｭ", "ュ", 1, 2), ("ｰ", "ー", 2, 3), ("ﾖ", "ヨ", 3, 4), ("ｰ", "ー", 4, 5), ("ｸ", "ク", 5, 6),
        ("ｶﾞ", "ガ", 7, 9), ("ｲ", "イ", 9, 10), ("ﾄﾞ", "ド", 10, 12), ("カ\u3099", "ガ", 13, 15),
        ("か゛", "が", 16, 18)]


def test_thai_marks_stay_with_their_base():
    text = "ไม่เป็นไรครับ"
    tokens = tokenize(text)
    assert [t.text for t in tokens] == ["ไ", "ม่", "เ", "ป็", "น", "ไ", "ร", "ค", "รั", "บ"]
    assert "".join(t.text for t in tokens) == text
    for token in tokens:  # every token is one base character and the marks that follow it
        assert not unicodedata.category(token.text[0]).startswith("M")
        assert all(unicodedata.category(ch) == "Mn" for ch in token.text[1:])
    # Thai digits are digits: a run, like ASCII ones
    assert norms("ราคา๑๒๐บาท") == ["ร", "า", "ค", "า", "๑๒๐", "บ", "า", "ท"]


def test_latin_and_digit_runs_inside_cjk_stay_words():
    assert _spans("我想买iphone15") == [("我", 0, 1), ("想", 1, 2), ("买", 2, 3), ("iphone15", 3, 11)]
    assert norms("明天15:30去St.路易斯") == ["明", "天", "15:30", "去", "st.", "路", "易", "斯"]
    assert norms("YOASOBIの曲") == ["yoasobi", "の", "曲"]
    # text without such characters is tokenised exactly as before: no per-character splitting
    assert norms("Café Müller's 8:30 a.m.") == ["café", "müller's", "8:30", "a.m."]


def test_char_tokens_all_splits_every_character():
    config = TokenizerConfig(char_tokens="all")
    assert _spans("我想买iphone15", config) == [(ch, i, i + 1) for i, ch in enumerate("我想买iphone15")]
    assert norms("a.m. 买ｶﾞ", config) == ["a", "m", "买", "ガ"]  # punctuation still drops, marks still stay


def test_cjk_punctuation_between_characters_is_no_token():
    text = "【北京】明天，会下雨吗？「是的」。好・的、（晴）：；！"
    tokens = tokenize(text)
    assert [t.text for t in tokens] == list("北京明天会下雨吗是的好的晴")
    assert all(text[t.start : t.end] == t.text and len(t.text) == 1 for t in tokens)
    # halfwidth forms too, and with unicode_form null (no NFKC to map fullwidth marks to ASCII)
    assert norms("｢東京｣､大阪｡") == ["東", "京", "大", "阪"]
    assert norms("北京，上海！", TokenizerConfig(unicode_form=None)) == ["北", "京", "上", "海"]
    # inside a Latin run a junk edge goes too
    assert norms("买（iphone）吗") == ["买", "iphone", "吗"]


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
    config = TokenizerConfig(lowercase=False, split_clitics=True, strip_punctuation=",.", char_tokens="all")
    assert TokenizerConfig.from_dict(config.to_dict()) == config
    # a tokenizer.json written before char_tokens existed loads with the default
    old = {key: value for key, value in TokenizerConfig().to_dict().items() if key != "char_tokens"}
    assert TokenizerConfig.from_dict(old).char_tokens == "script"
    with pytest.raises(ConfigError, match="char_tokens must be one of script, all, got 'chars'"):
        TokenizerConfig.from_dict({"char_tokens": "chars"})
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


def test_infer_char_tokens_and_cjk_punctuation():
    words_in_chinese = [["我", "想", "买", "iphone15"], ["播", "放", "周", "杰", "伦", "的", "歌"]] * 5
    assert infer_tokenizer_config(words_in_chinese).char_tokens == "script"
    letters_split = [["我", "想", "买", "i", "p", "h", "o", "n", "e", "1", "5"], ["播", "放", "的", "歌"]] * 5
    assert infer_tokenizer_config(letters_split).char_tokens == "all"
    only_han = [list("我想订一张明天去北京的机票")] * 5
    assert infer_tokenizer_config(only_han).char_tokens == "script"
    # English corpora have a few one-letter pairs (SNIPS "i d") among many words
    assert infer_tokenizer_config([["i", "d", "like", "a", "table"]] * 5).char_tokens == "script"
    # a corpus that keeps "，" as a token keeps its ASCII form too: NFKC makes them one character
    commas = [["北", "京", "，", "上", "海"]] * 10
    strip = infer_tokenizer_config(commas).strip_punctuation
    assert "，" not in strip and "," not in strip and "。" in strip
    assert norms("北京，上海", infer_tokenizer_config(commas)) == ["北", "京", ",", "上", "海"]


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
    assert config.char_tokens == "script"


# ------------------------------------------------------------------ properties

_configs = st.builds(
    TokenizerConfig,
    lowercase=st.booleans(),
    unicode_form=st.sampled_from([None, "NFC", "NFKC", "NFD", "NFKD"]),
    keep_abbreviations=st.booleans(),
    split_clitics=st.booleans(),
    char_tokens=st.sampled_from(["script", "all"]),
)
# Bias text towards the interesting characters: whitespace of all kinds, format
# characters, combining marks, punctuation, apostrophes, CJK, emoji.
_interesting = st.sampled_from(
    list(" \t\n\u00a0\u2003\u3000\u2028\u200b\u200d\ufeff\u00ad\u0301\u0308.,'’\"!?:;()«»…¨ﬁＡ！東👍🏽ßİ"
         "北京の東ラーｶﾞﾞｰ゛\u3099ไม่เป็น๑。，「」・𠀀豈")
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
        # a mark is never cut from the character it follows
        assert token.end == len(text) or not is_mark(text[token.end])
        bases = [ch for ch in token.text if not is_mark(ch)]
        if config.char_tokens == "all":
            assert len(bases) <= 1
        elif any(writes_without_spaces(ch) for ch in bases):
            assert len(bases) == 1  # a character of Han, Kana or Thai is a token of its own


_spaced_letters = st.characters(categories=["L", "N"]).filter(lambda ch: not writes_without_spaces(ch))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=_spaced_letters, min_size=1, max_size=8), max_size=10))
def test_plain_words_roundtrip(words):
    """Words of letters and digits (of scripts written with spaces) joined by spaces come back as the same
    tokens."""
    config = TokenizerConfig(lowercase=False, unicode_form=None)
    text = " ".join(words)
    assert [t.text for t in tokenize(text, config)] == words


_unspaced = st.sampled_from(list("我想订北京機票東京からまでラーメンカタｶﾀ豈𠀀㐀ไทย"))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_unspaced, st.text(alphabet=st.sampled_from("abz019"), min_size=1, max_size=6)),
                max_size=20))
def test_unspaced_text_splits_into_characters_and_words(pieces):
    """Han, Kana and Thai characters written without spaces, between ASCII words: each such character is a
    token, each ASCII run between them one token."""
    text = "".join(pieces)
    expected, run = [], ""
    for ch in text:
        if writes_without_spaces(ch):
            expected += [run, ch] if run else [ch]
            run = ""
        else:
            run += ch
    expected += [run] if run else []
    assert [t.text for t in tokenize(text, TokenizerConfig(lowercase=False, unicode_form=None))] == expected
