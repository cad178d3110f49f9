"""The HTTP protocol of ``smartblock serve``: uvicorn's own, plus TCP_NODELAY on every connection.

Why: with ``--workers N`` (N > 1) uvicorn binds the listening socket itself (``Config.bind_socket``) as
``socket.socket(AF_INET)``, whose ``proto`` is 0, and hands it to the worker processes. Accepted sockets
inherit ``proto == 0``, and asyncio turns Nagle's algorithm off only for sockets that say
``proto == IPPROTO_TCP`` (``asyncio.base_events._set_nodelay``). With one worker uvicorn passes a host and a
port instead, asyncio builds the listener from ``getaddrinfo`` (``proto`` 6), and every connection gets
TCP_NODELAY. So only the multi-worker path kept Nagle on.

Nagle costs a keep-alive connection one delayed ACK per response: uvicorn writes the status line and headers,
then the body, in two ``send`` calls; the second waits until the client acknowledges the first, and the client
(having no data to send back) delays that ACK by ~40 ms on Linux. Measured on the tiny world before this:
/healthz c=1 took 1.1 ms with one worker and 44-48 ms with two (strace of a worker: no ``setsockopt`` on the
accepted socket, the body ``sendto`` at t, the client's next request at t + 44 ms). The same upstream bug:
https://github.com/Kludex/uvicorn/issues/3149 (open in uvicorn 0.54; 0.55 binds with ``IPPROTO_TCP``).

Setting the option per connection here fixes every listener path (workers, a pre-bound socket or file
descriptor from a process manager) whatever uvicorn version runs, and is a no-op on unix sockets.

``listener`` is the socket each API worker of ``serve --workers N`` binds for itself: TCP (``proto`` 6) and
SO_REUSEPORT. uvicorn's supervisor shares ONE listening socket between its workers instead, and asyncio's
accept loop takes every pending connection on each wake-up (up to the backlog): a client that opens its 8
keep-alive connections at once had all 8 accepted by whichever worker woke first, and the other worker idled
(seen with ``ss -tnp``: 8 connections on one worker's pid). With a socket per worker and SO_REUSEPORT the
kernel hashes each new connection to one of the listeners, so connections spread over the workers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from uvicorn.protocols.http.auto import AutoHTTPProtocol

#: What ``uvicorn.run(http=...)`` takes: an import string, resolved in each worker after it starts.
HTTP_PROTOCOL = "serving.transport:NoDelayHTTPProtocol"


def set_nodelay(transport: asyncio.BaseTransport) -> bool:
    """Turn Nagle off on the transport's socket when it is TCP; True when the option is now set."""
    sock = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    with contextlib.suppress(OSError):  # a connection already reset: nothing to tune
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return True
    return False


def listener(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound (not yet listening) TCP socket, ``proto`` IPPROTO_TCP, with SO_REUSEPORT when asked."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def reuse_port_supported() -> bool:
    return hasattr(socket, "SO_REUSEPORT")


class NoDelayHTTPProtocol(AutoHTTPProtocol):  # type: ignore[misc, valid-type]
    """uvicorn's HTTP/1.1 protocol (httptools when installed, else h11) with TCP_NODELAY set on connect."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)
