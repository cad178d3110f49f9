"""``features build``: replay a data folder's logs into the online store, plus the latest batch snapshot.

``features rebuild`` is the same replay over the logs plus archived live events (``events export``): the
online state rebuilt from the offline record, as after losing Redis beyond what its AOF kept.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from data.days import Progress
from data.layout import DataLayout
from features.archive import dedupe_events, read_archive
from features.batch import batch_snapshot
from features.block_attributes import BlockAttributes
from features.replay import Replayer, in_time_order
from features.store import RedisFeatureStore


def build_online_features(
    layout: DataLayout,
    store: RedisFeatureStore,
    *,
    archives: Sequence[Path] = (),
    progress: Progress | None = None,
) -> dict:
    """Rebuild the namespace from scratch (a rebuild never adds to stale counts); return build stats.

    ``archives``: folders written by ``events export``, replayed with the layout's own logs; an event found
    twice (at-least-once export, or an archive inside the layout) counts once.
    """
    report = progress or (lambda stage, done, total: None)
    started = time.perf_counter()
    catalog = BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())
    imps = layout.read_events("impressions")
    acts = layout.read_events("interactions")
    if archives:
        parts = [read_archive(folder) for folder in archives]
        imps, acts = dedupe_events(
            pa.concat_tables([imps, *(p[0] for p in parts)], promote_options="default"),
            pa.concat_tables([acts, *(p[1] for p in parts)], promote_options="default"),
        )
    loaded = time.perf_counter()
    replayer = Replayer(store.settings, store.keys)
    total = imps.num_rows + acts.num_rows
    for i, event in enumerate(in_time_order(imps, acts)):
        replayer.apply(event)
        if i % 50_000 == 0:
            report("replay", i, total)
    report("replay", total, total)
    replayed = time.perf_counter()
    snapshot = batch_snapshot(imps, acts, catalog, store.keys, store.settings)
    batched = time.perf_counter()
    # Expiries run in event time: what would have expired by the last logged event is not loaded, and the
    # rest keeps the time it has left.
    as_of_s = pc.max(imps["ts"]).cast("int64").as_py() / 1000 if imps.num_rows else 0.0
    remaining = {k: t - as_of_s for k, t in replayer.state.expire_at.items()}
    live = {k: h for k, h in replayer.state.export() if remaining.get(k, 1.0) > 0}
    store.clear()
    store.write_hashes(live, replace=False, ttl_s=remaining)
    store.write_snapshot(snapshot)
    last_ts = pc.max(imps["ts"]).as_py() if imps.num_rows else None
    meta = {
        "data": str(layout.root),
        "manifest": layout.read_manifest() if layout.manifest.is_file() else None,
        "as_of": last_ts.isoformat() if last_ts else None,
        "events": total,
        # Interactions after their request's context expired (request_ttl_hours): the live path sends them
        # to its dead letters, so the replay leaves them out too, and says how many.
        "late_interactions": replayer.late,
        "archives": [str(a) for a in archives],
        "live_keys": len(live),
        "batch_keys": len(snapshot.query) + len(snapshot.user),
    }
    store.write_meta(meta)
    done = time.perf_counter()
    return {
        **meta,
        "seconds": {
            "load": round(loaded - started, 2),
            "replay": round(replayed - loaded, 2),
            "batch": round(batched - replayed, 2),
            "write": round(done - batched, 2),
            "total": round(done - started, 2),
        },
        "replay_events_per_s": round(total / max(replayed - loaded, 1e-9)),
        "build_events_per_s": round(total / max(done - started, 1e-9)),
    }
