"""`smartblock features dead-letters` counts what the consumer could not apply and, once the cause is
mended, sends it back: nothing the stream acknowledged is lost to a dead letter."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from data.contracts import Interaction, SearchImpression
from features.store import RedisFeatureStore
from features.stream import StreamConsumer

from .helpers import assert_same_state, replayed, world_records

ROOT = Path(__file__).resolve().parents[2]


def _cli(env: dict[str, str], *args: str) -> dict:
    """``smartblock features dead-letters ... --json`` in its own process, on the test's Redis namespace."""
    done = subprocess.run(
        [sys.executable, "-m", "search.cli", "features", "dead-letters", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_events_refused_by_a_key_in_their_way_are_sent_back_once_it_is_mended(
    tiny_world: Path, store: RedisFeatureStore, store_env: dict[str, str]
) -> None:
    records, _, _ = world_records(tiny_world, days=1)
    impressions = [r for r in records if isinstance(r, SearchImpression)][:8]
    user_key = store.keys.user(impressions[0].user_id)
    store.client.set(user_key, "in the way")
    store.publish(impressions)
    stats = StreamConsumer(store, store.settings, consumer="c").run(until_idle=True)
    assert stats.dead >= 1

    assert _cli(store_env) == {"dead_letters": {"not applied": stats.dead}, "requeued": 0, "trimmed": 0}
    assert _cli(store_env, "--requeue", "not applied") == {  # not mended yet: refused again, letters kept
        "dead_letters": {"not applied": stats.dead},
        "requeued": 0,
        "trimmed": 0,
    }
    store.client.delete(user_key)
    # Applied straight from the letters (the ops of the tag that failed), not through the stream.
    assert _cli(store_env, "--requeue", "not applied") == {
        "dead_letters": {},
        "requeued": stats.dead,
        "trimmed": 0,
    }
    assert_same_state(replayed(store, impressions), store)


def test_a_click_dead_for_want_of_its_impression_is_applied_when_sent_back_after_it(
    tiny_world: Path, store: RedisFeatureStore, store_env: dict[str, str]
) -> None:
    records, _, _ = world_records(tiny_world, days=1)
    click = next(r for r in records if isinstance(r, Interaction))
    impression = next(
        r for r in records if isinstance(r, SearchImpression) and r.request_id == click.request_id
    )
    settings = store.settings.model_copy(update={"stream_max_deliveries": 2, "stream_impression_wait_s": 0})
    store.publish([click])  # its impression lost on the way, for now
    stats = StreamConsumer(store, settings, consumer="c").run(until_idle=True)
    assert stats.dead == 1
    assert _cli(store_env) == {"dead_letters": {"no impression": 1}, "requeued": 0, "trimmed": 0}

    store.publish([impression])  # it turns up
    assert _cli(store_env, "--requeue", "no impression")["requeued"] == 1
    again = StreamConsumer(store, settings, consumer="c").run(until_idle=True)
    assert again.dead == 0 and again.acked == 2
    assert_same_state(replayed(store, [impression, click]), store)


def test_a_click_waits_for_its_impression_by_the_clock_not_by_how_often_it_is_read(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    """A consumer retrying through a Redis refusal reads its pending entries every 0.2 s; counted in reads
    alone, a click ahead of its impression reached the dead letters within a second of them."""
    records, _, _ = world_records(tiny_world, days=1)
    click = next(r for r in records if isinstance(r, Interaction))
    settings = store.settings.model_copy(update={"stream_max_deliveries": 2, "stream_impression_wait_s": 1.5})
    store.publish([click])
    consumer = StreamConsumer(store, settings, consumer="c")
    consumer.ensure_group()
    published = time.monotonic()
    reads = 0
    while time.monotonic() - published < 1.0:
        reads += consumer.step()  # an idle step reads the waiting click again, as each retry does
    assert reads >= 5 and consumer.stats.dead == 0
    while consumer.stats.dead == 0 and time.monotonic() - published < 5.0:
        consumer.step()
        time.sleep(0.05)
    assert consumer.stats.dead == 1 and time.monotonic() - published >= 1.5


def test_letters_the_dead_letter_cap_removes_are_counted_not_dropped_unseen(
    store: RedisFeatureStore, store_env: dict[str, str]
) -> None:
    """A flood of refused events fills the dead-letter stream; its cap keeps the newest letters, and the
    older ones it removes (acknowledged events, now lost) are counted where an operator looks."""
    from features import dead_letters

    settings = store.settings.model_copy(update={"dead_letters_max": 3})
    sent = store.republish([{"kind": "impression", "data": f"not json {i}"} for i in range(5)])
    stats = StreamConsumer(store, settings, consumer="c").run(until_idle=True)
    assert (stats.dead, stats.acked, stats.dead_letters_trimmed) == (5, 0, 2)
    assert store.client.xpending(store.keys.events_stream, "features")["pending"] == 0  # all acknowledged
    kept = dead_letters.read(store)
    assert [letter.event_entry for letter in kept] == sent[2:]  # the newest three
    assert _cli(store_env) == {"dead_letters": {"malformed event": 3}, "requeued": 0, "trimmed": 2}
