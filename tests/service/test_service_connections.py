"""Connection-level limits (``service/protocol.py``) against ``python -m service`` over raw sockets.

Each reproduction of the hardening issue, with the fixed behaviour: a 50 MB header and 20,000 headers are
431 in the JSON error shape (no longer a stalled event loop), a client that sends part of its headers or
of its body is answered 408 and dropped after the configured timeout (no longer held open for ever), an
idle keep-alive connection is closed, a connection past the cap closes an idle one or is answered 503,
260 slow connections against ``ulimit -n 256`` no longer make ``/health`` fail, and what the HTTP parser
refuses is a JSON 400. The timeouts here are short (1 s) so that the tests wait little; the defaults and
their reasons are in ``service/settings.py``.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_testlib import SERVER_ENV, Server, assert_answers_correctly, start_server, stop_server

from service.settings import Settings

TIMEOUT_S = 1.0
SOCKET_TIMEOUT_S = 20.0  # what a test waits for the server at most: far above every limit it checks
MAX_HEADER_BYTES = Settings.model_fields["max_header_bytes"].default
MAX_HEADERS = Settings.model_fields["max_headers"].default


@pytest.fixture(scope="module")
def timeout_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    env = {**SERVER_ENV, "SLOTFILL_HEADER_TIMEOUT_S": str(TIMEOUT_S), "SLOTFILL_BODY_TIMEOUT_S": str(TIMEOUT_S),
           "SLOTFILL_KEEP_ALIVE_S": str(TIMEOUT_S)}
    running = start_server(model_dir, tmp_path_factory.mktemp("connections") / "server.log", env)
    try:
        yield running
    finally:
        stop_server(running)


def address(server: Server) -> tuple[str, int]:
    host, port = server.base_url.removeprefix("http://").split(":")
    return host, int(port)


def connect(server: Server) -> socket.socket:
    sock = socket.create_connection(address(server))
    sock.settimeout(SOCKET_TIMEOUT_S)
    return sock


def read_to_close(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes its side."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_error(raw: bytes, status: int, code: str) -> dict[str, Any]:
    """One response, the API's error shape, and the server closes the connection after it."""
    answered, headers, body = parse_response(raw)
    assert answered == status, raw[:500]
    assert headers["content-type"] == "application/json" and headers["connection"] == "close", headers
    assert len(body) == int(headers["content-length"]) and headers.get("x-request-id"), headers
    error = json.loads(body)["error"]
    assert set(error) == {"code", "message", "field"} and error["code"] == code and error["field"] is None, error
    return error


def exchange(server: Server, request: bytes) -> bytes:
    with connect(server) as sock:
        sock.sendall(request)
        return read_to_close(sock)


def get(path: str, headers: bytes = b"") -> bytes:
    return b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\nConnection: close\r\n" + headers + b"\r\n"


# ----------------------------------------------------------------------------- header limits
def test_a_50_mb_header_is_431(timeout_server: Server) -> None:
    """The client streams the header; the server answers after 16 KiB and drops the rest unread."""
    chunk = b"a" * 65536
    with connect(timeout_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\nX-Big: ")
        sent = 0
        while sent < 50 * 1024 * 1024 and not select.select([sock], [], [], 0)[0]:
            sock.sendall(chunk)
            sent += len(chunk)
        raw = read_to_close(sock)
    assert sent < 50 * 1024 * 1024  # answered before the header was through
    error = assert_json_error(raw, 431, "headers_too_large")
    assert error["message"] == f"the request line and headers are larger than {MAX_HEADER_BYTES} bytes"


def test_20000_headers_are_431(timeout_server: Server) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % index for index in range(20_000))
    assert_json_error(exchange(timeout_server, get("/health", headers)), 431, "headers_too_large")


def test_the_header_size_limit_is_exact(timeout_server: Server) -> None:
    def head_of(size: int) -> bytes:
        head = get("/health", b"X-Pad: \r\n")
        return head.replace(b"X-Pad: ", b"X-Pad: " + b"p" * (size - len(head)))

    assert len(head_of(MAX_HEADER_BYTES)) == MAX_HEADER_BYTES
    assert parse_response(exchange(timeout_server, head_of(MAX_HEADER_BYTES)))[0] == 200
    assert_json_error(exchange(timeout_server, head_of(MAX_HEADER_BYTES + 1)), 431, "headers_too_large")


