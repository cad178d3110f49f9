"""Pure ASGI middleware (no per-request task overhead): the request body guard and per-route request
counts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.metrics import Metrics

_JSON_TYPES = (b"application/json", b"+json")


async def _refuse(send: Send, status: int, error: str) -> None:
    """An error answer that also closes the connection: the rest of an unread body would otherwise be
    parsed as the next request of a keep-alive connection, and a client holding it open keeps a slot."""
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_json(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-type":
            kind = value.split(b";", 1)[0].strip().lower()
            return kind == _JSON_TYPES[0] or kind.endswith(_JSON_TYPES[1])
    return False


class BodyGuard:
    """Reads the whole request body before the app sees it, and refuses it when it is:

    - over ``limit`` bytes: 413, from Content-Length before reading or counted while reading (a chunked
      upload has no length up front; raising from inside the app's read became the framework's 400);
    - not complete ``timeout_s`` after the request started: 408 (a slow client, or a Content-Length larger
      than what it sends, would otherwise hold the connection until the client gives up);
    - JSON that is not UTF-8: 400 with the offending byte (the JSON parser's own error was a bare 400).

    Bodies here are small (64 KB by default), so holding one in memory costs nothing the app would not
    spend anyway, and the app then reads it without waiting.
    """

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app, self.limit, self.timeout_s = app, limit, timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            await _refuse(send, 413, f"request body larger than {self.limit} bytes")
            return
        chunks: list[bytes] = []
        seen = 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return  # the client is gone: nobody to answer
                    chunk = message.get("body", b"")
                    seen += len(chunk)
                    if seen > self.limit:
                        await _refuse(send, 413, f"request body larger than {self.limit} bytes")
                        return
                    chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            await _refuse(send, 408, f"request body not received within {self.timeout_s:g} s")
            return
        body = b"".join(chunks)
        if body and _is_json(scope):
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await _refuse(send, 400, f"request body is not valid UTF-8 (byte {exc.start}: {exc.reason})")
                return
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: only a disconnect can come

        await self.app(scope, replay, send)


class CountRequests:
    """``smartblock_http_requests{route, status}``; the route is the path template (bounded label set)."""

    def __init__(self, app: ASGIApp, metrics: Callable[[], Metrics | None]) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def tracked_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, tracked_send)
        finally:
            metrics = self.metrics()
            if metrics is not None:
                route = scope.get("route")
                metrics.requests.labels(getattr(route, "path", "unmatched"), str(status)).inc()
