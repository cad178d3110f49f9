"""Training rows hold features as of their request's time: a planted future event never leaks into them,
and the values served online for a request equal the values its training row holds."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.contracts import Interaction, SearchImpression
from data.days import day_start_ms
from data.io import iter_records, write_table
from data.layout import DataLayout
from data.schemas import TIMESTAMP
from features.batch import batch_snapshot
from features.block_attributes import BlockAttributes
from features.dataset import build_training_set
from features.definitions import NAMES, Request
from features.store import RedisFeatureStore
from features.stream import StreamConsumer


def _days(world: Path) -> list[date]:
    return DataLayout(world).days("impressions")


@pytest.fixture(scope="module")
def training(tiny_world: Path, redis_base_settings) -> pa.Table:
    days = _days(tiny_world)
    return build_training_set(DataLayout(tiny_world), days[1], days[-1], redis_base_settings)


def test_training_rows_cover_every_shown_block_with_labels(training: pa.Table, tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    days = _days(tiny_world)
    imps = layout.read_events("impressions", start=days[1], validate_rows=False)
    assert training.num_rows == pc.sum(pc.list_value_length(imps["shown"])).as_py()
    assert 0 < pc.mean(training["click"]).as_py() < 0.5
    assert set(NAMES) <= set(training.column_names)


def test_a_planted_future_event_does_not_leak(
    tiny_world: Path, tmp_path: Path, training: pa.Table, redis_base_settings
) -> None:
    days = _days(tiny_world)
    planted_day = days[2]
    world = tmp_path / "planted"
    shutil.copytree(tiny_world, world)
    layout = DataLayout(world)
    # Pick a request in the middle of a day and plant many clicks on its blocks one hour later.
    day_imps = layout.read_events("impressions", start=planted_day, end=planted_day, validate_rows=False)
    target = day_imps.slice(day_imps.num_rows // 2, 1).to_pylist()[0]
    plant_ms = int(target["ts"].timestamp() * 1000) + 3_600_000
    planted = [
        Interaction(
            request_id=target["request_id"],
            ts=pa.scalar(plant_ms + i, pa.int64()).cast(TIMESTAMP).as_py(),
            user_id=target["user_id"],
            block_id=s["block_id"],
            doc_id=None,
            position=s["position"],
            type="click",
        )
        for i, s in enumerate(target["shown"] * 10)
    ]
    part = layout.day_dir("interactions", planted_day) / "part-0.parquet"
    original = pq.read_table(part)
    extra = pa.Table.from_pylist([p.model_dump() for p in planted], schema=original.schema)
    write_table(pa.concat_tables([original, extra]).sort_by("ts"), part, Interaction)

    after = build_training_set(layout, days[1], days[-1], redis_base_settings)
    ts_before = training["ts"].cast(pa.int64()).to_numpy()
    features_before = np.column_stack([training[n].to_numpy() for n in NAMES])
    features_after = np.column_stack([after[n].to_numpy() for n in NAMES])
    earlier = ts_before < plant_ms
    assert earlier.sum() > 100 and (~earlier).sum() > 100
    # Every row before the planted time is unchanged; later rows showing the same blocks do change.
    assert np.array_equal(features_before[earlier], features_after[earlier])
    planted_blocks = {s["block_id"] for s in target["shown"]}
    later = ~earlier & np.isin(np.array(training["block_id"].to_pylist()), list(planted_blocks))
    assert later.any() and not np.array_equal(features_before[later], features_after[later])


def test_served_values_equal_the_training_rows(
    tiny_world: Path, training: pa.Table, store: RedisFeatureStore, tiny_catalog: BlockAttributes
) -> None:
    """Replay the logs through the real stream into Redis, then serve three last-day requests."""
    layout = DataLayout(tiny_world)
    last = _days(tiny_world)[-1]
    cutoff = day_start_ms(last)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    before = pa.scalar(cutoff, pa.int64()).cast(TIMESTAMP)
    snapshot = batch_snapshot(
        imps.filter(pc.less(imps["ts"], before)),
        acts.filter(pc.less(acts["ts"], before)),
        tiny_catalog,
        store.keys,
        store.settings,
    )
    store.write_snapshot(snapshot)

    records: list = []
    for day in layout.days("impressions"):
        for path in layout.day_files("impressions", day):
            records += list(iter_records(path, SearchImpression))
        for path in layout.day_files("interactions", day):
            records += list(iter_records(path, Interaction))
    records.sort(key=lambda r: (r.ts, 0 if isinstance(r, SearchImpression) else 1))
    last_day_imps = [r for r in records if isinstance(r, SearchImpression) and r.ts.date() == last]
    targets = [last_day_imps[len(last_day_imps) * i // 4] for i in (1, 2, 3)]

    consumer = StreamConsumer(store, store.settings, consumer="equality-test")
    consumer.ensure_group()
    sent = 0
    request_ids = np.array(training["request_id"].to_pylist())
    for target in targets:
        upto = next(i for i, r in enumerate(records) if r is target)
        store.publish(records[sent:upto])
        sent = upto
        consumer.run(until_idle=True)
        block_ids = tuple(s.block_id for s in target.shown)
        req = Request(
            target.request_id,
            int(target.ts.timestamp() * 1000),
            target.user_id,
            target.query,
            block_ids,
            session_id=target.session_id,  # as /search passes the client's session
        )
        served = store.assemble(req, tiny_catalog).astype(np.float32)
        rows = np.flatnonzero(request_ids == target.request_id)
        trained = np.column_stack([training[n].to_numpy()[rows] for n in NAMES]).astype(np.float32)
        assert served.shape == trained.shape
        mismatch = [
            NAMES[j]
            for j in range(len(NAMES))
            if not np.allclose(served[:, j], trained[:, j], rtol=1e-5, atol=1e-6)
        ]
        assert not mismatch, (target.request_id, mismatch)
    assert consumer.stats.dead == 0 and consumer.stats.acked == sent
