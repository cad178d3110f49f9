"""serving's GuardedStore is a FeatureStore: the same reads, writes and events as the Redis store it wraps,
and ``StoreUnavailable`` (then a fast skip) instead of a Redis error while the server is away."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

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


def _frozen_calls(guarded: GuardedStore, callers: int) -> list[tuple[float, str]]:
    """``callers`` threads call the store at once; each (seconds taken, outcome)."""
    import threading

    from features.connection import redis_deadline

    out: list[tuple[float, str]] = []
    barrier = threading.Barrier(callers)

    def call() -> None:
        barrier.wait()
        started = time.monotonic()
        try:
            with redis_deadline(0.05):
                guarded.fetch([("k", None)])
            outcome = "ok"
        except StoreUnavailable as exc:
            outcome = "skipped" if "skipped" in str(exc) else "failed"
        out.append((time.monotonic() - started, outcome))

    threads = [threading.Thread(target=call) for _ in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_a_frozen_unix_socket_redis_costs_one_deadline_and_one_probe_per_cooldown(
    embedded_redis: Path,
) -> None:
    """SIGSTOP of the embedded server (unix socket): each call ends within the 50 ms deadline (redis-py's
    default retry made it ~5 s), and past the cooldown ONE request probes while the others skip."""
    import os
    import signal

    from features.embedded import server_pid
    from serving.config import ServingSettings
    from serving.store import serving_client

    settings = FeatureStoreSettings(embedded_dir=embedded_redis, namespace="frozen")
    serving = ServingSettings(redis_deadline_ms=50, breaker_cooldown_s=0.3)
    guarded = GuardedStore(RedisFeatureStore(serving_client(settings, serving), settings), cooldown_s=0.3)
    assert guarded.ping()
    pid = server_pid(embedded_redis)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        first = _frozen_calls(guarded, 1)
        time.sleep(0.35)  # past the cooldown: half-open
        burst = _frozen_calls(guarded, 8)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert first[0][1] == "failed" and first[0][0] < 0.05 + 0.04, first
    probes = [c for c in burst if c[1] != "skipped"]
    assert len(probes) == 1, burst  # one probe, not every waiting request
    assert all(took < 0.05 + 0.04 for took, _ in burst), burst
    time.sleep(0.35)
    assert guarded.ping()  # thawed: the next probe closes the breaker
    assert guarded.fetch([("k", None)]) == [{}]


def test_one_request_deadline_bounds_all_its_calls(embedded_redis: Path) -> None:
    """The calls of one request share its deadline (the second gets what the first left, not a fresh one),
    and only Redis time counts: the work between calls (retrieval, ranking) does not spend it."""
    import os
    import signal

    from features.connection import hot_path_client, redis_call, redis_deadline
    from features.embedded import server_pid

    client = hot_path_client(FeatureStoreSettings(embedded_dir=embedded_redis), timeout_s=0.08)
    with redis_deadline(0.05):
        with redis_call():
            client.set("k", "v")
        time.sleep(0.1)  # longer than the deadline, but no Redis time
        with redis_call():
            assert client.get("k") == b"v"
    pid = server_pid(embedded_redis)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    started = time.monotonic()
    errors = 0
    try:
        with redis_deadline(0.1):
            for _ in range(3):
                try:
                    with redis_call():
                        client.get("k")
                except redis.TimeoutError:
                    errors += 1
    finally:
        os.kill(pid, signal.SIGCONT)
    took = time.monotonic() - started
    assert errors == 3 and took < 0.1 + 0.04, took
