"""What a tagger returns for one utterance: plain, immutable records.

These types are shared by the library (``Predictor``), the CLI's ``tag`` command
and the service's response schemas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple


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


class RankedIntent(NamedTuple):
    """One intent in a ranking: ``(name, confidence)``."""

    name: str
    confidence: float


@dataclass(frozen=True)
class IntentPrediction:
    """The top intent. ``ranking``: the top k intents, most confident first, each ``(name, confidence)``
    from the same calibrated softmax as ``confidence`` (so ``ranking[0]`` is ``(name, confidence)``);
    None unless asked for (``intent_top_k`` of the predictor's calls)."""

    name: str
    confidence: float
    ranking: tuple[RankedIntent, ...] | None = None


@dataclass(frozen=True)
class Alternative:
    """One of the k most probable label sequences (``n_best``): its labels, its slots (each with its confidence
    as a span of this sequence) and the sequence's probability under the CRF."""

    labels: tuple[str, ...]
    slots: tuple[SlotPrediction, ...]
    probability: float


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
    alternatives: tuple[Alternative, ...] | None = None

    @property
    def labels(self) -> list[str]:
        return [token.label for token in self.tokens]

    def to_dict(self) -> dict:
        """Plain JSON-ready dicts; the intent's ``ranking`` (a list of ``{"name", "confidence"}``) is there
        only when it was asked for, and so are ``alternatives`` (each ``{"labels", "slots", "probability"}``)."""
        out = asdict(self)
        out["labels"] = self.labels
        alternatives = out.pop("alternatives")
        if alternatives is not None:
            out["alternatives"] = [{"labels": list(a["labels"]), "slots": a["slots"], "probability": a["probability"]}
                                   for a in alternatives]
        if self.intent is not None:
            out["intent"].pop("ranking")
            if self.intent.ranking is not None:
                out["intent"]["ranking"] = [{"name": name, "confidence": confidence}
                                            for name, confidence in self.intent.ranking]
        return out
