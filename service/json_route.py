"""A route class that checks a JSON body's transport before FastAPI parses it.

For a request with a body it answers 415 unless the content type is ``application/json``
(or ``application/*+json``; a ``charset`` other than UTF-8 is refused too), 400 ``invalid_utf8``
when the bytes are not UTF-8, and 400 ``invalid_json`` when they are not JSON, including the
cases where Python's parser raises something other than ``JSONDecodeError`` (nesting too deep,
an integer literal over the conversion limit) and the ``NaN`` / ``Infinity`` literals Python
accepts but JSON does not. An object with the same key twice is a 422 ``duplicate_field`` naming
it (``items.2.text``): Python would silently keep the last value, and a proxy or logger in front
of the service that keeps the first one would then see a different request from the one served.
A number too big for a float (``1e999999``) is valid JSON; it parses to infinity and fails the
schema like any other number where a string is expected. The parsed value is handed on so
FastAPI does not parse it twice.

A body over :data:`THREAD_PARSE_BYTES` is decoded, parsed and checked against the route's limits
(``service/limits.py``) in a worker thread, one at a time per app, with the cycle collector paused
(JSON has no reference cycles, but the containers of a 1 MiB body trigger enough collections to
cost several times the parse), and a refused body is freed there. The event loop serves other
requests meanwhile: the parse runs the standard library's pure-Python scanner, an object of thousands of
keys is built a thousand at a time, and, for the parse's duration, the interpreter's switch interval is
:data:`SWITCH_INTERVAL_S` instead of 5 ms: every time the event loop wakes it waits for the lock that
long at most. Before that, a large body with more commas than any request within the limits can hold is
refused unparsed (``check_separators`` in ``service/limits.py``): it would only keep a core busy.
Then the body is validated once: a body that fails validation is answered from that one
validation, worded as FastAPI words it, never validated a second time.

:class:`AdmittedRoute` (the tag routes) also puts each request behind the app's admission limit
(``service/admission.py``) before its JSON is parsed.
"""

from __future__ import annotations

import email.message
import functools
import gc
import inspect
import json
import json.scanner
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import anyio
import anyio.to_thread
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel

from .admission import admission_for
from .errors import APIError
from .limits import body_check, check_separators


@functools.lru_cache(maxsize=256)  # clients send a handful of distinct values; parsing one is not free
def _is_json(content_type: str) -> tuple[bool, str | None]:
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False, None
    subtype = message.get_content_subtype()
    charset = message.get_param("charset")
    return (subtype == "json" or subtype.endswith("+json")), (str(charset) if charset else None)


class _DuplicateKey(ValueError):
    """An object has the same key twice (raised by the parser's object hook; the path is found afterwards)."""


LARGE_OBJECT = 1024  # keys; no object of a request the service accepts has more than a hundred


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Called by the C parser once per object: building the dict from the pairs and comparing the
    # lengths costs about what the parser's own dict building does.
    if len(pairs) > LARGE_OBJECT:
        return _unique_keys_in_steps(pairs)
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _DuplicateKey
    return obj


def _unique_keys_in_steps(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """:func:`_unique_keys` for an object of thousands of keys (a body that will be refused), a thousand at a
    time: ``dict(pairs)`` of 80,000 keys holds the interpreter lock for 11 ms in one piece, and so does the
    parser's freeing of the pairs after this returns, unless they are gone by then."""
    count = len(pairs)
    obj: dict[str, Any] = {}
    for start in range(0, count, LARGE_OBJECT):
        obj.update(pairs[start:start + LARGE_OBJECT])
    while pairs:
        del pairs[-LARGE_OBJECT:]
    if len(obj) != count:
        raise _DuplicateKey
    return obj


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not a JSON value")


# One decoder, made once: ``json.loads`` with keyword arguments would build a new one per call.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_not_json)
# The same for a large body (parsed in a worker thread), with the standard library's pure-Python scanner in
# place of the C one (strings are still read by the C ``scanstring``): the C scanner holds the interpreter
# lock from the first byte to the last -- 20 to 30 ms for a megabyte of empty lists or ``true`` fields, during
# which /health waited -- while Python code hands the lock to the event loop every switch interval. It costs
# 5 ms instead of 0.4 for a full batch of 64 items of 128 tokens, and runs only for bodies over 64 KiB.
_THREAD_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_not_json)
_THREAD_DECODER.scan_once = json.scanner.py_make_scanner(_THREAD_DECODER)


class _Marked(dict):
    """An object that had a duplicated key (``duplicate``); only built on the error path."""

    duplicate: str | None = None


