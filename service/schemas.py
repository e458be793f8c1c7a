"""Every request and response body of the HTTP API.

All models forbid unknown fields and validate strictly (no ``"1"`` -> ``1`` coercion), so a
wrong type or a misspelt field is a 422 that names it, never a silent default.

Input rules checked here (static; the size limits depend on settings and are checked in
``routers/tag.py``):

* ``text``: not empty or whitespace-only; no control characters except tab, newline and
  carriage return (which count as whitespace); no lone surrogates.
* ``tokens``: at least one; each non-empty, without whitespace or control characters.
* exactly one of ``text`` and ``tokens``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

ALLOWED_CONTROLS = frozenset("\t\n\r")
# Unicode category Cc is exactly U+0000-001F and U+007F-009F; Cs (surrogates) is U+D800-DFFF.
# A regex runs in C; tests/service check it against unicodedata for every code point.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_EXCEPT_WHITESPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def bad_character(text: str, allowed: frozenset[str] = ALLOWED_CONTROLS) -> tuple[int, str] | None:
    """The first control character (Unicode Cc) or lone surrogate (Cs) in ``text`` that is not in
    ``allowed`` (default: tab, newline, carriage return), with its index."""
    if allowed == ALLOWED_CONTROLS:
        match = _CONTROL_EXCEPT_WHITESPACE.search(text)
    elif not allowed:
        match = _CONTROL.search(text)
    else:  # pragma: no cover - not used by the service
        match = next((m for m in _CONTROL.finditer(text) if m.group() not in allowed), None)
    return (match.start(), match.group()) if match else None


def _describe(char: str) -> str:
    return f"U+{ord(char):04X}"


def _invalid_characters(what: str, char: str, index: int | None = None) -> PydanticCustomError:
    """The error for a refused character. A lone surrogate (a \\udxxx escape with no partner) is no Unicode
    character at all rather than a control character, and its message says so."""
    surrogate = 0xD800 <= ord(char) <= 0xDFFF
    message = (f"{what} contains {'a lone surrogate' if surrogate else 'a control character'} {{char}}"
               + (" at index {index}" if index is not None else "") + (" (not valid Unicode)" if surrogate else ""))
    context: dict[str, object] = {"char": _describe(char)}
    if index is not None:
        context["index"] = index
    return PydanticCustomError("invalid_characters", message, context)


# ----------------------------------------------------------------------------- requests
def _check_token(token: str) -> str:
    """One pre-split token (errors land on ``tokens.<index>``)."""
    if not token:
        raise PydanticCustomError("invalid_token", "token is empty")
    if any(char.isspace() for char in token):
        raise PydanticCustomError("invalid_token", "token contains whitespace")
    bad = bad_character(token, frozenset())
    if bad is not None:
        raise _invalid_characters("token", bad[1])
    return token


Token = Annotated[str, AfterValidator(_check_token)]


class TagRequest(StrictModel):
    """One utterance: raw ``text`` (the service tokenises it as in training) or pre-split ``tokens``."""

    text: str | None = Field(
        None, description="Raw utterance. Not blank; no control characters except tab/newline/CR. "
                          "Offsets in the answer index into this string (Unicode code points).",
        examples=["book a flight from boston to denver tomorrow"])
    tokens: list[Token] | None = Field(
        None, description="Pre-tokenised utterance: non-empty tokens without whitespace or control characters. "
                          "Offsets in the answer index into the tokens joined by single spaces.",
        examples=[["book", "a", "flight", "to", "denver"]])

    @field_validator("text")
    @classmethod
    def _check_text(cls, text: str | None) -> str | None:
        if text is None:
            return None
        if not text.strip():
            raise PydanticCustomError("empty_text", "text is empty or only whitespace")
        bad = bad_character(text)
        if bad is not None:
            index, char = bad
            raise _invalid_characters("text", char, index)
        return text

    @field_validator("tokens")
    @classmethod
    def _check_tokens(cls, tokens: list[str] | None) -> list[str] | None:
        if tokens is not None and not tokens:
            raise PydanticCustomError("empty_tokens", "tokens is an empty list")
        return tokens

    @model_validator(mode="after")
    def _exactly_one(self) -> TagRequest:
        if self.text is not None and self.tokens is not None:
            raise PydanticCustomError("text_and_tokens", "give either text or tokens, not both")
        if self.text is None and self.tokens is None:
            raise PydanticCustomError("missing_input", "give either text or tokens")
        return self


class BatchRequest(StrictModel):
    """Several utterances; answers come back in the same order."""

    items: list[TagRequest] = Field(description="At least one item; at most max_batch_items (see /v1/model).")

    @field_validator("items")
    @classmethod
    def _not_empty(cls, items: list[TagRequest]) -> list[TagRequest]:
        if not items:
            raise PydanticCustomError("empty_batch", "items is an empty list")
        return items


class ReloadRequest(StrictModel):
    model_dir: str | None = Field(None, description="Artifact directory to load; default: the one being served.")


# ----------------------------------------------------------------------------- responses
class TokenOut(StrictModel):
    text: str = Field(description="Exactly input[start:end].")
    start: int
    end: int
    label: str
    confidence: float


class SlotOut(StrictModel):
    slot: str
    value: str = Field(description="Exactly input[start:end].")
    start: int
    end: int
    confidence: float


class IntentOut(StrictModel):
    name: str
    confidence: float


class ModelRef(StrictModel):
    name: str
    version: str


class TagResponse(StrictModel):
    tokens: list[TokenOut]
    labels: list[str]
    slots: list[SlotOut]
    intent: IntentOut | None
    model: ModelRef


class BatchResponse(StrictModel):
    items: list[TagResponse]


class Limits(StrictModel):
    max_chars: int
    max_tokens: int
    max_batch_items: int
    max_body_bytes: int


class ModelInfo(StrictModel):
    name: str
    version: str
    created: str
    labels: list[str]
    intents: list[str] | None
    config: dict[str, Any]
    metrics: dict[str, Any]
    digest: str
    backend: str | None = Field(None, description="Inference backend running the model: onnx, onnx-int8 or torch.")
    decoder: str | None = Field(None, description="What decodes the CRF: c (the compiled kernels) or numpy (an install "
                                                 "without a C compiler, or SLOTFILL_DECODER=numpy); numpy for a "
                                                 "softmax decoder.")
    quantization: dict[str, Any] | None = Field(
        None, description="With the onnx-int8 backend: how the int8 graph compared with the float graph when it was "
                          "made (token and intent agreement, slot F1 of both); null otherwise.")
    limits: Limits


class ModelSummary(StrictModel):
    name: str
    version: str
    digest: str


class ReloadResponse(StrictModel):
    previous: ModelSummary | None
    current: ModelSummary


class HealthResponse(StrictModel):
    status: str = "ok"


class ReadyResponse(StrictModel):
    status: str = "ready"
    model: ModelRef


class ErrorDetail(StrictModel):
    code: str = Field(description="Stable machine-readable code, e.g. empty_text, body_too_large.")
    message: str
    field: str | None = Field(description="Dotted path of the offending field, e.g. items.3.text.")


class ErrorResponse(StrictModel):
    error: ErrorDetail
