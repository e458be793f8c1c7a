"""Normaliser and tokeniser that keeps character offsets into the original text.

Every :class:`Token` carries ``text`` (the exact substring ``original[start:end]``)
and ``norm`` (what the model sees). Offsets always refer to the string passed to
:func:`tokenize`, never to a normalised copy, so slot values can be cut out of
the user's input verbatim.

Tokenisation, per whitespace-separated chunk:

0. Scripts written without spaces (Han, including the extension blocks, the
   compatibility ideographs and the radicals; Hiragana and Katakana, including
   the prolonged sound mark ``ー`` and halfwidth katakana; Thai letters) give one
   piece per character; the runs of other characters between them stay whole
   (``我想买iphone15`` -> ``我 想 买 iphone15``). A character keeps the combining
   marks that follow it (Thai vowel and tone marks, ``\u3099``) and the spacing
   kana sound marks ``゛ ゜ ﾞ ﾟ``, which NFKC turns into combining ones, so halfwidth
   ``ｶﾞ`` is one token with norm ``ガ``. With ``char_tokens="all"`` every
   character of every chunk is a piece (as some char-level Chinese corpora split
   Latin words too). A chunk without such characters (all ASCII text, for one)
   is one piece, and costs no per-character script test.
1. Edge junk is peeled off both ends of each piece: characters of
   ``strip_punctuation`` (or characters whose Unicode normal form consists only
   of them, e.g. fullwidth ``！``), and invisible format/control characters
   (categories Cf, Cc). A stripped character takes its combining marks with it,
   so a mark is never separated from its base. CJK punctuation (``。，、「」``...)
   is in the default set, so between characters it becomes no token.
2. A trailing ``.`` is put back on abbreviation-like words (``st.``, ``a.m.``,
   ``u.s.``, single letters) when ``keep_abbreviations`` is set (ATIS keeps
   ``st. louis``).
3. With ``split_clitics``, an apostrophe between two letters splits the word
   and is dropped: ``what's -> what, s`` (SNIPS style).
4. ``norm`` = the piece without Cf/Cc characters, Unicode-normalised, without any
   whitespace the normalisation may introduce (NFKC turns ``¨`` into a space and a
   combining mark, which then composes with the character before it: ``か゛`` -> ``が``),
   lower-cased if asked. A piece whose norm is empty is dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields
from functools import lru_cache

from slotfill.errors import ConfigError

UNICODE_FORMS = ("NFC", "NFKC", "NFD", "NFKD")

# ASCII sentence punctuation plus the typographic quotes, guillemets, ellipsis
# and inverted marks people paste from phones and word processors. Hyphens,
# slashes, ampersands and colons inside words are left alone: only token EDGES
# are stripped.
DEFAULT_STRIP_PUNCTUATION = (
    ",.!?;:\"'()[]{}"
    "\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f"  # curly and low-9 quotes
    "\u00ab\u00bb\u2039\u203a"  # guillemets
    "\u2026\u00a1\u00bf"  # ellipsis, inverted ! and ?
    # CJK punctuation: ideographic comma and full stop, ditto mark, corner, lenticular, tortoise-shell
    # and angle brackets, double primes, katakana middle dot, and their halfwidth forms
    "\u3001\u3002\u3003\u3008\u3009\u300a\u300b\u300c\u300d\u300e\u300f\u3010\u3011"
    "\u3014\u3015\u3016\u3017\u3018\u3019\u301a\u301b\u301d\u301e\u301f\u30fb"
    "\uff61\uff62\uff63\uff64\uff65"
    # fullwidth forms of the ASCII marks above: NFKC maps them to ASCII, but they must go with
    # unicode_form null too
    "\uff0c\uff0e\uff01\uff1f\uff1b\uff1a\uff02\uff07\uff08\uff09\uff3b\uff3d\uff5b\uff5d"
)

# Characters of scripts written without spaces, each of which becomes a token of its own: Thai letters
# (not its digits, punctuation or currency sign), CJK radicals, the ideographic iteration marks and
# number zero, Hangzhou numerals, Hiragana and Katakana (with the prolonged sound mark U+30FC and the
# iteration marks, not the middle dot U+30FB or the double hyphen U+30A0), Katakana extensions, circled
# and squared Katakana, CJK Extension A, the unified ideographs, the compatibility ideographs, halfwidth
# Katakana (U+FF66-FF9D; the sound marks U+FF9E-FF9F go with the kana before them), the Kana supplement
# and extensions, and the supplementary and tertiary ideographic planes (Extensions B-I and the
# compatibility supplement).
UNSPACED_CHARACTERS = (
    "\u0e01-\u0e3e\u0e40-\u0e4e"
    "\u2e80-\u2fdf\u3005-\u3007\u3021-\u3029\u3038-\u303b"
    "\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff\u31f0-\u31ff\u32d0-\u32fe\u3300-\u3357"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9d"
    "\U0001aff0-\U0001b16f\U00020000-\U0003ffff"
)
CHAR_TOKENS = ("script", "all")

# Words whose trailing period is part of the word (case-insensitive). Kept short
# on purpose: "no." or "co." would swallow sentence-final periods too often.
ABBREVIATIONS = frozenset(
    "st mr mrs ms dr mt ft jr sr vs etc ave blvd rd ln hwy apt jan feb mar apr jun jul aug sep sept oct nov dec"
    " mon tue tues wed thu thur thurs fri sat sun".split()
)

_CHUNK = re.compile(r"\S+")  # \S is Unicode-aware: splits on every str.isspace() char
_WHITESPACE = re.compile(r"\s+")
# A single letter ("a."), or dotted letters ("a.m.", "u.s.", "p.m."), with the final dot.
_DOTTED = re.compile(r"(?:[^\W\d_]\.)+", re.UNICODE)
# An apostrophe between a letter/digit (or a combining mark on one) and a letter/digit.
_CLITIC = re.compile(r"(?<=[^\W_]|[\u0300-\u036f])['\u2019\u02bc](?=[^\W_])")
_INVISIBLE = frozenset({"Cf", "Cc", "Cs"})
_UNSPACED = re.compile(f"[{UNSPACED_CHARACTERS}]")
# Spacing kana voiced/semi-voiced sound marks: NFKC makes them combining marks (U+3099, U+309A), so
# like those they belong to the kana before them (halfwidth "ｶﾞ" is one "ガ").
_SOUND_MARKS = frozenset("\u309b\u309c\uff9e\uff9f")


@dataclass(frozen=True)
class TokenizerConfig:
    """How raw text becomes tokens; stored with every model so serving matches training."""

    lowercase: bool = True
    unicode_form: str | None = "NFKC"
    strip_punctuation: str = DEFAULT_STRIP_PUNCTUATION
    keep_abbreviations: bool = True
    split_clitics: bool = False
    # Which characters are tokens of their own: "script", those of scripts written without spaces
    # (Han, Kana, Thai), other runs staying words; "all", every character (char-level corpora that
    # split Latin words and numbers into characters too).
    char_tokens: str = "script"

    def __post_init__(self) -> None:
        for name in ("lowercase", "keep_abbreviations", "split_clitics"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"tokenizer.{name} must be true or false, got {getattr(self, name)!r}")
        if self.unicode_form is not None and self.unicode_form not in UNICODE_FORMS:
            raise ConfigError(
                f"tokenizer.unicode_form must be one of {', '.join(UNICODE_FORMS)} or null, got {self.unicode_form!r}"
            )
        if not isinstance(self.strip_punctuation, str) or any(ch.isspace() for ch in self.strip_punctuation):
            raise ConfigError("tokenizer.strip_punctuation must be a string without whitespace")
        if self.char_tokens not in CHAR_TOKENS:
            raise ConfigError(f"tokenizer.char_tokens must be one of {', '.join(CHAR_TOKENS)}, "
                              f"got {self.char_tokens!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TokenizerConfig:
        """Build from a dict; unknown keys are rejected by name (typos must not pass silently). A missing
        key takes its default (artifacts written before ``char_tokens`` existed load as ``"script"``)."""
        if not isinstance(data, dict):
            raise ConfigError(f"tokenizer config must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown tokenizer setting {key!r}; known: {', '.join(sorted(known))}")
        return cls(**data)


@dataclass(frozen=True, slots=True)
class Token:
    """One token: ``text == original[start:end]``; ``norm`` is what the model sees."""

    text: str
    norm: str
    start: int
    end: int


@lru_cache(maxsize=4096)
def _is_edge_junk(ch: str, strip: str, form: str | None) -> bool:
    if ch in strip or unicodedata.category(ch) in _INVISIBLE:
        return True
    if form is not None and not ch.isascii():
        normal = unicodedata.normalize(form, ch)
        return bool(normal) and all(c in strip for c in normal)
    return False


def is_mark(ch: str) -> bool:
    """A combining mark, or a spacing kana sound mark: it belongs to the character before it."""
    return not ch.isascii() and (unicodedata.category(ch).startswith("M") or ch in _SOUND_MARKS)


def writes_without_spaces(ch: str) -> bool:
    """Whether ``ch`` is a character of a script written without spaces (Han, Kana, Thai): one token each."""
    return _UNSPACED.match(ch) is not None


def _pieces(text: str, start: int, end: int, every_char: bool) -> Iterator[tuple[int, int]]:
    """Split the chunk ``text[start:end]``: each character of a script written without spaces (each
    character with ``every_char``) with the marks that follow it is a piece, and so is each run of
    other characters between them."""
    run_start = i = start
    while i < end:
        if every_char or _UNSPACED.match(text, i):
            if run_start < i:
                yield run_start, i
            run_start = i + 1
            while run_start < end and is_mark(text[run_start]):
                run_start += 1
            yield i, run_start
            i = run_start
        else:
            i += 1
    if run_start < end:
        yield run_start, end


def _spans(text: str, config: TokenizerConfig) -> Iterator[tuple[int, int]]:
    """The pieces of every whitespace-separated chunk of ``text`` (see the module docstring, step 0)."""
    every_char = config.char_tokens == "all"
    for match in _CHUNK.finditer(text):
        start, end = match.span()
        if every_char or _UNSPACED.search(text, start, end):
            yield from _pieces(text, start, end, every_char)
        else:
            yield start, end


def _trim(text: str, start: int, end: int, config: TokenizerConfig) -> tuple[int, int]:
    """Shrink ``[start, end)`` past edge junk; marks go with the base they follow."""
    strip, form = config.strip_punctuation, config.unicode_form
    while start < end and _is_edge_junk(text[start], strip, form):
        start += 1
        while start < end and is_mark(text[start]):
            start += 1
    while start < end:
        base = end - 1
        while base > start and is_mark(text[base]):
            base -= 1
        if not _is_edge_junk(text[base], strip, form):
            break
        end = base
    return start, end


def _is_abbreviation(word_with_dot: str) -> bool:
    lowered = word_with_dot.lower()
    return lowered[:-1] in ABBREVIATIONS or _DOTTED.fullmatch(lowered) is not None


def _normalise(piece: str, config: TokenizerConfig) -> str:
    if not piece.isprintable():  # fast path: printable strings hold no Cf/Cc/Cs
        piece = "".join(ch for ch in piece if unicodedata.category(ch) not in _INVISIBLE)
    if config.unicode_form is not None and not piece.isascii():
        piece = unicodedata.normalize(config.unicode_form, piece)
        piece, spaces = _WHITESPACE.subn("", piece)
        if spaces:  # the space stood between a base and a mark (か゛ -> "か \u3099"): let them compose
            piece = unicodedata.normalize(config.unicode_form, piece)
    if config.lowercase:
        piece = piece.lower()
    return piece


def tokenize(text: str, config: TokenizerConfig | None = None) -> list[Token]:
    """Split ``text`` into tokens with offsets into ``text`` (see the module docstring)."""
    if config is None:
        config = _DEFAULT
    if config.char_tokens == "script" and (text.isascii() or not _UNSPACED.search(text)):
        # The hot path (ASCII text costs one isascii()): whitespace-separated chunks, no per-character work.
        spans = map(re.Match.span, _CHUNK.finditer(text))
    else:
        spans = _spans(text, config)
    tokens: list[Token] = []
    for chunk_start, chunk_end in spans:  # a whitespace-separated chunk, or a piece of one (step 0)
        start, end = _trim(text, chunk_start, chunk_end, config)
        if start >= end:
            continue
        if (
            config.keep_abbreviations
            and end < chunk_end
            and text[end] == "."
            and _is_abbreviation(text[start : end + 1])
            and (end + 1 == chunk_end or not is_mark(text[end + 1]))  # the "." would lose its mark
        ):
            end += 1
        pieces = [(start, end)]
        if config.split_clitics:
            pieces = []
            piece_start = start
            for apostrophe in _CLITIC.finditer(text, start, end):
                pieces.append((piece_start, apostrophe.start()))
                piece_start = apostrophe.end()
            pieces.append((piece_start, end))
        for piece_start, piece_end in pieces:
            piece = text[piece_start:piece_end]
            norm = _normalise(piece, config)
            if norm:
                tokens.append(Token(piece, norm, piece_start, piece_end))
    return tokens


_DEFAULT = TokenizerConfig()


def normalize_token(token: str, config: TokenizerConfig | None = None) -> str:
    """The ``norm`` of one already-tokenised token (no splitting, no edge stripping).

    Used for pre-tokenised data (folder/CoNLL files, token requests) so that the
    model sees the same character normalisation as for raw text. Returns ``""``
    when nothing is left (e.g. a lone zero-width space).
    """
    return _normalise(token, config if config is not None else _DEFAULT)


def norms(text: str, config: TokenizerConfig | None = None) -> list[str]:
    """Just the normalised token strings of ``text``."""
    return [token.norm for token in tokenize(text, config)]


# Clitic tails that appear as separate tokens when a corpus split "what's" into
# "what s", "i'd" into "i d" and so on.
_CLITIC_TAILS = frozenset({"s", "d", "m", "t", "ll", "re", "ve"})


def infer_tokenizer_config(token_lists: Iterable[Sequence[str]]) -> TokenizerConfig:
    """Choose settings that reproduce the tokenisation style of pre-tokenised data.

    Heuristics (each compares evidence for both styles, so a few noisy tokens do
    not flip a setting):

    - ``lowercase``: False when at least 1% of the tokens that contain cased
      letters contain an uppercase one (true-cased data has capitalised
      sentence starts and names far above that); otherwise True.
    - ``split_clitics``: True when standalone clitic tails (``s``, ``d``, ``m``,
      ``t``, ``ll``, ``re``, ``ve``) directly after a word outnumber tokens with
      an apostrophe between letters (``what's``); SNIPS has hundreds of the former
      and a handful of the latter, ATIS the opposite.
    - ``keep_abbreviations``: True when some token is an abbreviation with its
      period (``st.``, ``a.m.``), False when the data has none (its
      abbreviations, if any, were written without the period).
    - ``strip_punctuation``: a default strip character is kept (removed from the
      set) when it sits on a token edge in at least 0.1% of the tokens and at
      least 3 times: then the corpus writes it attached (SNIPS titles like
      ``ii:``), and stripping it would produce tokens the model never saw. A
      character and its NFKC form count as one (fullwidth ``，`` is ``,``), and
      are kept together.
    - ``char_tokens``: ``"all"`` when pairs of adjacent one-character letter or
      digit tokens outside the unspaced scripts (``i p h o n e``) outnumber the
      tokens of two or more characters outside them (``iphone``, ``flights``): a
      char-level corpus that split Latin words too. English data has a few such
      pairs (SNIPS ``i d``) among a hundred thousand words; a char-level Chinese
      corpus without Latin letters has neither, and keeps ``"script"``.
    - ``unicode_form`` stays NFKC: it only unifies look-alike characters.
    """
    total = cased = upper = tails = apostrophes = abbreviations = letter_pairs = words = 0
    edges: Counter[str] = Counter()
    for tokens in token_lists:
        previous: str | None = None
        previous_letter = False
        for token in tokens:
            total += 1
            if len(token) == 1:
                letter = token.isalnum() and not _UNSPACED.match(token)
            elif token.isascii():
                letter, words = False, words + 1
            else:
                single = all(is_mark(ch) for ch in token[1:])
                letter = single and token[0].isalnum() and not _UNSPACED.match(token[0])
                words += not single and not _UNSPACED.search(token)
            letter_pairs += letter and previous_letter
            previous_letter = letter
            if any(ch.isalpha() and ch.lower() != ch.upper() for ch in token):
                cased += 1
                if any(ch.isupper() for ch in token):
                    upper += 1
            lowered = token.lower()
            if lowered in _CLITIC_TAILS and previous is not None and previous[-1:].isalpha():
                tails += 1
            if _CLITIC.search(token):
                apostrophes += 1
            if len(token) > 1 and token.endswith(".") and _is_abbreviation(token):
                abbreviations += 1
            first, last = token[0], token[-1]
            if first in DEFAULT_STRIP_PUNCTUATION or not first.isascii():
                if form := _strip_form(first):
                    edges[form] += 1
            if len(token) > 1 and (last in DEFAULT_STRIP_PUNCTUATION or not last.isascii()):
                if form := _strip_form(last):
                    edges[form] += 1
            previous = token
    kept = {ch for ch, n in edges.items() if n >= 3 and n >= 0.001 * total}
    if abbreviations:
        kept.discard(".")  # a trailing "." is handled by keep_abbreviations instead
    return TokenizerConfig(
        lowercase=not (cased and upper >= 0.01 * cased),
        split_clitics=tails > apostrophes,
        keep_abbreviations=abbreviations > 0,
        strip_punctuation="".join(ch for ch in DEFAULT_STRIP_PUNCTUATION if _strip_form(ch) not in kept),
        char_tokens="all" if letter_pairs > words else "script",
    )


@lru_cache(maxsize=4096)
def _strip_form(ch: str) -> str | None:
    """The default strip character ``ch`` stands for: itself, or its NFKC form (``，`` -> ``,``); None when
    it is no punctuation of the default set."""
    normal = unicodedata.normalize("NFKC", ch) if not ch.isascii() else ch
    if len(normal) == 1 and normal in DEFAULT_STRIP_PUNCTUATION:
        return normal
    return ch if ch in DEFAULT_STRIP_PUNCTUATION else None
