"""What a tagger returns for one utterance: plain, immutable records.

These types are shared by the library (``Predictor``), the CLI's ``tag`` command
and the service's response schemas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class TokenPrediction:
    """One token with its character span ``text[start:end]`` in the input."""

    text: str
    start: int
    end: int
    label: str
    confidence: float


@dataclass(frozen=True)
class SlotPrediction:
    """One slot span; ``value`` is exactly ``input[start:end]``."""

    slot: str
    value: str
    start: int
    end: int
    confidence: float


@dataclass(frozen=True)
class IntentPrediction:
    name: str
    confidence: float


@dataclass(frozen=True)
class Prediction:
    """The tagger's answer for one utterance.

    ``text`` is the string the offsets refer to: the raw input for text requests,
    or the tokens joined by single spaces for pre-tokenised requests.
    """

    text: str
    tokens: tuple[TokenPrediction, ...]
    slots: tuple[SlotPrediction, ...]
    intent: IntentPrediction | None

    @property
    def labels(self) -> list[str]:
        return [token.label for token in self.tokens]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["labels"] = self.labels
        return out
