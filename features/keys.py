"""The Redis key layout: namespaced, versioned, hash-tagged by entity.

One request reads its query's keys (one hash slot), its user's keys (one slot) and one key per candidate
block, so on a cluster it touches few nodes. Queries and users go into the tag through a short digest, which
keeps keys compact and safe whatever characters a query holds.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from functools import cached_property, lru_cache

SCHEMA_VERSION = "v1"
BLOCK_SHARDS = 16


def _blake8(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def hash64(text: str) -> int:
    """``digest``'s hash as an integer."""
    return int.from_bytes(_blake8(text), "big")


@lru_cache(maxsize=1 << 20)
def digest(text: str) -> str:
    # Hex straight from the bytes: ids the stream and /search see once (events, requests) miss the cache, and
    # formatting through an integer doubled this call's cost.
    return _blake8(text).hex()


@lru_cache(maxsize=1 << 20)
def block_shard(block_id: str) -> int:
    return zlib.crc32(block_id.encode("utf-8")) % BLOCK_SHARDS


@dataclass(frozen=True)
class Keys:
    namespace: str = "sb"

    @cached_property
    def prefix(self) -> str:
        return f"{self.namespace}:{SCHEMA_VERSION}"

    @cached_property
    def _block_stats_keys(self) -> tuple[str, ...]:
        return tuple(self.key(f"bs:{shard}", "bs") for shard in range(BLOCK_SHARDS))

    def query_tag(self, query: str) -> str:
        return f"q:{digest(query)}"

    def user_tag(self, user_id: str) -> str:
        return f"u:{digest(user_id)}"

    def block_tag(self, block_id: str) -> str:
        return f"b:{block_id}"

    def request_tag(self, request_id: str) -> str:
        return f"r:{digest(request_id)}"

    def session_tag(self, session_id: str) -> str:
        return f"s:{digest(session_id)}"

    def key(self, tag: str, name: str) -> str:
        return f"{self.prefix}:{{{tag}}}:{name}"

    # Streamed (live) state.
    def query_blocks(self, query: str) -> str:
        return self.key(self.query_tag(query), "qb")

    def block_stats(self, block_id: str) -> str:
        """Block counters live in BLOCK_SHARDS hashes (field = block id): a request's 100 candidates are read
        with at most that many commands."""
        return self._block_stats_keys[block_shard(block_id)]

    def user(self, user_id: str) -> str:
        """One compact hash per user (fields in ``features.packing``): live, batch and vector state."""
        return self.key(self.user_tag(user_id), "u")

    def user_recent(self, user_id: str) -> str:
        return self.user(user_id)

    def request_context(self, request_id: str) -> str:
        return self.key(self.request_tag(request_id), "ctx")

    def session(self, session_id: str) -> str:
        """One short-lived hash per search session: its searches and clicks so far (fields as the user's)."""
        return self.key(self.session_tag(session_id), "s")

    # Batch (daily) state.
    def query_batch(self, query: str) -> str:
        return self.key(self.query_tag(query), "qd")

    @property
    def intent_batch(self) -> str:
        """One hash for the catalogue: each intent's population click rate (field = intent label)."""
        return self.key("intents", "id")

    def user_batch(self, user_id: str) -> str:
        return self.user(user_id)

    def user_vector(self, user_id: str) -> str:
        return self.user(user_id)

    def block_vector(self, block_id: str) -> str:
        return self.key(self.block_tag(block_id), "bv")

    def applied_marker(self, tag: str, event_id: str) -> str:
        return self.key(tag, f"seen:{digest(event_id)}")

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def events_stream(self) -> str:
        return f"{self.prefix}:events"

    @property
    def dead_letters(self) -> str:
        return f"{self.prefix}:events:dead"

    def tag_of(self, key: str) -> str:
        return key[key.index("{") + 1 : key.index("}")]
