"""Shared checks for the feature-store tests."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from data.contracts import Interaction, SearchImpression
from data.io import iter_records
from data.layout import DataLayout
from features.ops import MemoryState
from features.replay import Replayer
from features.store import RedisFeatureStore
from features.stream import to_event


def world_records(world: Path, days: int) -> tuple[list, pa.Table, pa.Table]:
    """The first ``days`` days of logs as validated records in time order, and as tables."""
    layout = DataLayout(world)
    chosen = layout.days("impressions")[:days]
    records: list = []
    for day in chosen:
        for path in layout.day_files("impressions", day):
            records += list(iter_records(path, SearchImpression))
        for path in layout.day_files("interactions", day):
            records += list(iter_records(path, Interaction))
    records.sort(key=lambda r: (r.ts, 0 if isinstance(r, SearchImpression) else 1))
    imps = layout.read_events("impressions", end=chosen[-1], validate_rows=False)
    acts = layout.read_events("interactions", end=chosen[-1], validate_rows=False)
    return records, imps, acts


def first_impressions(world: Path, n: int) -> list[SearchImpression]:
    """The first ``n`` impressions of the world's first day, in time order: events for a stream test."""
    records, _, _ = world_records(world, days=1)
    return [r for r in records if isinstance(r, SearchImpression)][:n]


def redis_state(store: RedisFeatureStore, keys: list[str]) -> dict[str, dict[str, bytes]]:
    fetched = store.fetch([(k, None) for k in keys])
    return {k: h for k, h in zip(keys, fetched, strict=True) if h}


def assert_same_state(memory: MemoryState, store: RedisFeatureStore) -> None:
    """Redis holds exactly the hashes and fields of the in-memory replay (floats to 1e-12)."""
    exported = dict(memory.export())
    got = redis_state(store, list(exported))
    assert set(got) == {k for k, h in exported.items() if h}
    for key, fields in exported.items():
        assert set(got[key]) == set(fields), key
        for f, v in fields.items():
            if isinstance(v, float):
                assert math.isclose(float(got[key][f]), v, rel_tol=1e-12, abs_tol=1e-9), (key, f)
            elif isinstance(v, bytes):
                assert got[key][f] == v, (key, f)  # packed values: bit for bit
            else:
                assert got[key][f].decode() == v, (key, f)


def replayed(store: RedisFeatureStore, records: list) -> MemoryState:
    """What applying each record (impression or interaction) once, in order, leaves: in memory."""
    replay = Replayer(store.settings, store.keys)
    for rec in records:
        kind = "impression" if isinstance(rec, SearchImpression) else "interaction"
        event = to_event(kind, rec.model_dump_json())
        assert event is not None
        replay.apply(event)
    return replay.state
