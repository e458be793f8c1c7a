"""Every request and response body of the HTTP API.

All models forbid unknown fields and validate strictly (no ``"1"`` -> ``1`` coercion), so a
wrong type or a misspelt field is a 422 that names it, never a silent default. Request lists and
mappings stop at their first bad element (``fail_fast``): only the first error is answered, and
building one per element of a large body was most of the cost of refusing it (``service/limits.py``
bounds the sizes before validation).

Input rules checked here (static; the size limits depend on settings and are checked in
``routers/tag.py``):

* ``text``: not empty or whitespace-only; no control characters except tab, newline and
  carriage return (which count as whitespace); no lone surrogates.
* ``tokens``: at least one; each non-empty, without whitespace or control characters.
* exactly one of ``text`` and ``tokens`` (the OpenAPI schema says so too: :data:`TEXT_XOR_TOKENS`).
* ``intent_ranking``: an integer >= 1 (its upper bound, the model's number of intents, is checked in
  ``routers/tag.py``).
* ``min_confidence``: a number from 0 to 1.
* ``alternatives``: an integer from 1 to :data:`MAX_ALTERNATIVES`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator, model_validator
from pydantic_core import PydanticCustomError

ALLOWED_CONTROLS = frozenset("\t\n\r")
# Unicode category Cc is exactly U+0000-001F and U+007F-009F; Cs (surrogates) is U+D800-DFFF.
# A regex runs in C; tests/service check it against unicodedata for every code point.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_EXCEPT_WHITESPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


MAX_ALTERNATIVES = 10  # the most alternatives a request may ask for

# TagRequest's "exactly one of text and tokens" in its OpenAPI schema: each branch takes one and leaves the
# other absent or null, so a body with both (or neither) matches no branch, as the validator refuses it.
TEXT_XOR_TOKENS = [
    {"title": "text", "required": ["text"], "properties": {"text": {"type": "string"}, "tokens": {"type": "null"}}},
    {"title": "tokens", "required": ["tokens"],
     "properties": {"tokens": {"type": "array"}, "text": {"type": "null"}}},
]


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
    """One utterance: raw ``text`` (the service tokenises it as in training) or pre-split ``tokens``, exactly
    one of them."""

    model_config = ConfigDict(json_schema_extra={"oneOf": TEXT_XOR_TOKENS})

    text: str | None = Field(
        None, description="Raw utterance. Not blank; no control characters except tab/newline/CR. "
                          "Offsets in the answer index into this string (Unicode code points). Give either `text` "
                          "or `tokens`, not both (text_and_tokens) and not neither (missing_input).",
        examples=["book a flight from boston to denver tomorrow"])
    tokens: list[Token] | None = Field(
        None, fail_fast=True,
        description="Pre-tokenised utterance: non-empty tokens without whitespace or control characters. "
                    "Offsets in the answer index into the tokens joined by single spaces (the answer's "
                    "`text`). Give either `text` or `tokens`, not both.",
        examples=[["book", "a", "flight", "to", "denver"]])
    intent_ranking: Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1})] | None = Field(
        None, description="Optional: answer the k most confident intents too, as `intent.ranking` (k from 1 to the "
                          "number of intents in /v1/model's `intents`), most confident first, with confidences "
                          "from the same calibrated softmax as the intent's. Absent or null: the top intent only.",
        examples=[3])
    min_confidence: Annotated[float, WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})] | None = Field(
        None, description="Optional confidence floor from 0 to 1: slots whose confidence is below it are left out of "
                          "`slots`, and their tokens are labelled `O` (with the model's probability of `O` as their "
                          "confidence) and marked with `dropped_label`, the label they lost, so `labels` stays a "
                          "valid sequence that agrees with `slots`. Absent or null: the server's default floor "
                          "(/v1/model's `defaults.min_confidence`; none unless configured). 0 keeps every slot, "
                          "whatever the default.",
        examples=[0.5])
    alternatives: Annotated[int, WithJsonSchema({"type": "integer", "minimum": 1,
                                                 "maximum": MAX_ALTERNATIVES})] | None = Field(
        None, description="Optional, k from 1 to 10: other answers the model finds likely. A model with a CRF "
                          "(/v1/model's `config.decoder` `crf`) answers `alternatives`, the k most probable label "
                          "sequences (k-best Viterbi), most probable first, each with its labels, slots and "
                          "probability; the first is the answer's own labels (before any `min_confidence`). A model "
                          "without one (`softmax`) tags each token on its own and answers each token's "
                          "`top_labels` instead, its k most probable labels. Absent or null: neither.",
        examples=[3])

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

    @field_validator("intent_ranking")
    @classmethod
    def _check_intent_ranking(cls, k: int | None) -> int | None:
        if k is not None and k < 1:
            raise PydanticCustomError("invalid_intent_ranking",
                                      "intent_ranking must be at least 1 (the number of intents to rank); got {k}",
                                      {"k": k})
        return k

    @field_validator("min_confidence")
    @classmethod
    def _check_min_confidence(cls, floor: float | None) -> float | None:
        if floor is not None and not 0.0 <= floor <= 1.0:  # NaN too
            raise PydanticCustomError("invalid_min_confidence", "min_confidence must be from 0 to 1; got {floor}",
                                      {"floor": floor})
        return floor

    @field_validator("alternatives")
    @classmethod
    def _check_alternatives(cls, k: int | None) -> int | None:
        if k is not None and not 1 <= k <= MAX_ALTERNATIVES:
            raise PydanticCustomError("invalid_alternatives", "alternatives must be from 1 to {limit}; got {k}",
                                      {"k": k, "limit": MAX_ALTERNATIVES})
        return k

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

    items: list[TagRequest] = Field(description="At least one item; at most max_batch_items (see /v1/model).",
                                    fail_fast=True)

    @field_validator("items")
    @classmethod
    def _not_empty(cls, items: list[TagRequest]) -> list[TagRequest]:
        if not items:
            raise PydanticCustomError("empty_batch", "items is an empty list")
        return items


class ReloadRequest(StrictModel):
    model_dir: str | None = Field(None, description="Artifact directory to load; default: the one being served.")


# ----------------------------------------------------------------------------- responses
class RankedLabelOut(StrictModel):
    label: str
    confidence: float


class TokenOut(StrictModel):
    text: str = Field(description="Exactly input[start:end].")
    start: int
    end: int
    label: str
    confidence: float
    dropped_label: str | None = Field(
        None, description="Only on a token of a slot that `min_confidence` dropped (absent otherwise): the label "
                          "the model gave it; its `label` is now `O`.")
    top_labels: list[RankedLabelOut] | None = Field(
        None, description="Only when the request gave `alternatives` k and the model has no CRF (absent otherwise): "
                          "this token's k most probable labels (all of them if the model has fewer), most probable "
                          "first, with confidences from the same calibrated softmax as `confidence`; the first is "
                          "the model's own choice, with this token's `confidence` (before any `min_confidence`; "
                          "where the choices spell an invalid sequence, e.g. `I-x` after `O`, `label` is their "
                          "repair, `B-x`). Each token is decided on its own, so the top labels of neighbours need "
                          "not form a valid sequence.")


class SlotOut(StrictModel):
    slot: str
    value: str = Field(description="Exactly input[start:end].")
    start: int
    end: int
    confidence: float


class RankedIntentOut(StrictModel):
    name: str
    confidence: float


class IntentOut(StrictModel):
    name: str
    confidence: float
    ranking: list[RankedIntentOut] | None = Field(
        None, description="Only when the request gave `intent_ranking` k (absent otherwise): the k most confident "
                          "intents, most confident first; the first is this intent with this confidence.")


class ModelRef(StrictModel):
    name: str
    version: str


class AlternativeOut(StrictModel):
    labels: list[str]
    slots: list[SlotOut] = Field(description="This sequence's slots, each with its confidence as a span of it.")
    probability: float = Field(description="The sequence's probability under the CRF (calibrated).")


class TagResponse(StrictModel):
    text: str = Field(description="What the offsets index into: the request's `text`, or its `tokens` joined by "
                                  "single spaces.")
    tokens: list[TokenOut]
    labels: list[str]
    slots: list[SlotOut]
    intent: IntentOut | None
    model: ModelRef
    alternatives: list[AlternativeOut] | None = Field(
        None, description="Only when the request gave `alternatives` k and the model has a CRF (absent otherwise): "
                          "the k most probable label sequences (fewer when the scheme allows fewer), most probable "
                          "first, their probabilities summing to at most 1; each is a valid sequence of the scheme, "
                          "and the first has this answer's labels as decoded.")


class BatchResponse(StrictModel):
    items: list[TagResponse]


class Limits(StrictModel):
    max_chars: int
    max_tokens: int
    max_batch_items: int
    max_body_bytes: int


class Defaults(StrictModel):
    min_confidence: float | None = Field(
        description="The confidence floor applied to a request that gives no `min_confidence` (null: none).")


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
    defaults: Defaults = Field(description="What a request's options are when it leaves them out.")


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


# ----------------------------------------------------------------------------- Open Inference Protocol (KServe V2)
# The bodies of /v2 (service/routers/v2.py), field for field as the protocol names them. They forbid
# unknown fields like the rest of the API: a misspelt "ouputs" is an error, not "all outputs".
V2Parameter = str | int | float | bool
V2Parameters = Annotated[dict[str, V2Parameter], Field(fail_fast=True)]


class V2RequestInput(StrictModel):
    name: str = Field(description="The input tensor's name: `text`.", examples=["text"])
    shape: list[Annotated[int, Field(ge=0)]] = Field(
        fail_fast=True, description="`[n]` for n texts (also `[n, 1]` or `[1, n]`); the outputs take this shape.", examples=[[2]])
    datatype: str = Field(description="`BYTES`: each element is one UTF-8 text.", examples=["BYTES"])
    parameters: V2Parameters | None = Field(
        None, description="`binary_data_size`: the tensor is sent after the JSON object (binary tensor data "
                          "extension); other parameters are ignored.")
    data: list[Any] | None = Field(
        None, description="The texts, flat (`[\"a\", \"b\"]`) or in the shape's nesting (`[[\"a\"], [\"b\"]]` for "
                          "`[2, 1]`). Absent when the tensor is sent as binary data.",
        examples=[["book a table for 4 at chez pierre", "cancel my booking"]])


class V2RequestOutput(StrictModel):
    name: str = Field(description="`labels`, `slots`, `intent` or `intent_confidence`.", examples=["slots"])
    parameters: V2Parameters | None = Field(
        None, description="`binary_data`: true to receive this output as binary data after the JSON object.")


class V2InferenceRequest(StrictModel):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: V2Parameters | None = Field(
        None, description="`binary_data_output`: true to receive every output as binary data (unless an output "
                          "says otherwise); other parameters are ignored.")
    inputs: list[V2RequestInput] = Field(description="Exactly one input, `text`.", fail_fast=True)
    outputs: list[V2RequestOutput] | None = Field(None, description="The outputs to return; default: all four.",
                                                  fail_fast=True)


class V2ResponseOutput(StrictModel):
    name: str
    shape: list[int]
    datatype: str = Field(description="`BYTES` (one JSON text per element) or `FP32`.")
    parameters: V2Parameters | None = Field(None, description="`binary_data_size` when sent as binary data.")
    data: list[Any] | None = Field(None, description="Flat, row-major; absent when sent as binary data. "
                                                     "`intent_confidence` is null where there is no intent.")


class V2InferenceResponse(StrictModel):
    model_name: str
    model_version: str
    id: str | None = Field(None, description="The request's `id`, when it gave one.")
    outputs: list[V2ResponseOutput]


class V2TensorMetadata(StrictModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1: any size.")


class V2ModelMetadata(StrictModel):
    name: str
    versions: list[str]
    platform: str = Field(description="`slotfill_<backend>`: slotfill_onnx, slotfill_onnx-int8 or slotfill_torch.")
    inputs: list[V2TensorMetadata]
    outputs: list[V2TensorMetadata]


class V2ServerMetadata(StrictModel):
    name: str
    version: str
    extensions: list[str]


class V2ServerLive(StrictModel):
    live: bool


class V2ServerReady(StrictModel):
    ready: bool


class V2ModelReady(StrictModel):
    name: str
    ready: bool


class V2ErrorResponse(StrictModel):
    error: str = Field(description="What is wrong, starting with the dotted path of the field at fault "
                                   "(`inputs.0.data.3: ...`) when there is one, and ending with the error code "
                                   "in brackets (`[empty_text]`).")
