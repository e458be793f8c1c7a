"""Train/serve skew: does the stored tokenizer give back the training tokens from the text a user would type?

Pre-tokenised training data (folder, CoNLL) never passes through the tokenizer, but at serving time raw text
does. If the two disagree (a word-segmented Chinese corpus against one-token-per-character serving, a corpus
that split Latin words into letters against a tokenizer that keeps words, a punctuation style the settings
strip) the model sees at serving time tokens it was never trained on, and nothing else would say so.

The check rebuilds each training sentence as a user would type it (:func:`typed_text`), tokenises it with the
stored settings and compares the norms with the training tokens' norms. Training reports the share of
sentences that differ and stops above ``max_tokenizer_mismatch`` (training/config.py, where the measured rates
that justify its default are written down).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slotfill.data import Example
from slotfill.errors import DataError
from slotfill.text.tokenizer import TokenizerConfig, is_mark, norms, writes_without_spaces

EXAMPLES = 3  # mismatched sentences shown in the log, the error and report.json


def _single_character(token: str) -> bool:
    """One character and any combining marks after it (``a``, ``e`` + U+0301, Thai ``ม่``)."""
    return all(is_mark(ch) for ch in token[1:])


def _last_base(token: str) -> str:
    """The last character of ``token`` that is not a combining mark."""
    return next((ch for ch in reversed(token) if not is_mark(ch)), token[-1])


def typed_text(tokens: Sequence[str], glue_characters: bool = False) -> str:
    """``tokens`` joined as a user would type them: a single space between two tokens, but none when
    either side is a character of a script written without spaces (Han, Kana, Thai: ``北京 的`` ->
    ``北京的``, ``买 iphone15`` -> ``买iphone15``). With ``glue_characters`` (a corpus that splits every
    word into characters) two single-character tokens are not spaced either: ``i p h o n e`` was typed
    ``iphone``."""
    if not tokens:
        return ""
    parts = [tokens[0]]
    for left, right in zip(tokens, tokens[1:]):
        glued = writes_without_spaces(_last_base(left)) or writes_without_spaces(right[0]) or (
            glue_characters and _single_character(left) and _single_character(right))
        if not glued:
            parts.append(" ")
        parts.append(right)
    return "".join(parts)


@dataclass
class TokenizerCheck:
    """How many training sentences the tokenizer reproduces from their typed text; the first
    :data:`EXAMPLES` that it does not (source, training tokens, typed text, its tokens)."""

    sentences: int
    mismatched: int
    max_rate: float
    examples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.mismatched / self.sentences if self.sentences else 0.0

    @property
    def passed(self) -> bool:
        return self.rate <= self.max_rate

    def to_dict(self) -> dict[str, Any]:
        """report.json's ``tokenizer_check``."""
        return {"sentences": self.sentences, "mismatched": self.mismatched, "rate": self.rate,
                "max_rate": self.max_rate, "examples": self.examples}

    def summary(self) -> str:
        """The training log's line (also the start of the error when the check fails)."""
        line = (f"tokenizer check: {self.mismatched}/{self.sentences} training sentences "
                f"({100 * self.rate:.2f}%) tokenise differently from their text as typed "
                f"(limit {100 * self.max_rate:.2f}%, max_tokenizer_mismatch)")
        if self.examples:
            line += "; e.g. " + "; ".join(_describe(example) for example in self.examples[:2])
        return line


def _describe(example: dict[str, Any]) -> str:
    where = f"{example['source']}: " if example.get("source") else ""
    return (f"{where}{example['text']!r} gives [{' '.join(example['tokenized'])}], "
            f"the data has [{' '.join(example['tokens'])}]")


def check_tokenizer(examples: Sequence[Example], train_norms: Sequence[Sequence[str]], tokenizer: TokenizerConfig,
                    *, glue_characters: bool, max_rate: float) -> TokenizerCheck:
    """Tokenise each example's :func:`typed_text` with ``tokenizer`` and compare with ``train_norms`` (the
    examples' tokens as training normalises them, one list per example). Costs one tokenisation of the
    training set (ATIS, SNIPS: well under a second)."""
    mismatched, shown = 0, []
    for example, expected in zip(examples, train_norms):
        text = typed_text(example.tokens, glue_characters)
        got = norms(text, tokenizer)
        if got != list(expected):
            mismatched += 1
            if len(shown) < EXAMPLES:
                shown.append({"source": example.source, "text": text, "tokens": list(expected), "tokenized": got})
    return TokenizerCheck(sentences=len(examples), mismatched=mismatched, max_rate=max_rate, examples=shown)


def enforce(check: TokenizerCheck, data_dir: Path) -> None:
    """Raise the one-line :class:`DataError` of a failed check: what differs, and the ways out."""
    if check.passed:
        return
    raise DataError(f"{check.summary()}: the model would see other tokens at serving time than in training. "
                    "Set tokenizer.* to match the data's tokenisation (tokenizer.char_tokens=all for data split "
                    "into characters, script to keep Latin words), or raise max_tokenizer_mismatch if clients "
                    "will send tokens, not text", data_dir)
