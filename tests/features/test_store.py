"""The Redis store applies the same operations as the in-memory replay, exactly once, and reads a request's
features in one round trip with declared defaults and missing indicators."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from redis.connection import UnixDomainSocketConnection

from data.layout import DataLayout
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.connection import StoreUnavailable, connect
from features.definitions import DEFAULTS, FEATURES, INDEX, Request
from features.embedded import server_pid
from features.keys import BLOCK_SHARDS
from features.ops import MemoryState
from features.packing import pack_recent, split_blob
from features.replay import Replayer, in_time_order
from features.store import RedisFeatureStore

from .helpers import assert_same_state, redis_state


def first_events(world: Path, n: int) -> list:
    layout = DataLayout(world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    return list(in_time_order(imps, acts))[:n]


def replayed_batch(store: RedisFeatureStore, world: Path, n: int) -> tuple[Replayer, list]:
    """The first ``n`` events of ``world`` replayed in memory, and the same events as the store's batch."""
    replay = Replayer(store.settings, store.keys)
    batch = []
    for ev in first_events(world, n):
        if hasattr(ev, "shown"):
            batch.append((ev.event_id, replay.ops.impression(ev)))
        else:
            batch.append(
                (ev.event_id, replay.ops.interaction(ev, replay.state.context(ev.request_id, store.keys)))
            )
        replay.apply(ev)
    return replay, batch


def test_redis_applies_the_replay_operations_exactly_once(store: RedisFeatureStore, tiny_world: Path) -> None:
    replay, batch = replayed_batch(store, tiny_world, 1500)
    changed = store.apply(batch)
    assert changed > len(batch)  # several hash tags per event
    assert_same_state(replay.state, store)
    # Redelivery of everything changes nothing.
    assert store.apply(batch) == 0
    assert_same_state(replay.state, store)


def test_a_tally_set_field_by_field_is_added_to_as_the_script_does(store: RedisFeatureStore) -> None:
    """The replay keeps tallies unpacked; one that arrives packed (an op "s", over its 64-byte chunks) is
    joined and added to as the store's script does."""
    key = store.keys.user("u-seeded")
    blob = pack_recent(1_000.0, {k: 1.0 + k / 10 for k in range(12)})  # 104 bytes: two chunks
    chunks = split_blob("r", blob)
    assert len(chunks) == 2
    ops = [("s", key, f, v) for f, v in chunks.items()] + [("t", key, "r", 1_600.0, 3_600.0, 16, 3, 99)]
    memory = MemoryState()
    memory.apply(ops)
    assert store.apply([("seed-1", ops)]) == 1
    assert_same_state(memory, store)


def test_assembly_defaults_and_missing_indicators(
    store: RedisFeatureStore, tiny_catalog: BlockAttributes
) -> None:
    blocks = tuple(tiny_catalog.ids[:5])
    rows = store.assemble(
        Request("r-new", 1_767_600_000_000, "nobody", "never searched", blocks), tiny_catalog
    )
    assert rows.shape == (5, len(FEATURES))
    for name in ("qb_missing", "block_missing", "user_missing", "rt_missing", "coquery_missing"):
        assert (rows[:, INDEX[name]] == 1.0).all(), name
    for f in FEATURES:
        if f.source in {"stream", "batch"} and f.name != "bandit_thompson":
            assert np.allclose(rows[:, INDEX[f.name]], DEFAULTS[INDEX[f.name]]), f.name
    assert set(rows[:, INDEX["block_kind"]]) <= {0.0, 1.0}


def test_assembly_is_one_round_trip(store: RedisFeatureStore, tiny_catalog: BlockAttributes) -> None:
    from features.definitions import plan

    req = Request("r", 1_767_600_000_000, "u1", "jeju island", tuple(tiny_catalog.ids[:100]))
    calls = []
    original = store.client.pipeline

    def counting_pipeline(*args: object, **kwargs: object) -> object:
        pipe = original(*args, **kwargs)
        calls.append(pipe)
        return pipe

    store.client.pipeline = counting_pipeline  # type: ignore[method-assign]
    try:
        store.assemble(req, tiny_catalog)
    finally:
        store.client.pipeline = original  # type: ignore[method-assign]
    # One pipeline: the query's two hashes, the user hash, the intents' hash, and at most one command per
    # block-counter shard.
    assert len(calls) == 1 and len(plan(store.keys, req)) <= 4 + BLOCK_SHARDS


