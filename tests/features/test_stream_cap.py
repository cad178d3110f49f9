"""Events the stream's cap trims before a group reads them are lost to that group: the live features miss
them and the archive never holds them. Nothing acknowledges them, so nothing counted them: a consumer that
fell a cap behind (stopped, or slower than the traffic) lost them unseen. Here a real stream is trimmed
past a group's last read, and the consumer, the archive export and ``group_status`` (what /readyz shows)
must each see the gap once: counted on Redis 7, named on 6.2, which keeps no count of entries added.

Also here: a Redis URL with ``protocol=3`` (RESP3) answers XREADGROUP as a map, not a list; the readers
failed on it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import redis

from features import losses
from features.archive import GROUP as ARCHIVE
from features.archive import StreamArchiver
from features.connection import embedded_socket
from features.store import RedisFeatureStore
from features.stream import GROUP, StreamConsumer, group_status

from .helpers import assert_same_state, first_impressions, replayed, world_records


def _counts_added(client: redis.Redis, stream: str) -> bool:
    """Redis 7 keeps how many entries a stream ever had added; 6.2 does not."""
    return "entries-added" in client.xinfo_stream(stream)


def test_events_trimmed_before_the_group_read_them_are_counted_once(
    tiny_world: Path, store: RedisFeatureStore, tmp_path: Path
) -> None:
    impressions = first_impressions(tiny_world, 24)
    stream = store.keys.events_stream
    first = StreamConsumer(store, store.settings, consumer="first")
    first.ensure_group()
    store.publish(impressions[:4])
    assert first.run(until_idle=True, block_ms=0).acked == 4
    assert group_status(store.client, stream, GROUP, stale_ms=5_000).gap is None

    # The consumer stops; 8 more events come; the cap keeps the newest 3: 5 are gone, never read.
    store.publish(impressions[4:12])
    assert store.client.xtrim(stream, maxlen=3, approximate=False) == 9  # 4 read, 5 not
    status = group_status(store.client, stream, GROUP, stale_ms=5_000)  # /readyz looks, moves nothing
    counted = _counts_added(store.client, stream)
    assert status.gap is not None and status.gap.lost == (5 if counted else None)
    assert status.lag == 3  # what is still there to read (Redis 7's own figure says 8)
    assert group_status(store.client, stream, GROUP, stale_ms=5_000).gap == status.gap

    restarted = StreamConsumer(store, store.settings, consumer="first")
    stats = restarted.run(until_idle=True, block_ms=0)
    assert stats.gaps == 1 and stats.trimmed == (5 if counted else 0)
    assert stats.acked == 3  # the newest three, applied
    after = group_status(store.client, stream, GROUP, stale_ms=5_000)
    assert (after.gap, after.lag, after.pending) == (None, 0, 0)  # Redis 7's lag is right again
    # Taken by the reader that found it: neither a restart nor another reader of the group counts it again.
    assert StreamConsumer(store, store.settings, consumer="first").run(until_idle=True).gaps == 0
    assert StreamConsumer(store, store.settings, consumer="second").run(until_idle=True).gaps == 0

    # A second gap is counted for itself (Redis 7's read counter was set right when the first was taken).
    store.publish(impressions[12:16])
    assert store.client.xtrim(stream, maxlen=1, approximate=False) == 6  # 3 read, 3 not
    again = StreamConsumer(store, store.settings, consumer="first").run(until_idle=True)
    assert (again.gaps, again.trimmed, again.acked) == (1, 3 if counted else 0, 1)

    # A reader of the group that does not look (an older version, say) reads past a gap: Redis 7 still sees
    # it, as a read counter short of the entries added once the group has caught up; 6.2 cannot.
    store.publish(impressions[16:22])
    assert store.client.xtrim(stream, maxlen=2, approximate=False) == 5
    got = store.client.xreadgroup(GROUP, "older", {stream: ">"}, count=100)
    store.client.xack(stream, GROUP, *[entry_id for _, items in got for entry_id, _ in items])
    late = StreamConsumer(store, store.settings, consumer="first").run(until_idle=True)
    assert (late.gaps, late.trimmed) == ((1, 4) if counted else (0, 0))

    # The totals outlast the processes: what /metrics and `features dead-letters` read.
    assert losses.totals(store.client, stream) == (
        {(GROUP, "trimmed"): 12, (GROUP, "gaps"): 3}
        if counted
        else {(GROUP, "gaps"): 2, (GROUP, "uncounted"): 2}
    )

    # A group created again (after NOGROUP) has read nothing: it is not judged, whatever was trimmed before.
    store.client.xgroup_destroy(stream, GROUP)
    assert StreamConsumer(store, store.settings, consumer="first").run(until_idle=True).gaps == 0


def test_a_consumer_reading_whole_batches_looks_for_a_gap_before_each_read(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    """One that falls behind while it runs: the cap overtakes it between two of its reads, long before its
    next timed look."""
    impressions = first_impressions(tiny_world, 8)
    stream = store.keys.events_stream
    consumer = StreamConsumer(store, store.settings.model_copy(update={"stream_batch": 2}), consumer="busy")
    consumer.ensure_group()
    store.publish(impressions)
    assert consumer.step() == 2 and consumer.stats.gaps == 0  # a whole batch: it is behind
    assert store.client.xtrim(stream, maxlen=1, approximate=False) == 7  # 2 read, 5 not
    consumer.step()
    counted = _counts_added(store.client, stream)
    assert (consumer.stats.gaps, consumer.stats.trimmed) == (1, 5 if counted else 0)
    assert consumer.stats.acked == 3  # the newest one, read after the gap


def test_entries_trimmed_before_the_archive_read_them_are_counted(
    tiny_world: Path, store: RedisFeatureStore, tmp_path: Path
) -> None:
    impressions = first_impressions(tiny_world, 12)
    stream = store.keys.events_stream
    store.publish(impressions[:3])
    export = StreamArchiver(store.client, stream, tmp_path).run()
    assert (export.gaps, export.impressions) == (0, 3)
    store.publish(impressions[3:8])
    assert store.client.xtrim(stream, maxlen=2, approximate=False) == 6  # 3 archived, 3 not
    counted = _counts_added(store.client, stream)
    export = StreamArchiver(store.client, stream, tmp_path).run()
    assert (export.gaps, export.trimmed, export.impressions) == (1, 3 if counted else 0, 2)
    assert StreamArchiver(store.client, stream, tmp_path).run().gaps == 0  # taken: not counted again
    assert store.client.xpending(stream, ARCHIVE)["pending"] == 0


def test_a_resp3_connection_applies_the_same_events(tiny_world: Path, store: RedisFeatureStore) -> None:
    settings = store.settings
    url = settings.redis_url or f"unix://{embedded_socket(settings.embedded_dir)}"  # type: ignore[arg-type]
    resp3 = RedisFeatureStore.connect(
        settings.model_copy(update={"redis_url": f"{url}{'&' if '?' in url else '?'}protocol=3"})
    )
    assert resp3.client.connection_pool.connection_kwargs.get("protocol") in (3, "3")
    records, _, _ = world_records(tiny_world, days=1)
    resp3.publish(records)
    stats = StreamConsumer(resp3, resp3.settings, consumer="resp3").run(until_idle=True, block_ms=0)
    assert stats.acked == len(records) and stats.dead == 0, stats.dead_reasons
    assert_same_state(replayed(store, records), store)


def test_the_lasting_totals_survive_odd_fields_and_a_redis_that_refuses_them(
    store: RedisFeatureStore, free_port: Callable[[], int]
) -> None:
    stream = store.keys.events_stream
    key = losses.losses_key(stream)
    store.client.hset(key, mapping={"no-colon": 1, "g:trimmed": "many", "g:gaps": 2, "a:b:trimmed": 3})
    # Left out, not a failed /metrics scrape: a field not "<group>:<what>", a value not a whole number.
    assert losses.totals(store.client, stream) == {("g", "gaps"): 2, ("a:b", "trimmed"): 3}
    # The loss a count records has happened: a Redis that cannot take the count costs the total only.
    gone = redis.Redis(port=free_port(), socket_connect_timeout=0.2, retry=None)
    losses.record(gone, stream, "g", trimmed=4)
    assert losses.totals(store.client, stream)[("g", "gaps")] == 2
