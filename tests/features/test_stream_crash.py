"""A consumer killed mid-batch loses nothing and double counts nothing: its pending events are reclaimed by
another consumer (XAUTOCLAIM) and the per-tag markers make the redelivered ones count once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from features.replay import Replayer, in_time_order
from features.store import RedisFeatureStore
from features.stream import GROUP, StreamConsumer

from .helpers import assert_same_state, world_records

VICTIM = textwrap.dedent(
    """
    import json, sys
    from features.config import FeatureStoreSettings
    from features.store import RedisFeatureStore
    from features.stream import StreamConsumer
    settings = FeatureStoreSettings.model_validate_json(sys.argv[1])
    store = RedisFeatureStore.connect(settings)
    StreamConsumer(store, settings, consumer="victim").run(block_ms=100, max_seconds=60)
    """
)


def _delivered(store: RedisFeatureStore, group: dict) -> int:
    """Entries delivered to the group so far: Redis 7 counts them (``entries-read``), 6.2 (the embedded
    server) does not, and they are then the entries up to the last one delivered."""
    if group.get("entries-read") is not None:
        return int(group["entries-read"])
    return len(store.client.xrange(store.keys.events_stream, "-", group["last-delivered-id"]))


def test_killed_consumer_loses_nothing_and_counts_nothing_twice(
    tiny_world: Path, store: RedisFeatureStore
) -> None:
    records, imps, acts = world_records(tiny_world, days=2)
    settings = store.settings.model_copy(update={"stream_batch": 400, "stream_claim_idle_ms": 50})
    store.settings = settings
    store.publish(records)
    rescuer = StreamConsumer(store, settings, consumer="rescuer")
    rescuer.ensure_group()

    victim = subprocess.Popen(
        [sys.executable, "-c", VICTIM, settings.model_dump_json()],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stderr=subprocess.PIPE,
    )
    # Kill it as soon as it holds delivered but unacknowledged events after having acknowledged some.
    deadline = time.monotonic() + 60
    killed_with_pending = 0
    while time.monotonic() < deadline and victim.poll() is None:
        info = {g["name"].decode(): g for g in store.client.xinfo_groups(store.keys.events_stream)}[GROUP]
        consumers = {
            c["name"].decode(): c for c in store.client.xinfo_consumers(store.keys.events_stream, GROUP)
        }
        pending = consumers.get("victim", {}).get("pending", 0)
        if pending and _delivered(store, info) - info["pending"] > 0:
            victim.send_signal(signal.SIGKILL)
            killed_with_pending = pending
            break
        time.sleep(0.002)
    victim.wait(timeout=10)
    assert victim.returncode == -signal.SIGKILL, victim.stderr.read().decode() if victim.stderr else ""
    assert 0 < killed_with_pending < len(records)

    time.sleep(0.1)  # let the victim's pending events go idle past the claim timeout
    stats = rescuer.run(until_idle=True)
    assert stats.reclaimed >= killed_with_pending and stats.dead == 0
    summary = store.client.xpending(store.keys.events_stream, GROUP)
    assert summary["pending"] == 0

    # The store holds exactly what one in-order replay of the same events produces.
    replay = Replayer(settings, store.keys)
    for event in in_time_order(imps, acts):
        replay.apply(event)
    assert_same_state(replay.state, store)
    print(json.dumps({"killed_with_pending": killed_with_pending, "reclaimed": stats.reclaimed}))