def _mark_duplicates(pairs: list[tuple[str, Any]]) -> _Marked:
    obj = _Marked(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                obj.duplicate = key
                break
            seen.add(key)
    return obj


def duplicate_key_path(text: str) -> str | None:
    """Dotted path of a duplicated key in JSON ``text`` (``items.2.text``), or ``None``.

    The error path only: it parses again, marking the objects with a duplicated key, and walks
    the result (iteratively: the nesting is as deep as the parser allowed)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(json.loads(text, object_pairs_hook=_mark_duplicates), ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, dict):
            if isinstance(value, _Marked) and value.duplicate is not None:
                return ".".join((*path, value.duplicate))
            children = [(child, (*path, str(key))) for key, child in value.items()]
        elif isinstance(value, list):
            children = [(child, (*path, str(index))) for index, child in enumerate(value)]
        else:
            continue
        stack.extend(reversed(children))  # depth first, in document order
    return None


def _unchanged(value: Any) -> Any:
    return value


async def check_json_body(request: Request, finish: Callable[[Any], Any] = _unchanged) -> None:
    """The transport checks, then the body parsed and ``finish`` applied to it (the route's limits:
    :func:`decode_json`), cached on the request for FastAPI and the route."""
    body = await request.body()
    if not body:
        return  # FastAPI reports a missing body as a 422 on the field "body" (or uses the default)
    content_type = request.headers.get("content-type", "")
    is_json, charset = _is_json(content_type) if content_type else (False, None)
    if not is_json:
        raise APIError(415, "unsupported_media_type",
                       f"content type must be application/json, not {content_type or 'missing'!r}")
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise APIError(415, "unsupported_media_type", f"charset must be utf-8, not {charset!r}")
    # Starlette caches the parsed body here; FastAPI's ``await request.json()`` then reuses it.
    request._json = await decode_json(body, request.app, finish)  # noqa: SLF001


# Past this many bytes a body is parsed in a worker thread: a legitimate /v1/tag body is a few hundred
# bytes, and a full batch of long texts some tens of KiB, which the event loop parses in well under a
# millisecond; a 1 MiB body of small containers takes tens of milliseconds.
THREAD_PARSE_BYTES = 64 * 1024
# The interpreter's switch interval while a large body is parsed (process-wide; one parse at a time). At the
# default 5 ms, each of the several times the event loop wakes for a request waited up to 5 ms for the lock:
# /health took 7 to 12 ms at the median during a stream of 1 MiB bodies, 2.3 ms with this.
SWITCH_INTERVAL_S = 0.0005


async def decode_json(body: bytes, app: Any, finish: Callable[[Any], Any] = _unchanged) -> Any:
    """``finish`` of the JSON value of the UTF-8 ``body``, or the :class:`APIError` that answers it
    (:func:`parse_json`, 400 ``invalid_utf8``, or ``finish``'s own: the route's limits). A large body is
    parsed and finished off the event loop, one at a time per ``app``; when ``finish`` refuses it, the
    parsed value is freed there too."""
    if len(body) > THREAD_PARSE_BYTES:
        check_separators(body, app.state.settings)
        return await anyio.to_thread.run_sync(_decode_large, body, finish, limiter=_parse_limiter(app))
    return finish(_decode_json(body))


def _parse_limiter(app: Any) -> anyio.CapacityLimiter:
    """The app's one-at-a-time limiter for large bodies, made on first use (on the app's event loop)."""
    state = app.state
    try:
        return state.parse_limiter
    except AttributeError:
        limiter = state.parse_limiter = anyio.CapacityLimiter(1)
        return limiter


def _decode_json(body: bytes, decoder: json.JSONDecoder | None = None) -> Any:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise APIError(400, "invalid_utf8", f"request body is not valid UTF-8 (byte {exc.start})") from None
    return parse_json(text, decoder or _DECODER)


def _decode_large(body: bytes, finish: Callable[[Any], Any]) -> Any:
    # The parse creates no garbage cycles for the collector to find; with it paused, a body of 350,000 empty
    # lists parsed in 26 ms instead of 131. Process-wide, for the milliseconds of the parse and the limits.
    enabled = gc.isenabled()
    gc.disable()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        return _finish_or_free(_decode_json(body, _THREAD_DECODER), finish)
    finally:
        sys.setswitchinterval(interval)
        if enabled:
            gc.enable()


def _finish_or_free(value: Any, finish: Callable[[Any], Any]) -> Any:
    """``finish(value)``; when it refuses the body, the parsed value is freed here, while the collector is
    paused, instead of living on in the frames of the error's traceback: otherwise the first collection
    after it walks the hundreds of thousands of objects of a refused megabyte, on the event loop."""
    try:
        return finish(value)
    except APIError as exc:
        error = exc.with_traceback(None)
    del value
    raise error


def _invalid_json(exc: Exception) -> APIError:
    if isinstance(exc, json.JSONDecodeError):
        return APIError(400, "invalid_json", f"request body is not valid JSON: {exc.msg} at character {exc.pos}")
    return APIError(400, "invalid_json", f"request body is not valid JSON: {exc}"[:300])


def parse_json(text: str, decoder: json.JSONDecoder = _DECODER) -> Any:
    """The JSON value of ``text``, or the :class:`APIError` that answers it (400 or 422 ``duplicate_field``)."""
    try:
        return decoder.decode(text)
    except _DuplicateKey:
        pass
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError
        raise _invalid_json(exc) from None
    try:
        # The parser stopped at the first duplicate: what follows it may still be broken (a 400 then).
        field = duplicate_key_path(text)
    except (ValueError, RecursionError) as exc:
        raise _invalid_json(exc) from None
    raise APIError(422, "duplicate_field", f"field {field!r} appears more than once" if field else
                   "a field appears more than once", field)


_NOT_PARSED = object()


class JSONBodyRoute(APIRoute):
    """Checks the body's transport first (:func:`check_json_body`), then the limits on its parsed value
    (``service/limits.py``), before FastAPI validates it.

    For an endpoint that takes only ``(body: Model, request: Request)``, is ``async`` and returns
    a ``Response`` itself (``/v1/tag``, ``/v1/tag/batch``), the body is validated here, once: a body
    that validates goes straight to the endpoint (FastAPI's generic handler -- content-type parsing
    again, dependency solving, exit stacks -- costs more CPU than the rest of such a request), and
    one that does not raises FastAPI's own ``RequestValidationError`` with the errors of that
    validation (the ones FastAPI would find: it validates the same value with the same field).
    Anything else -- no body, another endpoint shape -- takes FastAPI's own path.
    """

    def _fast_path_field(self) -> Any:
        try:
            return self._fast_path_field_or_none()
        except AttributeError:  # another FastAPI release lays out its internals differently: use its own path
            return None

    def _fast_path_field_or_none(self) -> Any:
        dependant = self.dependant
        if (len(dependant.body_params) != 1 or dependant.path_params or dependant.query_params
                or dependant.header_params or dependant.cookie_params or dependant.dependencies
                or self.dependencies or dependant.response_param_name or dependant.background_tasks_param_name
                or dependant.websocket_param_name or dependant.http_connection_param_name
                or dependant.security_scopes_param_name or not dependant.request_param_name
                or not inspect.iscoroutinefunction(self.endpoint)):
            return None
        field = dependant.body_params[0]
        annotation = field.field_info.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)) or field.field_info.embed:
            return None
        return field

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        check = body_check(self.body_field.field_info.annotation)
        field = self._fast_path_field()
        if field is None:
            async def checked_handler(request: Request) -> Response:
                settings = request.app.state.settings
                await check_json_body(request, lambda value: check(value, settings))  # FastAPI reads what it gives
                return await handler(request)

            return checked_handler

        endpoint = self.endpoint
        body_name, request_name = field.name, self.dependant.request_param_name

        async def fast_handler(request: Request) -> Response:
            settings = request.app.state.settings
            await check_json_body(request, lambda value: check(value, settings))
            parsed = getattr(request, "_json", _NOT_PARSED)
            if parsed is _NOT_PARSED:
                return await handler(request)  # no body: FastAPI answers (and words the error)
            value, errors = field.validate(parsed, {}, loc=("body",))
            if errors:
                raise RequestValidationError(errors, body=parsed)
            response = await endpoint(**{body_name: value, request_name: request})
            if isinstance(response, Response):
                return response
            raise TypeError(f"{endpoint.__qualname__} must return a Response")  # see the docstring

        return fast_handler


class AdmittedRoute(JSONBodyRoute):
    """A :class:`JSONBodyRoute` behind the app's admission limit (``service/admission.py``): at the
    limit it answers 503 ``overloaded`` before the body's JSON is parsed. Answers of every kind
    (200, 4xx, 500) leave the count, so it never leaks."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def admitted_handler(request: Request) -> Response:
            gate = admission_for(request.app)
            if not gate.try_enter():
                return gate.refuse(request)
            try:
                return await handler(request)
            finally:
                gate.leave()

        return admitted_handler
