"""The feature store as serving uses it: short timeouts, a circuit breaker, and defaults when Redis is away.

Search must answer within its budget whether or not Redis does. Every call here either succeeds or raises
``StoreUnavailable`` within ``redis_timeout_s``; after a failure the breaker skips Redis for
``breaker_cooldown_s`` (so an outage costs one timeout per cooldown, not one per request), then lets
requests try again: recovery needs no restart.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

import numpy as np
import redis

from data.contracts import Interaction, SearchImpression
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.connection import RedisClient, StoreUnavailable, connect, embedded_socket
from features.definitions import Request
from features.ops import Op
from features.store import FeatureStore, RedisFeatureStore
from serving.config import ServingSettings

T = TypeVar("T")


def serving_client(features: FeatureStoreSettings, serving: ServingSettings) -> RedisClient:
    """A Redis client whose socket and connect timeouts are the serving ones (not the batch jobs' ones).

    Built without a ping: the server may be down at start-up, and the breaker handles that per request.
    """
    timeout = serving.redis_timeout_s
    if features.redis_url or features.cluster:
        return connect(features.model_copy(update={"socket_timeout_s": timeout}))

    url = os.environ.get("REDIS_URL")
    if url:
        return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return redis.Redis(
        unix_socket_path=embedded_socket(features.embedded_dir),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )


class GuardedStore(FeatureStore):
    """A ``RedisFeatureStore`` behind a circuit breaker: each call answers or raises ``StoreUnavailable``.

    ``defaults`` (from ``FeatureStore``) is what a request gets instead while the store is unavailable.
    """

    def __init__(self, store: RedisFeatureStore, cooldown_s: float) -> None:
        self.store = store
        self.settings, self.keys = store.settings, store.keys
        self.cooldown_s = cooldown_s
        self._open_until = 0.0  # monotonic time before which Redis is not tried
        self._lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def is_open(self) -> bool:
        return time.monotonic() < self._open_until

    def _call(self, fn: Callable[[], T]) -> T:
        if self.is_open:
            raise StoreUnavailable(f"feature store skipped after a recent failure ({self.last_error})")
        try:
            result = fn()
        except (redis.RedisError, OSError) as exc:
            with self._lock:
                self._open_until = time.monotonic() + self.cooldown_s
                self.last_error = f"{type(exc).__name__}: {exc}"
            raise StoreUnavailable(f"feature store unavailable: {self.last_error}") from exc
        return result

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

    def publish(self, records: Iterable[SearchImpression | Interaction]) -> list[str]:
        return self._call(lambda: self.store.publish(records))
