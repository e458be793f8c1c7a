"""One error shape for every failure: ``{"error": {"code": ..., "message": ..., "field": ...}}``.

FastAPI's own handlers (``RequestValidationError``, ``HTTPException``) are replaced so that
validation errors, unknown routes (404) and wrong methods (405) use this shape too; a
catch-all handler answers anything unexpected with a JSON 500 (client input never gets there:
see ``tests/service``).

Status codes (``code`` in the body; the README has the same table):

====  ======================  ===============================================================
400   invalid_json            body is not JSON (also: nesting too deep, integer literal too long,
                              NaN / Infinity)
400   invalid_utf8            body bytes are not UTF-8 (UTF-16 JSON included)
400   invalid_http            the HTTP parser refused the request (``service/protocol.py``; the
                              connection is closed)
401   unauthorized            admin token missing or wrong (``WWW-Authenticate: Bearer``)
403   admin_disabled          no admin token configured: the admin API is off
404   not_found               unknown route
405   method_not_allowed      known route, wrong method (``Allow`` header)
408   request_timeout         headers not in within ``header_timeout_s``, or the body within
                              ``body_timeout_s`` (``service/protocol.py``; the connection is closed)
409   reload_in_progress      another reload is running
409   reload_unsupported      ``workers > 1``: a reload would reach one worker only
413   body_too_large          body over ``max_body_bytes``; checked before parsing, with or
                              without Content-Length (chunked bodies are counted as they arrive)
415   unsupported_media_type  a body that is not ``application/json`` / ``application/*+json``,
                              or a charset other than UTF-8
422   missing_body            no body (``field`` null)
422   wrong_type              wrong JSON type anywhere (incl. a body that is not an object)
422   unknown_field           a field the schema does not have
422   duplicate_field         an object repeats a key (``field`` names it): rejected, not last-one-wins
422   missing_field           a required field is absent (e.g. ``items``)
422   missing_input           neither ``text`` nor ``tokens``
422   text_and_tokens         both ``text`` and ``tokens``
422   empty_text              ``text`` empty or only whitespace
422   invalid_characters      control character (Unicode Cc other than tab/LF/CR) or lone
                              surrogate in ``text`` or a token (or a lone surrogate in a key)
422   empty_tokens            ``tokens`` is ``[]``
422   invalid_token           a token is empty or contains whitespace
422   too_long                ``text`` (or the tokens joined by spaces) over ``max_chars`` code points
422   too_many_tokens         more than ``max_tokens`` tokens (``text`` counted with the model's tokeniser)
422   empty_batch             ``items`` is ``[]``
422   invalid_intent_ranking  ``intent_ranking`` below 1 or above the model's number of intents (a
                              non-integer is ``wrong_type``)
422   invalid_min_confidence  ``min_confidence`` below 0 or above 1 (a non-number is ``wrong_type``)
422   invalid_alternatives    ``alternatives`` below 1 or above 10 (a non-integer is ``wrong_type``)
422   too_many_items          more than ``max_batch_items`` items (``field`` "items")
431   headers_too_large       request line and headers over ``max_header_bytes``, or more than
                              ``max_headers`` header lines (``service/protocol.py``)
422   artifact_invalid        reload target missing, corrupt or tampered with; the old model serves on
500   internal_error          a bug, logged with its traceback; never caused by client input
503   not_ready               no model loaded yet (``Retry-After: 1``)
503   overloaded              ``max_pending`` tag requests in flight (``Retry-After: retry_after_s``;
                              ``service/admission.py``), or ``max_connections`` connections each with
                              a request in progress (``service/protocol.py``)
503   model_failing           ``/health``, ``/ready``: the last ``health_failures`` model calls failed
503   model_stalled           ``/health``, ``/ready``: a model call stuck past ``health_stall_s``
====  ======================  ===============================================================

``field`` is the dotted path of the offending value (``text``, ``tokens.2``, ``items.3.text``,
``items.1`` for an item-level error) or null when the problem is the whole body. Only the first
problem is reported: the size limits (``too_long``, ``too_many_tokens``, ``too_many_items``) are
checked on the parsed body before the schema (``service/limits.py``), then the schema's first error.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Iterable, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

logger = logging.getLogger("slotfill.service")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "body_too_large",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal_error",
    503: "not_ready",
}

# pydantic error type -> our code. Our own validators raise PydanticCustomError whose
# type already is one of our codes (empty_text, invalid_characters, ...), kept as is.
VALIDATION_CODES = {
    "missing": "missing_field",
    "extra_forbidden": "unknown_field",
    "json_invalid": "invalid_json",
    "string_unicode": "invalid_characters",  # a lone surrogate where pydantic needs real text (e.g. a key)
}
# Raised by the validators in schemas.py.
CUSTOM_CODES = frozenset({
    "empty_text", "empty_tokens", "invalid_token", "invalid_characters", "text_and_tokens", "missing_input",
    "empty_batch", "invalid_intent_ranking", "invalid_min_confidence", "invalid_alternatives",
})


class APIError(Exception):
    """Raise anywhere in a request to answer with the JSON error shape."""

    def __init__(self, status_code: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers


MAX_TEXT = 300  # longest message or field echoed back (a field name comes from the client)


def _clean(value: str | None) -> str | None:
    """Bounded, and encodable as UTF-8 (a lone surrogate from the client becomes ``\\udxxx`` text)."""
    if value is None:
        return None
    if len(value) > MAX_TEXT:
        value = value[:MAX_TEXT] + "..."
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def error_payload(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": _clean(message), "field": _clean(field)}}


def error_bytes(code: str, message: str, field: str | None = None) -> bytes:
    return json.dumps(error_payload(code, message, field), ensure_ascii=False).encode("utf-8")


def error_response(request: Request | None, status_code: int, code: str, message: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    if request is not None:
        count_error(request.app, code)
    return Response(error_bytes(code, message, field), status_code=status_code, headers=headers,
                    media_type="application/json")


def count_error(app: Any, code: str) -> None:
    metrics = getattr(getattr(app, "state", None), "metrics", None)
    if metrics is not None:
        metrics.errors.labels(code=code).inc()


def field_path(loc: Iterable[Any]) -> str | None:
    """``("body", "items", 3, "text")`` -> ``"items.3.text"``; the body itself -> ``None``."""
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("body", "query", "path", "header", "cookie"):
        parts = parts[1:]
    return ".".join(parts) or None


def _validation_code(error: dict[str, Any]) -> str:
    kind = str(error.get("type", ""))
    if kind in CUSTOM_CODES:
        return kind
    if kind in VALIDATION_CODES:
        return VALIDATION_CODES[kind]
    if kind.endswith("_type") or kind in ("model_attributes_type", "dataclass_type", "is_instance_of"):
        return "wrong_type"
    if kind.startswith("string_") or kind.endswith("_parsing"):
        return "wrong_type"
    return "invalid_value"


def _validation_message(error: dict[str, Any], field: str | None) -> str:
    kind = str(error.get("type", ""))
    if kind == "extra_forbidden":
        return f"unknown field {field!r}" if field else "unknown field"
    if kind == "missing":
        return f"field {field!r} is required" if field else "a JSON request body is required"
    message = str(error.get("msg", "invalid value"))
    return message[:1].lower() + message[1:] if message else "invalid value"


def describe_validation_error(error: dict[str, Any]) -> tuple[str, str, str | None]:
    """``(code, message, field)`` of one pydantic error, worded as this API words it (for other error
    shapes, e.g. the Open Inference Protocol's in ``routers/v2.py``)."""
    field = field_path(error.get("loc", ()))
    code = _validation_code(error)
    if code == "missing_field" and field is None:
        code = "missing_body"
    return code, _validation_message(error, field), field


def validation_error_response(request: Request, errors: Sequence[dict[str, Any]]) -> Response:
    """Report the first error (its field names the place; fixing it reveals the next one)."""
    if not errors:
        return error_response(request, 422, "invalid_request", "invalid request")
    error = errors[0]
    field = field_path(error.get("loc", ()))
    code = _validation_code(error)
    if code == "missing_field" and field is None:
        code = "missing_body"
    status = 400 if code == "invalid_json" else 422
    return error_response(request, status, code, _validation_message(error, field), field)


async def api_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    # The frames the error passed through hold the request's parsed body (up to max_body_bytes of JSON, tens of
    # MB as objects); the exception itself may live on in a reference cycle until the next collection.
    traceback.clear_frames(exc.__traceback__)
    return error_response(request, exc.status_code, exc.code, exc.message, exc.field, exc.headers)


async def request_validation_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    traceback.clear_frames(exc.__traceback__)
    return validation_error_response(request, list(exc.errors()))


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    if exc.status_code == 404:
        message = f"no route {request.url.path!r}"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        if allowed:  # Starlette joins a set: put it in one order, whatever the hash seed
            allowed = ", ".join(sorted(method.strip() for method in allowed.split(",")))
            exc.headers = {**{k: v for k, v in (exc.headers or {}).items() if k.lower() != "allow"}, "Allow": allowed}
        message = f"method {request.method} not allowed on {request.url.path!r}" + (
            f"; allowed: {allowed}" if allowed else "")
    else:
        message = str(exc.detail) if exc.detail else code.replace("_", " ")
    if exc.status_code < 400 or exc.status_code in (204, 304):  # never produced here, but keep it valid
        return Response(status_code=exc.status_code, headers=exc.headers)
    return error_response(request, exc.status_code, code, message, None, exc.headers)


async def unhandled_exception_handler(request: Request, exc: Exception) -> Response:
    """Last resort (the request middleware normally catches these first): log, answer JSON 500."""
    logger.error("unhandled error", exc_info=exc,
                 extra={"request_id": request.scope.get("state", {}).get("request_id")})
    return error_response(request, 500, "internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(APIError, api_error_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(StarletteHTTPException, http_exception_handler)
    app.add_exception_handler(Exception, unhandled_exception_handler)
