"""A Redis that comes back without the consumer group (restarted empty, or the group lost) answers NOGROUP.
The consumer used to die on it, leaving every later click unapplied; now it creates the group again and goes
on, and ``group_status`` (what /readyz reports) sees the group, a live consumer, pending and lag."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from features.replay import Replayer, in_time_order
from features.store import RedisFeatureStore
from features.stream import GROUP, StreamConsumer, group_status

from .helpers import assert_same_state, world_records


def test_the_consumer_recreates_a_missing_group_and_goes_on(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    records, imps, acts = world_records(tiny_world, days=1)
    half = len(records) // 2
    stream = store.keys.events_stream
    consumer = StreamConsumer(store, store.settings, consumer="nogroup")
    consumer.ensure_group()
    assert group_status(store.client, stream, GROUP, stale_ms=5000).live == 0  # nobody read yet

    store.publish(records[:half])
    lag = group_status(store.client, stream, GROUP, stale_ms=5000)
    assert lag.exists and lag.pending == 0
    assert lag.lag in (half, 1000)  # Redis 7 reports it; on 6.2 it is counted, up to 1,000

    stop = threading.Event()
    runner = threading.Thread(target=consumer.run, kwargs={"block_ms": 100, "max_seconds": 60, "stop": stop})
    runner.start()
    try:
        _wait(lambda: consumer.stats.acked >= half)
        status = group_status(store.client, stream, GROUP, stale_ms=5000)
        assert status.exists and status.live == 1 and status.lag == 0 and status.pending == 0

        # What a restarted, emptied Redis looks like to it (the consumer's next read answers NOGROUP).
        store.client.xgroup_destroy(stream, GROUP)
        store.publish(records[half:])
        # Recreated from the stream's start: the second half is applied, the first half redelivered and
        # acknowledged again (its per-tag markers keep it from counting twice).
        _wait(lambda: consumer.stats.groups_created >= 1 and consumer.stats.acked >= half + len(records))
        assert runner.is_alive()
    finally:
        stop.set()
        runner.join(timeout=10)
    assert group_status(store.client, stream, GROUP, stale_ms=5000).pending == 0
    # Each event counted once across both groups: the store equals one in-order replay of the events.
    replay = Replayer(store.settings, store.keys)
    for event in in_time_order(imps, acts):
        replay.apply(event)
    assert_same_state(replay.state, store)


def _wait(done: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)