def test_the_header_count_limit_is_exact(timeout_server: Server) -> None:
    def with_lines(count: int) -> bytes:  # Host and Connection are two of them
        return get("/health", b"".join(b"X-H%d: v\r\n" % index for index in range(count - 2)))

    assert parse_response(exchange(timeout_server, with_lines(MAX_HEADERS)))[0] == 200
    error = assert_json_error(exchange(timeout_server, with_lines(MAX_HEADERS + 1)), 431, "headers_too_large")
    assert error["message"] == f"more than {MAX_HEADERS} header lines"


# ----------------------------------------------------------------------------- timeouts
def test_partial_headers_get_408_after_the_header_timeout(timeout_server: Server) -> None:
    with connect(timeout_server) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")
        raw = read_to_close(sock)
        waited = time.monotonic() - started
    error = assert_json_error(raw, 408, "request_timeout")
    assert error["message"] == f"the request line and headers did not arrive within {TIMEOUT_S:g} s"
    assert waited >= TIMEOUT_S * 0.9


def test_trickled_headers_are_dropped_all_the_same(timeout_server: Server) -> None:
    """The header timeout is a total, not per read: a byte every 0.1 s does not keep the connection."""
    request = get("/health")
    with connect(timeout_server) as sock:
        started = time.monotonic()
        sent = 0
        while not select.select([sock], [], [], 0.1)[0]:
            sock.sendall(request[sent:sent + 1])
            sent += 1
            assert sent < len(request), "the server waited for the whole head"
        raw = read_to_close(sock)
        waited = time.monotonic() - started
    assert_json_error(raw, 408, "request_timeout")
    assert TIMEOUT_S * 0.9 <= waited


def test_a_partial_body_gets_408_after_the_body_timeout(timeout_server: Server) -> None:
    with connect(timeout_server) as sock:
        sock.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"text\": ")
        started = time.monotonic()
        raw = read_to_close(sock)
        waited = time.monotonic() - started
    error = assert_json_error(raw, 408, "request_timeout")
    assert error["message"] == f"the request body did not arrive within {TIMEOUT_S:g} s"
    assert waited >= TIMEOUT_S * 0.9


def test_a_trickled_chunked_body_is_dropped(timeout_server: Server) -> None:
    with connect(timeout_server) as sock:
        sock.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        body = b'{"text": "book a table"}'
        sent = 0
        while not select.select([sock], [], [], 0.1)[0]:
            sock.sendall(b"1\r\n" + body[sent % len(body):sent % len(body) + 1] + b"\r\n")
            sent += 1
            assert sent < 100, "the server waited for the whole body"
        assert_json_error(read_to_close(sock), 408, "request_timeout")


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(timeout_server: Server) -> None:
    with connect(timeout_server) as sock:
        started = time.monotonic()
        assert read_to_close(sock) == b""
        assert time.monotonic() - started >= TIMEOUT_S * 0.9


def test_an_idle_keep_alive_connection_is_closed(timeout_server: Server) -> None:
    with connect(timeout_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.endswith(b"}"):
            raw += sock.recv(65536)
        assert parse_response(raw)[0] == 200
        answered = time.monotonic()
        assert read_to_close(sock) == b""  # no second answer: the server closed the idle connection
        assert time.monotonic() - answered >= TIMEOUT_S * 0.9


def test_a_request_within_the_timeouts_is_answered(timeout_server: Server, predictor: Any) -> None:
    """A body sent in pieces faster than the timeout is fine."""
    body = b'{"text": "book a table for 4 at chez pierre tomorrow at 7pm"}'
    with connect(timeout_server) as sock:
        sock.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body))
        for start in range(0, len(body), 20):
            time.sleep(0.05)
            sock.sendall(body[start:start + 20])
        status, _, answer = parse_response(read_to_close(sock))
    assert status == 200 and json.loads(answer)["labels"]
    with timeout_server.client() as client:
        assert_answers_correctly(client, predictor)


