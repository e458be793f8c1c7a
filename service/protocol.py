"""The HTTP/1.1 protocol the service is served with: uvicorn's httptools protocol, with limits.

uvicorn's httptools protocol is the fastest it has, but it bounds neither the size of a request's
header section (a 50 MB header got past ``max_body_bytes`` and held the event loop for seconds)
nor the time a client takes to send one (connections sending a byte now and then were never
closed, until the process ran out of file descriptors), and it answers a request it cannot parse
with plain text. :class:`ServiceHttpProtocol` (``serve()`` passes it to uvicorn as ``http=``)
keeps uvicorn's parser and request handling and adds, per worker process, from the settings
(defaults and their reasons in ``service/settings.py``):

* ``max_header_bytes``: the request line and headers are counted as they arrive, before the parser
  buffers them; past the limit, 431 ``headers_too_large``. A request pipelined behind another in
  the same read is counted from the next read on, so it may pass the limit by up to one read.
* ``max_headers``: header lines; past the limit, 431 ``headers_too_large``.
* ``header_timeout_s``: from a connection's start, or a request's first byte, to the end of its
  headers. Past it, 408 ``request_timeout`` if part of a request arrived; a connection that sent
  nothing is closed without an answer (a client could take one for the answer to a request it
  sends later).
* ``body_timeout_s``: from the end of a request's headers to the end of its body, in total (not
  per read: a client trickling a byte a second is dropped too). Past it, 408 ``request_timeout``
  when no answer has started (the application reading the body sees the client disconnect),
  else the connection is closed.
* ``keep_alive_s``: uvicorn's own ``timeout_keep_alive``, for idle connections between requests.
* ``max_connections``: past it, a new connection closes one that is being closed after an error
  answer, else the connection that has waited longest without a request in progress (idle
  between requests, or still sending its head): those cost the server a file descriptor and
  nothing else, and a client reconnects. When every connection
  has a request in progress, the new connection's request is answered 503 ``overloaded`` (with
  ``Retry-After``) and the connection closed -- except a liveness probe (``/health``,
  ``/v2/health/live``), which is served: an overloaded process is not a dead one.
* a request the parser refuses: 400 ``invalid_http``, naming the parser's reason.

Each of these answers is the API's JSON error shape (``service/errors.py``) with ``Connection:
close`` and an ``X-Request-ID``, counted in ``slotfill_errors_total`` and logged. After it the
connection stops sending, then reads and drops what the client still sends, for up to
:data:`LINGER_S` seconds and :data:`LINGER_BYTES` bytes, before closing: closing a socket with
unread input makes the kernel reset the connection, and the client would see the reset instead of
the answer.

Per connection this costs a timer; per request, a few integer operations per read and per header
line, and a timer only when its head or body does not arrive in one read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from .errors import count_error, error_bytes

logger = logging.getLogger("slotfill.service")

LINGER_S = 2.0
LINGER_BYTES = 16 * 1024 * 1024  # read and dropped after an error answer at most (what socket buffers hold)
# Left to everything but connections when max_connections is 0 (auto): the listening socket, log files,
# the model's files while it loads or reloads, the event loop's own descriptors.
FD_HEADROOM = 64
AUTO_MAX_CONNECTIONS = 4096
LIVENESS_PATHS = frozenset({b"/health", b"/v2/health/live"})


def auto_max_connections() -> int:
    """``max_connections`` 0: the open-file limit (soft) minus :data:`FD_HEADROOM`, at most
    :data:`AUTO_MAX_CONNECTIONS`."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return AUTO_MAX_CONNECTIONS
    return max(1, min(AUTO_MAX_CONNECTIONS, soft - FD_HEADROOM))


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int
    max_headers: int
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    retry_after_s: int

    @classmethod
    def from_settings(cls, settings: Any) -> ConnectionLimits:
        return cls(settings.max_header_bytes, settings.max_headers, settings.header_timeout_s,
                   settings.body_timeout_s, settings.max_connections or auto_max_connections(),
                   settings.retry_after_s)


