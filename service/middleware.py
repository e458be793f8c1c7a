"""Pure ASGI middleware (no ``BaseHTTPMiddleware``: no extra task or body copy per request).

``RequestContextMiddleware`` (outermost of ours): request id, one access-log line, metrics,
and a JSON 500 for anything unhandled.
``BodyLimitMiddleware``: reads the body before anything parses it and answers 413 when it
is over the limit, whether or not the client sent a Content-Length (chunked bodies included).
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Sequence

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_bytes
from .metrics import Metrics

access_logger = logging.getLogger("slotfill.service.access")
logger = logging.getLogger("slotfill.service")

REQUEST_ID_HEADER = b"x-request-id"
# Accept a caller's id only when it is short and made of safe characters (no header or log injection).
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}")
UNMATCHED_ROUTE = "<unmatched>"
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
CLIENT_CLOSED = 499  # logged when the client went away before any response (nginx's convention)


def request_id_from(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            try:
                candidate = value.decode("ascii")
            except UnicodeDecodeError:
                break
            if REQUEST_ID_PATTERN.fullmatch(candidate):
                return candidate
            break
    # 128 random bits as 32 hex digits, like uuid4().hex, at a quarter of its cost (no UUID object).
    return os.urandom(16).hex()


def _json_error_messages(status: int, code: str, message: str, request_id: str | None,
                         extra_headers: Sequence[tuple[bytes, bytes]] = ()) -> tuple[Message, Message]:
    body = error_bytes(code, message)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if request_id:
        headers.append((REQUEST_ID_HEADER, request_id.encode()))
    headers.extend(extra_headers)
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False})


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, metrics: Metrics,
                 route_patterns: Sequence[tuple[re.Pattern[str], str]] = ()) -> None:
        self.app = app
        self.metrics = metrics
        self.route_patterns = tuple(route_patterns)
        # (method, route, status) -> (requests counter, latency histogram) children: ``labels()``
        # takes a lock and builds a key on every call. Bounded: methods, routes and statuses are.
        self._series: dict[tuple[str, str, int], tuple] = {}

    def _series_for(self, method: str, route: str, status: int) -> tuple:
        key = (method, route, status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (
                self.metrics.requests.labels(method=method, route=route, status=str(status)),
                self.metrics.latency.labels(method=method, route=route))
        return series

    def _route_of(self, scope: Scope) -> str:
        """The route template (bounded label values), e.g. ``/v1/tag``; ``<unmatched>`` for 404s."""
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        # Answered before routing (e.g. 413 from the body limit): match the path ourselves.
        request_path = scope.get("path", "")
        for pattern, template in self.route_patterns:
            if pattern.match(request_path):
                return template
        return UNMATCHED_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = CLIENT_CLOSED  # unless a response starts (or an error sets 500)
        response_started = False
        rid_header = (REQUEST_ID_HEADER, request_id.encode("ascii"))

        async def send_with_context(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = [item for item in message.get("headers", ()) if item[0].lower() != REQUEST_ID_HEADER]
                headers.append(rid_header)
                message = {**message, "headers": headers}
            await send(message)

        self.metrics.in_progress.inc()
        try:
            await self.app(scope, receive, send_with_context)
        except Exception as exc:
            status = 500
            logger.error("unhandled error", exc_info=exc,
                         extra={"request_id": request_id, "method": scope.get("method"), "path": scope.get("path")})
            self.metrics.errors.labels(code="internal_error").inc()
            if response_started:
                raise  # too late for an error body; the server drops the connection
            start, body = _json_error_messages(500, "internal_error", "internal server error", request_id)
            await send(start)
            await send(body)
        finally:
            self.metrics.in_progress.dec()
            elapsed = time.perf_counter() - started
            route = self._route_of(scope)
            method = scope.get("method", "")
            method = method if method in KNOWN_METHODS else "OTHER"  # bounded label values
            requests, latency = self._series_for(method, route, status)
            requests.inc()
            latency.observe(elapsed)
            if access_logger.isEnabledFor(logging.INFO):
                # ``Logger.info`` minus ``findCaller`` (a walk up the stack on every request): the
                # record names this function; filters and handlers run as usual in ``handle``.
                access_logger.handle(access_logger.makeRecord(
                    access_logger.name, logging.INFO, __file__, 0, "request", (), None, "__call__",
                    {"request_id": request_id, "method": method, "path": scope.get("path", ""), "route": route,
                     "status": status, "latency_ms": round(elapsed * 1000, 3),
                     "client": (scope.get("client") or ("", 0))[0]}))


class BodyLimitMiddleware:
    """Buffer the request body up to ``max_body_bytes``; past that answer 413 without parsing."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def _reject(self, scope: Scope, send: Send, detail: str) -> None:
        if self.metrics is not None:
            self.metrics.errors.labels(code="body_too_large").inc()
        request_id = scope.get("state", {}).get("request_id")
        # The body was not read to the end: ask the client to close so the rest is not parsed as a request.
        start, body = _json_error_messages(413, "body_too_large", detail, request_id, [(b"connection", b"close")])
        await send(start)
        await send(body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        message_too_large = f"request body is larger than {limit} bytes"
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared > limit:
                    await self._reject(scope, send, message_too_large)
                    return
                break

        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # http.disconnect: nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await self._reject(scope, send, message_too_large)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
