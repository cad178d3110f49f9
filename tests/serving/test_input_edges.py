"""Input edges over a real socket to a real uvicorn server: the exact bytes an operator's probe sent.

Each test writes raw HTTP/1.1 (chunked bodies, a Content-Length the body never reaches, lone surrogates,
bytes that are not UTF-8) and reads the answer and the connection's fate with a deadline of its own, so a
server that hangs fails the test instead of hanging it.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI

from serving.config import ServingSettings

BODY_TIMEOUT_S = 1.0
LIMIT = 65_536
API_KEY = "test-admin-key-0123456789"
CHUNKED_HEAD = (
    b"POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float


@pytest.fixture(scope="module")
def port(app_factory: Callable[..., FastAPI], live_server: Callable) -> Iterator[int]:
    serving = ServingSettings(
        api_key=API_KEY, consume_events=False, body_timeout_s=BODY_TIMEOUT_S, max_body_bytes=LIMIT
    )
    with live_server(app_factory(serving=serving)) as live:
        yield live.port


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_answer(sock: socket.socket, started: float) -> Answer:
    """One HTTP/1.1 response (Content-Length framed, as every answer of this API is)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65_536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65_536)
        if not chunk:
            break
        rest += chunk
    return Answer(status, headers, rest[:length], time.monotonic() - started)


def post(path: str, body: bytes, *, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    ).encode() + body


def closed_soon(sock: socket.socket, within_s: float = 3.0) -> bool:
    """The server closed its side: recv reads end of stream (or a reset) before the deadline."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/search", rb'{"query": "\ud800", "user_id": "u1"}'),
        ("/search", rb'{"query": "jeju", "user_id": "u1", "k": "\udc00"}'),
        ("/search", rb'{"query": "jeju", "user_id": "u1", "context": {"\ud800": 1}}'),
        ("/events", rb'{"events": [{"request_id": "r", "user_id": "\ud800x"}]}'),
        ("/admin/models/promote", rb'{"version": "\ud83d"}'),
    ],
)
def test_a_lone_surrogate_is_a_4xx_with_a_reason_and_the_connection_lives_on(
    port: int, path: str, body: bytes
) -> None:
    extra = f"X-API-Key: {API_KEY}\r\n" if path.startswith("/admin") else ""
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(post(path, body, extra=extra))
        answer = read_answer(sock, started)
        assert answer.status == 422, answer.body
        assert b"surrogate" in answer.body and b"Traceback" not in answer.body
        # Same keep-alive connection: the server answers the next request (it was reset before).
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_answer(sock, time.monotonic()).status == 200


@pytest.mark.parametrize(
    "body",
    [
        b'{"query": "\xff", "user_id": "u1"}',  # not UTF-8 at all
        b'{"query": "\xed\xa0\x80", "user_id": "u1"}',  # a surrogate encoded as UTF-8 bytes (CESU-8)
    ],
)
def test_a_body_that_is_not_utf8_is_400_naming_the_byte(port: int, body: bytes) -> None:
    with connect(port) as sock:
        sock.sendall(post("/search", body))
        answer = read_answer(sock, time.monotonic())
    assert answer.status == 400, answer.body
    assert b"not valid UTF-8" in answer.body and b"byte 11" in answer.body


def test_a_chunked_body_over_the_limit_is_413_and_the_connection_closes(port: int) -> None:
    head = CHUNKED_HEAD
    chunk = b"x" * 8192
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(head)
        try:  # the server may answer and close before every chunk is written
            for _ in range(LIMIT // len(chunk) + 2):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock, started)
        assert answer.status == 413, answer.body
        assert answer.seconds < 3
        assert answer.headers.get("connection") == "close"
        assert closed_soon(sock)


def test_a_content_length_over_the_limit_is_413_before_the_body(port: int) -> None:
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
        sock.sendall(b"Content-Length: %d\r\n\r\n{" % (LIMIT + 1))
        answer = read_answer(sock, started)
        assert answer.status == 413 and answer.seconds < 3
        assert closed_soon(sock)


def test_a_short_body_times_out_with_408_within_seconds(port: int) -> None:
    """Content-Length larger than what the client sends: it used to hold the connection until the client
    gave up (30 s and more)."""
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /events HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n")
        sock.sendall(b'Content-Length: 1000\r\n\r\n{"events": [')
        answer = read_answer(sock, started)
        assert answer.status == 408, answer.body
        assert BODY_TIMEOUT_S <= answer.seconds < BODY_TIMEOUT_S + 3
        assert closed_soon(sock)


def test_a_slow_chunked_body_times_out_with_408(port: int) -> None:
    """One small chunk every 0.2 s: each read is quick, the whole body never is."""
    head = CHUNKED_HEAD
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(head)
        sock.settimeout(0.2)
        answer = None
        while time.monotonic() - started < BODY_TIMEOUT_S + 5:
            try:
                sock.sendall(b"1\r\n \r\n")
                if sock.recv(1, socket.MSG_PEEK):
                    sock.settimeout(10)
                    answer = read_answer(sock, started)
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
        assert answer is not None, "no answer to a slow body"
        assert answer.status == 408 and answer.seconds < BODY_TIMEOUT_S + 3


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


def test_the_page_has_a_csp_that_admits_its_own_script_and_nosniff(port: int) -> None:
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = read_answer(sock, time.monotonic())
    assert answer.status == 200
    assert answer.headers["x-content-type-options"] == "nosniff"
    csp = dict(d.strip().split(" ", 1) for d in answer.headers["content-security-policy"].split(";"))
    html = answer.body.decode()
    (script,) = re.findall(r"<script>(.*?)</script>", html, flags=re.DOTALL)
    (style,) = re.findall(r"<style>(.*?)</style>", html, flags=re.DOTALL)
    assert csp["default-src"] == "'none'" and csp["frame-ancestors"] == "'none'"
    assert csp["script-src"] == _csp_hash(script)  # its own inline script, nothing else
    assert csp["style-src"] == _csp_hash(style)
    assert csp["connect-src"] == "'self'"
