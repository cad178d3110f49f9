"""The feature store as serving uses it: one deadline, a circuit breaker, and defaults when Redis is away.

Search must answer within its budget whether or not Redis does. The client never retries, and a request's
Redis calls together take at most its deadline (``redis_deadline_ms``; ``features.connection.redis_deadline``
counts Redis time only, not the retrieval and ranking between the calls), on TCP and unix sockets alike, so
every call here either succeeds or raises ``StoreUnavailable`` in time. After a
failure the breaker skips Redis for ``breaker_cooldown_s`` (an outage costs one timeout per cooldown, not one
per request); then it is half-open: ONE call probes Redis while the others keep failing fast, and the probe's
outcome closes the breaker or opens it for another cooldown. Recovery needs no restart.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np
import redis

from features import losses
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.connection import (
    RedisClient,
    StoreUnavailable,
    deadline_left,
    hot_path_client,
    redis_call,
)
from features.definitions import Request
from features.ops import Op
from features.store import FeatureStore, Published, RedisFeatureStore
from features.stream import GROUP, GroupStatus, group_status
from serving.config import ServingSettings

T = TypeVar("T")


def serving_client(features: FeatureStoreSettings, serving: ServingSettings) -> RedisClient:
    """The hot-path client: no retries; socket and connect timeouts of the longest request deadline (each
    read is bounded by its own request's deadline too)."""
    return hot_path_client(features, max(serving.redis_deadline_ms, serving.events_deadline_ms) / 1000)


class GuardedStore(FeatureStore):
    """A ``RedisFeatureStore`` behind a circuit breaker: each call answers or raises ``StoreUnavailable``.

    ``defaults`` (from ``FeatureStore``) is what a request gets instead while the store is unavailable.
    """

    def __init__(self, store: RedisFeatureStore, cooldown_s: float) -> None:
        self.store = store
        self.settings, self.keys = store.settings, store.keys
        self.cooldown_s = cooldown_s
        self._open_until = 0.0  # monotonic time before which Redis is not tried
        self._failed = False  # the last outcome was a failure: past the cooldown, one probe goes first
        self._probing = False  # a probe is in flight: the others fail fast until it ends
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _admit(self) -> bool:
        """Whether this call may go to Redis; True makes it the probe when the breaker is half-open."""
        with self._lock:
            if not self._failed:
                return False
            if self._probing or time.monotonic() < self._open_until:
                raise StoreUnavailable(f"feature store skipped after a recent failure ({self.last_error})")
            self._probing = True
            return True

    def _call(self, fn: Callable[[], T]) -> T:
        left = deadline_left()
        if left is not None and left <= 0:
            # This request spent its Redis time on earlier calls: skip, without blaming Redis for it.
            raise StoreUnavailable("the request's Redis deadline is spent")
        probe = self._admit()
        try:
            with redis_call():
                result = fn()
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                self._failed, self._probing = True, False
                self._open_until = time.monotonic() + self.cooldown_s
                self.last_error = f"{type(exc).__name__}: {exc}"
            raise StoreUnavailable(f"feature store unavailable: {self.last_error}") from exc
        except BaseException:
            if probe:  # not Redis's fault: let the next call probe instead
                with self._lock:
                    self._probing = False
            raise
        if probe:
            with self._lock:
                self._failed = self._probing = False
        return result

    def consumer_status(self, stale_s: float) -> GroupStatus:
        """Liveness and lag of the features consumer group (``features.stream.group_status``)."""
        stream = self.keys.events_stream
        return self._call(
            lambda: group_status(self.store.client, stream, GROUP, stale_ms=int(stale_s * 1000))
        )

    def stream_losses(self) -> dict[tuple[str, str], int] | None:
        """What the caps cost the event stream's reader groups (``features.losses``); None when Redis cannot
        say now. Past the circuit breaker: a scrape of /metrics that meets a Redis error must neither fail
        nor turn /search away from Redis for a cooldown."""
        try:
            return losses.totals(self.store.client, self.keys.events_stream)
        except (redis.RedisError, OSError):
            return None

    def ping(self) -> bool:
        try:
            return bool(self._call(self.store.client.ping))
        except StoreUnavailable:
            return False

    def apply(self, events: Iterable[tuple[str, list[Op]]]) -> int:
        return self._call(lambda: self.store.apply(events))

    def fetch(self, items: list[tuple[str, list[str] | None]]) -> list[dict]:
        return self._call(lambda: self.store.fetch(items))

    def write_hashes(
        self,
        hashes: Mapping[str, Mapping[str, float | str]],
        *,
        replace: bool,
        ttl_s: Mapping[str, float] | None = None,
    ) -> None:
        self._call(lambda: self.store.write_hashes(hashes, replace=replace, ttl_s=ttl_s))

    def assemble(self, req: Request, catalog: BlockAttributes) -> np.ndarray:
        return self._call(lambda: self.store.assemble(req, catalog))

    def publish(self, records: Iterable[Published]) -> list[str]:
        return self._call(lambda: self.store.publish(records))