class _Shared:
    """What the connections of one server share: the limits, and the connections without a request in
    progress, longest waiting first (the ones to close past ``max_connections``)."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self.idle: OrderedDict[ServiceHttpProtocol, None] = OrderedDict()
        message = (f"the server has {limits.max_connections} connections open, each with a request in progress; "
                   f"retry after {limits.retry_after_s} s")
        self.overloaded_body = error_bytes("overloaded", message)


_SHARED: weakref.WeakKeyDictionary[Any, _Shared] = weakref.WeakKeyDictionary()


def _shared_for(config: Any, server_state: Any) -> _Shared:
    """The server's :class:`_Shared`, made by its first connection from the served app's settings (those of the
    environment when the app has none)."""
    shared = _SHARED.get(server_state)
    if shared is None:
        settings = getattr(getattr(config.loaded_app, "state", None), "settings", None)
        if settings is None:
            from .settings import load_settings

            settings = load_settings()
        shared = _SHARED[server_state] = _Shared(ConnectionLimits.from_settings(settings))
    return shared


class _Refused(Exception):
    """Raised by a parser callback to stop parsing a request that is refused (the reason is on the protocol)."""


def _request_id() -> bytes:
    return os.urandom(16).hex().encode("ascii")  # as service/middleware.py makes one


class ServiceHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with header limits, read timeouts, a connection cap and JSON errors
    (see the module's docstring). The state it adds:

    ``_in_body``: between the end of a request's headers and the end of its body. Otherwise the bytes
    that arrive belong to a request line and headers and count against ``_header_room``, which each
    completed request resets.
    """

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._shared = _shared_for(config, server_state)
        self._limits = self._shared.limits
        self._in_body = False
        self._head_started = False  # a byte of the current request arrived
        self._header_room = self._limits.max_header_bytes
        self._header_count = 0
        self._over_capacity = False
        self._refusal: tuple[int, str, str] | None = None
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._lingered = 0  # bytes dropped since the error answer

    # ------------------------------------------------------------------ connections
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        idle = self._shared.idle
        if len(self.connections) > self._limits.max_connections:
            victim = next(iter(idle), None)
            if victim is not None:
                victim._evict()
            else:
                self._over_capacity = True  # answered when its request's headers are in
        idle[self] = None
        self._header_timer = self.loop.call_later(self._limits.header_timeout_s, self._header_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._shared.idle.pop(self, None)
        self._cancel_timers()
        if self._linger_timer is not None:
            self._linger_timer.cancel()
            self._linger_timer = None
        super().connection_lost(exc)

    def _cancel_timers(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None

    def _evict(self) -> None:
        self._shared.idle.pop(self, None)
        self._log("connection closed", reason="max_connections")
        self.transport.close()

    # ------------------------------------------------------------------ input
    def data_received(self, data: bytes) -> None:
        if self._linger_timer is not None:  # answered and closing: what the client still sends is dropped
            self._lingered += len(data)
            if self._lingered > LINGER_BYTES:
                self.transport.close()
            return
        if self._in_body:
            self._feed(data)
            return
        room = self._header_room
        if len(data) <= room:
            self._header_room = room - len(data)
            self._feed(data)
            return
        # This read would pass the limit if the headers do not end within the room left: feed the room, then see.
        view = memoryview(data)
        self._header_room = 0
        self._feed(view[:room])
        if self._linger_timer is not None or self.transport.is_closing():
            return
        if not self._in_body and self._header_room == 0:  # no request ended within the room (that resets it)
            self._refuse(431, "headers_too_large",
                         f"the request line and headers are larger than {self._limits.max_header_bytes} bytes")
            return
        self.data_received(view[room:])  # type: ignore[arg-type]

    def _feed(self, data: bytes | memoryview) -> None:
        """uvicorn's ``data_received``, with the parser's refusals answered in the JSON shape."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError as exc:
            refusal, self._refusal = self._refusal, None
            if refusal is not None:
                self._refuse(*refusal)
            else:
                self._refuse(400, "invalid_http", f"the request is not valid HTTP/1.1: {exc}")
            return
        # A timer only for what did not arrive whole in this read (a request usually does): a head begun and
        # not ended (the first request's timer runs from the connection's start), or a body begun.
        if self._in_body:
            if self._body_timer is None:
                self._body_timer = self.loop.call_later(self._limits.body_timeout_s, self._body_timeout)
        elif self._head_started and self._header_timer is None:
            self._header_timer = self.loop.call_later(self._limits.header_timeout_s, self._header_timeout)

    # ------------------------------------------------------------------ parser callbacks
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_started = True
        self._header_count = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self._limits.max_headers:
            self._refusal = (431, "headers_too_large", f"more than {self._limits.max_headers} header lines")
            raise _Refused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        self._in_body = True
        self._shared.idle.pop(self, None)
        if (self._over_capacity and len(self.connections) > self._limits.max_connections
                and self.url.split(b"?", 1)[0] not in LIVENESS_PATHS):
            count_error(self.app, "overloaded")
            self._log("request refused", status=503, code="overloaded")
            app, self.app = self.app, self._overloaded
            try:
                super().on_headers_complete()
            finally:
                self.app = app
            return
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._head_started = False
        self._header_room = self._limits.max_header_bytes
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        cycle = self.cycle
        if not self.transport.is_closing() and not self._in_body and (cycle is None or cycle.response_complete):
            self._shared.idle[self] = None  # waiting for its next request

    async def _overloaded(self, scope: Any, receive: Any, send: Any) -> None:
        """The ASGI application that answers a request over ``max_connections`` (uvicorn runs it in place of ours)."""
        body = self._shared.overloaded_body
        await send({"type": "http.response.start", "status": 503, "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii")),
            (b"connection", b"close"), (b"retry-after", str(self._limits.retry_after_s).encode("ascii")),
            (b"x-request-id", _request_id())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    # ------------------------------------------------------------------ timeouts
    def _header_timeout(self) -> None:
        self._header_timer = None
        if not self._head_started:
            self._log("connection closed", reason="header_timeout")
            self.transport.close()
            return
        self._refuse(408, "request_timeout",
                     f"the request line and headers did not arrive within {self._limits.header_timeout_s:g} s")

    def _body_timeout(self) -> None:
        self._body_timer = None
        cycle = self.cycle
        message = f"the request body did not arrive within {self._limits.body_timeout_s:g} s"
        if cycle is not None and not cycle.response_started and not self.pipeline:
            cycle.disconnected = True  # the application waiting for the body gets http.disconnect
            cycle.message_event.set()
            self._answer(408, "request_timeout", message)
            return
        self._log("connection closed", reason="body_timeout")
        self.transport.close()

    # ------------------------------------------------------------------ answers
    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` and close, unless the answer to an earlier request is being written on this
        connection: then that answer ends it, and nothing more is read."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            self._log("request refused", status=status, code=code, error=message)
            count_error(self.app, code)
            cycle.keep_alive = False
            self.pipeline.clear()
            self.flow.pause_reading()
            self._cancel_timers()
            return
        self._answer(status, code, message)

    def _answer(self, status: int, code: str, message: str) -> None:
        count_error(self.app, code)
        self._log("request refused", status=status, code=code, error=message)
        body = error_bytes(code, message)
        head = [STATUS_LINE[status]]
        for name, value in self.server_state.default_headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-type: application/json\r\ncontent-length: ", str(len(body)).encode("ascii"),
                 b"\r\nconnection: close\r\nx-request-id: ", _request_id(), b"\r\n\r\n", body]
        self.transport.write(b"".join(head))
        self._cancel_timers()
        self._in_body = False
        idle = self._shared.idle
        idle[self] = None  # answered and closing: the first to go past max_connections
        idle.move_to_end(self, last=False)
        if not self.transport.can_write_eof():  # pragma: no cover - TCP transports can
            self.transport.close()
            return
        self.transport.write_eof()
        self.flow.resume_reading()
        self._linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _log(self, event: str, **fields: Any) -> None:
        client = f"{self.client[0]}:{self.client[1]}" if self.client else None
        logger.warning(event, extra={"client": client, **fields})
