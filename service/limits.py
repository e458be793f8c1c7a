"""Limits checked on a parsed JSON body before the schema validates it.

Validation costs time and memory in proportion to the body, and refusing a body costs one error
object per bad element: 1 MiB of ``{"items": [1, 1, ...]}`` is half a million items, which
pydantic took seconds and more than a gigabyte to refuse, on the event loop. So every route that
takes JSON first applies what the settings bound to the parsed value, in time proportional to
what the limits allow (never to the body's size):

* ``/v1/tag`` and each ``/v1/tag/batch`` item: ``text`` at most ``max_chars`` code points
  (422 ``too_long``); ``tokens`` at most ``max_tokens`` (``too_many_tokens``) and, joined by
  spaces, at most ``max_chars`` (``too_long``);
* ``/v1/tag/batch``: at most ``max_batch_items`` items (``too_many_items``), checked before any item;
* ``/v2/.../infer``: at most :data:`MAX_TENSORS` inputs (``too_many_inputs``) and outputs
  (``too_many_outputs``), :data:`MAX_PARAMETERS` parameters in each ``parameters`` object
  (``too_many_parameters``), :data:`MAX_DIMENSIONS` dimensions in a shape (``wrong_shape``); the
  number of texts is checked against ``max_batch_items`` before they are read (``routers/v2.py``);
* every object of a body: of the keys the schema does not know (each one an error), only the
  first is kept for validation. The schema reports unknown keys after the known fields' errors,
  first one first, so the error answered is the one the whole body gives.

Before any of that, a body over 64 KiB (the ones parsed off the event loop, ``service/json_route.py``) is
refused unparsed, 422 ``too_many_values``, when it holds more commas than any request within the limits
can (:func:`separator_budget`): the parser builds a value per comma-separated element without calling
back into Python, and a megabyte of ``[],`` or ``"k": true,`` held the interpreter lock for 20 to 30 ms.

A value of the wrong type is left to the schema, which refuses it with one error without looking
inside it. What reaches the schema is then bounded by the limits, and its lists and mappings stop
at their first bad element (``fail_fast`` in ``service/schemas.py``): refusing any body builds a
handful of error objects, of which the answer reports the first (``service/errors.py``). The
size checks are the only copy of those limits: the model-dependent ones (tokens counted by the
model's tokeniser, ``intent_ranking``) follow validation in ``routers/tag.py``.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from .errors import APIError
from .schemas import (
    BatchRequest,
    TagRequest,
    V2InferenceRequest,
    V2RequestInput,
    V2RequestOutput,
)
from .settings import Settings

MAX_TENSORS = 16  # inputs or outputs in one inference request (this model has one input and four outputs)
MAX_PARAMETERS = 64  # entries in one "parameters" object (the protocol's own are a handful)
MAX_DIMENSIONS = 8  # in an input's shape (text takes one or two)

BodyCheck = Callable[[Any, Settings], Any]

# The fewest commas a large body may hold before it is refused unparsed, whatever the limits: the parser
# builds 100,000 small values in about 8 ms (the interpreter lock held), under /health's goal of its
# baseline plus 20 ms during an attack (RELIABILITY.md), and 80,000 unknown fields are still answered
# as such.
MIN_SEPARATOR_BUDGET = 100_000


def separator_budget(settings: Settings) -> int:
    """The most commas a request within the limits can hold, with room to spare: each of up to
    ``max_batch_items`` items has at most ``max_chars`` characters of text or tokens (each may be a comma),
    ``max_tokens`` tokens and a handful of fields; /v2 requests are bounded alike (their few tensors and
    parameter maps are the 4,096). At least :data:`MIN_SEPARATOR_BUDGET`."""
    per_item = settings.max_chars + settings.max_tokens + 8
    return max(MIN_SEPARATOR_BUDGET, settings.max_batch_items * per_item + 4096)


def check_separators(body: bytes, settings: Settings) -> None:
    """422 ``too_many_values`` for a body with more commas than :func:`separator_budget` (counted in C, about
    0.1 ms a megabyte, before anything is parsed)."""
    count, budget = body.count(b","), separator_budget(settings)
    if count > budget:
        raise APIError(422, "too_many_values", f"the body has {count:,} commas, more JSON values than any request "
                                               f"within the limits can hold (at most {budget:,} commas)")


def _fields(model: type[BaseModel]) -> frozenset[str]:
    return frozenset(model.model_fields)


def known_keys(value: dict[str, Any], fields: frozenset[str]) -> dict[str, Any]:
    """``value``, or a copy with its known keys and only the first unknown one (in the body's order; the
    order of the known keys does not matter: the schema validates fields in its own order)."""
    if value.keys() <= fields:  # stops at the first unknown key
        return value
    first = next(key for key in value if key not in fields)
    trimmed = {key: value[key] for key in fields if key in value}
    trimmed[first] = value[first]
    return trimmed


def check_text_size(text: Any, settings: Settings, field: str) -> None:
    """422 ``too_long`` for a ``text`` over ``max_chars`` code points (a non-string is the schema's to refuse)."""
    if isinstance(text, str) and len(text) > settings.max_chars:
        raise APIError(422, "too_long", f"text has {len(text)} characters; the limit is {settings.max_chars}", field)


def check_tokens_size(tokens: Any, settings: Settings, field: str) -> None:
    """422 ``too_many_tokens`` past ``max_tokens``, ``too_long`` when the tokens joined by spaces pass ``max_chars``."""
    if not isinstance(tokens, list):
        return
    if len(tokens) > settings.max_tokens:
        raise APIError(422, "too_many_tokens", f"{len(tokens)} tokens; the limit is {settings.max_tokens}", field)
    if tokens and all(isinstance(token, str) for token in tokens):
        joined = sum(len(token) for token in tokens) + len(tokens) - 1
        if joined > settings.max_chars:
            raise APIError(422, "too_long", f"tokens joined by spaces have {joined} characters; the limit is "
                                            f"{settings.max_chars}", field)


_TAG_FIELDS = _fields(TagRequest)
_BATCH_FIELDS = _fields(BatchRequest)


def check_tag_request(value: Any, settings: Settings, prefix: str = "") -> Any:
    """One utterance (``/v1/tag``'s body, or a batch item with ``prefix`` ``items.N.``)."""
    if not isinstance(value, dict):
        return value
    check_text_size(value.get("text"), settings, f"{prefix}text")
    check_tokens_size(value.get("tokens"), settings, f"{prefix}tokens")
    return known_keys(value, _TAG_FIELDS)


def check_batch_request(value: Any, settings: Settings) -> Any:
    if not isinstance(value, dict):
        return value
    value = known_keys(value, _BATCH_FIELDS)
    items = value.get("items")
    if not isinstance(items, list):
        return value
    if len(items) > settings.max_batch_items:
        raise APIError(422, "too_many_items", f"{len(items)} items; the limit is {settings.max_batch_items}", "items")
    checked = [check_tag_request(item, settings, f"items.{index}.") for index, item in enumerate(items)]
    if any(new is not old for new, old in zip(checked, items)):
        value = {**value, "items": checked}
    return value


def _check_parameters(value: dict[str, Any], field: str) -> None:
    parameters = value.get("parameters")
    if isinstance(parameters, dict) and len(parameters) > MAX_PARAMETERS:
        raise APIError(422, "too_many_parameters", f"{len(parameters)} parameters; the limit is {MAX_PARAMETERS}",
                       field)


_V2_FIELDS = _fields(V2InferenceRequest)
_V2_INPUT_FIELDS = _fields(V2RequestInput)
_V2_OUTPUT_FIELDS = _fields(V2RequestOutput)


def _check_tensors(value: dict[str, Any], key: str, fields: frozenset[str], code: str) -> dict[str, Any]:
    tensors = value.get(key)
    if not isinstance(tensors, list):
        return value
    if len(tensors) > MAX_TENSORS:
        raise APIError(422, code, f"{len(tensors)} {key}; the limit is {MAX_TENSORS}", key)
    checked = []
    for index, tensor in enumerate(tensors):
        if isinstance(tensor, dict):
            _check_parameters(tensor, f"{key}.{index}.parameters")
            shape = tensor.get("shape")
            if isinstance(shape, list) and len(shape) > MAX_DIMENSIONS:
                raise APIError(422, "wrong_shape", f"shape has {len(shape)} dimensions; the limit is "
                                                   f"{MAX_DIMENSIONS}", f"{key}.{index}.shape")
            tensor = known_keys(tensor, fields)
        checked.append(tensor)
    if any(new is not old for new, old in zip(checked, tensors)):
        value = {**value, key: checked}
    return value


def check_inference_request(value: Any, settings: Settings) -> Any:
    """An Open Inference Protocol request (after its binary tensors are decoded into ``data``)."""
    if not isinstance(value, dict):
        return value
    value = known_keys(value, _V2_FIELDS)
    _check_parameters(value, "parameters")
    value = _check_tensors(value, "inputs", _V2_INPUT_FIELDS, "too_many_inputs")
    return _check_tensors(value, "outputs", _V2_OUTPUT_FIELDS, "too_many_outputs")


_BODY_CHECKS: dict[type[BaseModel], BodyCheck] = {
    TagRequest: check_tag_request,
    BatchRequest: check_batch_request,
    V2InferenceRequest: check_inference_request,
}


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model of a body annotation (``Model``, or ``Model | None`` for an optional body)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        models = [model for model in map(_model_of, typing.get_args(annotation)) if model is not None]
        return models[0] if len(models) == 1 else None
    return None


def _unchecked(value: Any, settings: Settings) -> Any:
    return value


def body_check(annotation: Any) -> BodyCheck:
    """The check for a route whose body is annotated ``annotation``: the model's own, else (any other model)
    its unknown keys kept to the first."""
    model = _model_of(annotation)
    if model is None:
        return _unchecked
    check = _BODY_CHECKS.get(model)
    if check is not None:
        return check
    fields = _fields(model)
    return lambda value, settings: known_keys(value, fields) if isinstance(value, dict) else value
