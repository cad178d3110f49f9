"""serving's GuardedStore is a FeatureStore: the same reads, writes and events as the Redis store it wraps,
and ``StoreUnavailable`` (then a fast skip) instead of a Redis error while the server is away."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from data.contracts import SearchImpression, ShownBlock
from features.config import FeatureStoreSettings
from features.connection import StoreUnavailable
from features.store import FeatureStore, RedisFeatureStore
from features.stream import StreamConsumer
from serving.store import GuardedStore


def impression(request_id: str) -> SearchImpression:
    return SearchImpression(
        request_id=request_id,
        ts=datetime(2026, 1, 5, 12, tzinfo=UTC),
        user_id="u1",
        session_id="s1",
        query="jeju island",
        shown=[ShownBlock(block_id="b1", position=1, propensity=1.0)],
        n_candidates=1,
        experiment="none",
        variant="control",
        ranker_version="v0001",
    )


def test_guarded_store_reads_and_writes_like_the_store(store: RedisFeatureStore) -> None:
    guarded = GuardedStore(store, cooldown_s=30.0)
    assert isinstance(guarded, FeatureStore)
    key = store.keys.query_batch("jeju island")
    guarded.write_hashes({key: {"ent": 1.5}}, replace=True)
    assert guarded.fetch([(key, ["ent"])]) == store.fetch([(key, ["ent"])]) == [{"ent": b"1.5"}]
    assert len(guarded.publish([impression("r1")])) == 1
    StreamConsumer(store, store.settings, consumer="guarded-test").run(until_idle=True)
    assert set(guarded.contexts(["r1", "never-shown"])) == {"r1"}  # applied from the published event


def test_guarded_store_fails_fast_while_redis_is_away(redis_base_settings: FeatureStoreSettings) -> None:
    settings = redis_base_settings.model_copy(update={"namespace": "away"})
    nothing_there = redis.Redis(port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    guarded = GuardedStore(RedisFeatureStore(nothing_there, settings), cooldown_s=30.0)
    with pytest.raises(StoreUnavailable, match="feature store unavailable"):
        guarded.fetch([(settings.namespace, None)])
    started = time.monotonic()
    with pytest.raises(StoreUnavailable, match="skipped after a recent failure"):
        guarded.publish([impression("r2")])
    assert time.monotonic() - started < 0.05 and not guarded.ping()
