"""A consumer reads its own pending entries (delivered to it, never acknowledged) when they can exist, not
on every step: these tests deliver entries behind its back, as a read whose reply was lost does, and as a
restart finds them, and check that they are applied without waiting for an idle stream."""

from __future__ import annotations

import time
from pathlib import Path

from features.store import RedisFeatureStore
from features.stream import GROUP, StreamConsumer

from .helpers import first_impressions, world_records


def _deliver(store: RedisFeatureStore, consumer: str, n: int) -> list[bytes]:
    """Entries read for ``consumer`` whose reply nobody processes (a lost reply, or a consumer that died)."""
    got = store.client.xreadgroup(GROUP, consumer, {store.keys.events_stream: ">"}, count=n)
    return [entry_id for _, items in got for entry_id, _ in items]


def _pending_of(store: RedisFeatureStore, consumer: str) -> int:
    return len(store.client.xpending_range(store.keys.events_stream, GROUP, "-", "+", 10_000, consumer))


def _consumer(store: RedisFeatureStore, name: str, claim_idle_ms: int) -> StreamConsumer:
    """A consumer of the group, with its own pending entries read every ``claim_idle_ms / 2`` under load."""
    settings = store.settings.model_copy(update={"stream_claim_idle_ms": claim_idle_ms})
    consumer = StreamConsumer(store, settings, consumer=name)
    consumer.ensure_group()
    return consumer


def test_a_restarted_consumer_finishes_its_own_entries_first_even_when_it_claims_others(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    impressions = first_impressions(tiny_world, 6)
    me = _consumer(store, "restarted", 1_500)
    store.publish(impressions[:2])
    _deliver(store, "dead", 2)  # a dead consumer's, claimable after 1.5 s
    time.sleep(1.6)
    store.publish(impressions[2:4])
    _deliver(store, "restarted", 2)  # this consumer's own, from before its restart: not idle long enough
    store.publish(impressions[4:])  # new events keep every step busy: no idle step reads everything
    assert me.step() == 2 and me.stats.reclaimed == 2  # the dead consumer's entries, claimed
    assert _pending_of(store, "restarted") == 2  # its own, not read yet
    assert me.step() == 2 and _pending_of(store, "restarted") == 0  # its own next, before new events
    assert me.step() == 2 and me.stats.acked == 6


def test_entries_delivered_behind_the_consumers_back_are_applied_while_events_keep_coming(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    # redis-py may retry a read that timed out: the first delivery is then pending for this consumer, and
    # no exception says so. Under steady traffic no step is idle; the periodic own read finds them.
    impressions = first_impressions(tiny_world, 40)
    me = _consumer(store, "busy", 600)
    me.step()  # the start-up reads: nothing yet
    store.publish(impressions[:2])
    lost = _deliver(store, "busy", 2)
    assert len(lost) == 2
    deadline = time.monotonic() + 10
    for record in impressions[2:]:
        store.publish([record])
        assert me.step() >= 1  # every step finds something: never an idle one
        time.sleep(0.05)
        if _pending_of(store, "busy") == 0 or time.monotonic() > deadline:
            break
    assert _pending_of(store, "busy") == 0
    assert me.stats.reclaimed == 0  # read as its own, within half the claim interval, not claimed back


def test_a_click_ahead_of_its_impression_waits_for_it_instead_of_dying_at_once(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    # Every read of a pending entry counts as a delivery: re-read at every step, a click whose impression was
    # later on the stream reached stream_max_deliveries (5) and the dead letters within milliseconds.
    records, _, _ = world_records(tiny_world, days=1)
    click = next(r for r in records if not hasattr(r, "shown"))
    impression = next(r for r in records if hasattr(r, "shown") and r.request_id == click.request_id)
    others = [r for r in records if hasattr(r, "shown") and r.request_id != click.request_id][:30]
    me = _consumer(store, "patient", 2_000)  # own pending entries read again every second under traffic
    store.publish([click])
    for record in others[:20]:  # steady traffic for about a second before the impression comes
        store.publish([record])
        me.step()
        time.sleep(0.05)
    assert me.stats.dead == 0 and me.stats.waiting >= 1
    store.publish([impression, *others[20:]])
    while me.step():  # until a step finds nothing: the idle step reads the waiting click again
        pass
    assert me.stats.dead == 0, me.stats.dead_reasons
    assert _pending_of(store, "patient") == 0


def test_events_the_streams_cap_trims_before_they_are_applied_are_counted_and_leave_nothing_pending(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    # A consumer far enough behind loses delivered, unacknowledged entries to the stream's cap. Redis 7's
    # XAUTOCLAIM drops every trimmed pending entry it scans (its own and a dead consumer's) and names them;
    # on 6.2 a claim hands those idle long enough over as nils, and its read of its own pending entries
    # finds them all without fields. Either way the loss is counted once, and nothing is left pending.
    impressions = first_impressions(tiny_world, 6)
    me = _consumer(store, "behind", 50)
    store.publish(impressions)
    assert len(_deliver(store, "dead", 3)) == 3
    assert len(_deliver(store, "behind", 2)) == 2
    stream = store.keys.events_stream
    assert store.client.xtrim(stream, maxlen=1, approximate=False) == 5  # only the undelivered one is left
    time.sleep(0.1)  # the dead consumer's entries are claimable
    stats = me.run(until_idle=True, block_ms=0)
    assert stats.trimmed == 5
    assert stats.acked == 1 and stats.applied > 0  # the one entry still there
    assert store.client.xpending(stream, GROUP)["pending"] == 0