def test_replace_swaps_a_hash_whole(store: RedisFeatureStore) -> None:
    key = store.keys.query_batch("jeju island")
    store.write_hashes({key: {"ent": 1.5, "a|b1": 0.2}}, replace=True)
    store.write_hashes({key: {"ent": 2.0}}, replace=True)
    assert redis_state(store, [key]) == {key: {"ent": b"2.0"}}


def test_embedded_server_needs_no_install(tmp_path: Path) -> None:
    settings = FeatureStoreSettings(embedded_dir=tmp_path / "redis", namespace="emb")
    client = connect(settings)
    try:
        s = RedisFeatureStore(client, settings)
        s.write_hashes({s.keys.query_batch("jeju"): {"ent": 3.0}}, replace=False)
        assert s.fetch([(s.keys.query_batch("jeju"), ["ent"])]) == [{"ent": b"3.0"}]
        assert client.connection_pool.connection_class is UnixDomainSocketConnection
    finally:
        pid = server_pid(tmp_path / "redis")  # a server outlives its client: this test's own, stopped
        if pid is not None:
            os.kill(pid, signal.SIGTERM)


def test_unreachable_server_is_a_clear_error() -> None:
    settings = FeatureStoreSettings(redis_url="redis://127.0.0.1:1/0", socket_timeout_s=0.2)
    with pytest.raises(StoreUnavailable, match=r"cannot reach Redis at redis://127\.0\.0\.1:1/0"):
        connect(settings)


def test_user_hash_stays_compact_with_every_field_full(store: RedisFeatureStore) -> None:
    """Recent interest, profile and a 64-d vector in one user hash, each value under Redis's 64-byte limit."""
    import numpy as np

    from features.embeddings.store import read_vectors, write_vectors
    from features.packing import RECENT_HEAD, RECENT_ITEM, pack_profile, split_blob

    key = store.keys.user("u-full")
    recent = RECENT_HEAD.pack(1.7e9) + b"".join(RECENT_ITEM.pack(i, 0.5) for i in range(16))
    profile = pack_profile([1 / 6] * 6, 0.5, 40, [(f"kw{i}", 0.04) for i in range(24)])
    store.write_hashes({key: {**split_blob("r", recent), **split_blob("p", profile)}}, replace=False)
    vec = np.linspace(-1, 1, 64).astype(np.float32)
    write_vectors(store, "m3-test", users={"u-full": vec})
    assert store.client.object("encoding", key) in (b"listpack", b"ziplist")
    user_vec, _, _ = read_vectors(store, "u-full", [])
    assert user_vec is not None and np.allclose(user_vec, vec, atol=1e-3)


def test_a_server_that_lost_the_apply_script_gets_it_again_and_counts_nothing_twice(
    embedded_redis: Path, tiny_world: Path
) -> None:
    # A Redis restarted or told SCRIPT FLUSH answers NOSCRIPT to the store's EVALSHA: the script is loaded
    # again and the batch applied; a redelivered batch after the next flush still counts nothing twice. The
    # server is this test's own (the flush would reach every test on a shared one).
    settings = FeatureStoreSettings(embedded_dir=embedded_redis, namespace="noscript", socket_timeout_s=5.0)
    store = RedisFeatureStore.connect(settings)
    replay, batch = replayed_batch(store, tiny_world, 300)
    store.client.script_flush()
    assert store.apply(batch) > len(batch)
    assert store.client.script_exists(store._apply.sha) == [True]
    assert_same_state(replay.state, store)
    store.client.script_flush()
    assert store.apply(batch) == 0
    assert_same_state(replay.state, store)
