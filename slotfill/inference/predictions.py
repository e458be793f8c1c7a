"""What a tagger returns for one utterance: plain, immutable records.

These types are shared by the library (``Predictor``), the CLI's ``tag`` command
and the service's response schemas.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple


class RankedLabel(NamedTuple):
    """One of a token's most probable labels: ``(label, confidence)``."""

    label: str
    confidence: float


@dataclass(frozen=True)
class TokenPrediction:
    """One token with its character span ``text[start:end]`` in the input.

    ``dropped_label``: only when a confidence floor dropped the slot this token was part of (``label`` is then
    ``O``), the label the model had given it; None otherwise. ``top_labels``: only when alternatives were
    asked of a model without a CRF, the token's k most probable labels, most probable first, from the same
    calibrated softmax as ``confidence``: the first is the model's choice with exactly ``confidence`` (before
    any floor; ``label`` is that choice, or its repair where the choices spell an invalid sequence, ``B-x``
    for an ``I-x`` after ``O``); None otherwise."""

    text: str
    start: int
    end: int
    label: str
    confidence: float
    dropped_label: str | None = None
    top_labels: tuple[RankedLabel, ...] | None = None


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
    """One of the k most probable label sequences (a CRF model's ``alternatives``): its labels, its slots (each
    with its confidence as a span of this sequence) and the sequence's probability under the CRF."""

    labels: tuple[str, ...]
    slots: tuple[SlotPrediction, ...]
    probability: float


@dataclass(frozen=True)
class Prediction:
    """The tagger's answer for one utterance.

    ``text`` is the string the offsets refer to: the raw input for text requests,
    or the tokens joined by single spaces for pre-tokenised requests. ``alternatives``: only when asked of a
    model with a CRF, the k most probable label sequences (a model without one answers each token's
    ``top_labels`` instead); None otherwise.
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
        only when it was asked for, and so are ``alternatives`` (each ``{"labels", "slots", "probability"}``),
        a token's ``top_labels`` (a list of ``{"label", "confidence"}``) and its ``dropped_label``."""
        out = asdict(self)
        out["labels"] = self.labels
        for token, token_out in zip(self.tokens, out["tokens"]):
            if token.dropped_label is None:
                del token_out["dropped_label"]
            del token_out["top_labels"]
            if token.top_labels is not None:
                token_out["top_labels"] = [{"label": label, "confidence": confidence}
                                           for label, confidence in token.top_labels]
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