# ----------------------------------------------------------------------------- parser errors
@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/9.9\r\nHost: test\r\n\r\n",
    b"POST /v1/tag HTTP/1.1\r\nHost: test\r\nContent-Length: twelve\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: test\r\nBad Header\r\n\r\n",
], ids=["not HTTP", "HTTP/9.9", "bad Content-Length", "header without a colon"])
def test_what_the_parser_refuses_is_a_json_400(timeout_server: Server, request_bytes: bytes) -> None:
    error = assert_json_error(exchange(timeout_server, request_bytes), 400, "invalid_http")
    assert error["message"].startswith("the request is not valid HTTP/1.1: ")


def test_refusals_are_counted_and_logged(timeout_server: Server) -> None:
    with timeout_server.client() as client:
        metrics = client.get("/metrics").text
    for code in ("headers_too_large", "request_timeout", "invalid_http"):
        assert f'slotfill_errors_total{{code="{code}"}}' in metrics, code
    refusals = [record for record in timeout_server.log_records() if record.get("message") == "request refused"]
    assert {record["code"] for record in refusals} >= {"headers_too_large", "request_timeout", "invalid_http"}
    assert all(record["client"].startswith("127.0.0.1:") for record in refusals)


# ----------------------------------------------------------------------------- the connection cap
OPEN_FILES = 256  # as in the reproduction: `ulimit -n 256`
CAP = OPEN_FILES - 64  # max_connections 0 (auto): the open-file limit less the headroom (service/protocol.py)


@pytest.fixture(scope="module")
def capped_server(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(model_dir, tmp_path_factory.mktemp("capped") / "server.log", SERVER_ENV,
                           open_files=OPEN_FILES)
    try:
        yield running
    finally:
        stop_server(running)


def closed_by_server(sock: socket.socket, wait_s: float = 0.0) -> bool:
    """The server closed ``sock`` within ``wait_s``: an orderly end of stream, or a reset (a close with
    unread bytes from the client in the server's buffer is sent as RST)."""
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(wait_s * 1000):
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_260_slow_connections_leave_health_answering(capped_server: Server) -> None:
    """The issue's reproduction: 260 connections sending partial headers against 256 open files. Past the cap,
    each new connection closes the one that has waited longest without a request in progress."""
    slow = [connect(capped_server) for _ in range(260)]
    try:
        for sock in slow:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n")  # and nothing more
        assert parse_response(exchange(capped_server, get("/health")))[0] == 200
        assert closed_by_server(slow[0], wait_s=SOCKET_TIMEOUT_S)
        closed = [index for index, sock in enumerate(slow) if closed_by_server(sock, wait_s=0.01)]
        assert len(closed) >= 260 - CAP
        assert closed == list(range(len(closed)))  # the oldest went first
    finally:
        for sock in slow:
            sock.close()


def test_idle_keep_alive_connections_make_room_past_the_cap(capped_server: Server) -> None:
    idle = [connect(capped_server) for _ in range(CAP)]
    try:
        for sock in idle:  # one request each, then idle, kept alive
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        for sock in idle:
            raw = b""
            while not raw.endswith(b"}"):
                raw += sock.recv(65536)
            assert parse_response(raw)[0] == 200
        assert parse_response(exchange(capped_server, get("/v1/model")))[0] == 200
        assert closed_by_server(idle[0], wait_s=SOCKET_TIMEOUT_S)
        assert not closed_by_server(idle[-1], wait_s=0.1)
    finally:
        for sock in idle:
            sock.close()


def test_past_the_cap_with_every_connection_busy_the_answer_is_503(capped_server: Server) -> None:
    busy = [connect(capped_server) for _ in range(CAP + 5)]
    try:
        for sock in busy:  # a request in progress on each: its body has not arrived yet
            sock.sendall(b"POST /v1/tag HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{")
        time.sleep(0.5)  # the server has read every head
        raw = exchange(capped_server, get("/v1/model"))
        answered, headers, _ = parse_response(raw)
        assert answered == 503 and headers["retry-after"] == "1", raw[:500]
        assert_json_error(raw, 503, "overloaded")
        assert parse_response(exchange(capped_server, get("/health")))[0] == 200  # a liveness probe is served
    finally:
        for sock in busy:
            sock.close()
    with httpx.Client(base_url=capped_server.base_url, timeout=SOCKET_TIMEOUT_S) as client:
        deadline = time.monotonic() + SOCKET_TIMEOUT_S
        while (status := client.get("/v1/model").status_code) != 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # the server sees the closed sockets
        assert status == 200
