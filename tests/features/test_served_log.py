"""Served feature rows on the real event stream: the features consumer acknowledges them and applies nothing,
the archiver writes them as day partitions (a malformed one set aside with its reason), and the served
training-set builder refuses rows of another feature set, naming the file and the request.

The Redis is the server on 127.0.0.1:6379 when it answers, else the embedded one; every test has its own
namespace (``store``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from data.contracts import Interaction, InteractionType, SearchImpression, ServedFeatures
from data.errors import DataError
from data.io import iter_records, write_records
from data.layout import DataLayout
from features.archive import StreamArchiver, first_of
from features.definitions import CATEGORICAL, INDEX, NAMES
from features.ops import ImpressionEvent, Shown
from features.replay import Replayer
from features.served import FEATURE_SET, sample_unshown, served_record, unpack_rows
from features.served_dataset import build_served_training_set
from features.store import RedisFeatureStore
from features.stream import StreamConsumer

from .helpers import assert_same_state


@pytest.fixture(scope="module")
def impressions(tiny_world: Path) -> list[SearchImpression]:
    layout = DataLayout(tiny_world)
    day = layout.days("impressions")[0]
    return list(iter_records(layout.day_files("impressions", day)[0], SearchImpression))[:6]


def _served(imp: SearchImpression, unshown: int = 3, seed: int = 0) -> ServedFeatures:
    """A record as the pipeline writes it: the page's blocks, then ``unshown`` other candidates."""
    shown = [s.block_id for s in sorted(imp.shown, key=lambda s: s.position)]
    ids = (*shown, *(f"extra-{imp.request_id}-{i}" for i in range(10)))
    rows = np.random.default_rng(seed).normal(size=(len(ids), len(NAMES)))
    rows[:, [INDEX[n] for n in CATEGORICAL]] = 1.0  # category ids are whole numbers
    scores = np.linspace(1, 0, len(ids))
    return served_record(imp.request_id, imp.ts, ids, rows, scores, list(range(len(shown))), unshown)


def _event(imp: SearchImpression) -> ImpressionEvent:
    shown = tuple(Shown(s.block_id, s.position) for s in imp.shown)
    ts_ms = int(imp.ts.timestamp() * 1000)
    return ImpressionEvent(imp.request_id, ts_ms, imp.user_id, imp.query, shown, imp.session_id)


def test_the_consumer_acknowledges_served_rows_and_applies_nothing_for_them(
    store: RedisFeatureStore, impressions: list[SearchImpression]
) -> None:
    records = [r for imp in impressions for r in (imp, _served(imp))]
    store.publish(records)
    consumer = StreamConsumer(store, store.settings, consumer="served-test")
    stats = consumer.run(until_idle=True)
    assert (stats.acked, stats.logs, stats.dead) == (len(records), len(impressions), 0)
    assert store.client.xpending(store.keys.events_stream, "features")["pending"] == 0
    assert not store.client.exists(store.keys.dead_letters)
    # The state is exactly what the impressions alone make.
    replay = Replayer(store.settings, store.keys)
    for imp in impressions:
        replay.apply(_event(imp))
    assert_same_state(replay.state, store)


def test_served_rows_alone_change_no_state(store: RedisFeatureStore, impressions: list) -> None:
    store.publish([_served(imp) for imp in impressions])
    stats = StreamConsumer(store, store.settings, consumer="served-only").run(until_idle=True)
    assert (stats.acked, stats.logs, stats.applied, stats.dead) == (len(impressions), len(impressions), 0, 0)
    keys = {k.decode() for k in store.client.scan_iter(match=f"{store.keys.prefix}:*")}
    assert keys == {store.keys.events_stream}


def test_the_archive_writes_served_partitions_and_sets_a_cut_record_aside(
    store: RedisFeatureStore, impressions: list[SearchImpression], tmp_path: Path
) -> None:
    served = [_served(imp) for imp in impressions]
    store.publish([r for pair in zip(impressions, served, strict=True) for r in pair])
    cut = json.loads(served[0].model_dump_json())
    cut["request_id"] = "cut-short"
    cut["rows"][0]["values"] = cut["rows"][0]["values"][:-8]  # a truncated payload
    store.client.xadd(store.keys.events_stream, {"kind": "served", "data": json.dumps(cut)})

    stats = StreamArchiver(store.client, store.keys.events_stream, tmp_path).run()
    assert (stats.impressions, stats.served, stats.rejected) == (len(impressions), len(served), 1)
    layout = DataLayout(tmp_path)
    assert layout.days("served") == [impressions[0].ts.date()]
    back = layout.read_events("served")  # validated on read
    assert [ServedFeatures.model_validate(r) for r in back.to_pylist()] == served
    (rejected,) = [json.loads(line) for p in (tmp_path / "rejected").glob("*.jsonl") for line in p.open()]
    assert rejected["reason"].startswith("ServedFeatures: rows: ")
    assert "rows[0].values holds 288 bytes, not width" in rejected["reason"]

    # Re-delivered entries (an export that crashed before its ack) are written again; the builder keeps one.
    write_records(
        served[:2], layout.day_dir("served", impressions[0].ts.date()) / "part-dup.parquet", ServedFeatures
    )
    built = build_served_training_set(layout)
    assert built.requests == len(impressions) and built.without_impression == 0
    expected = sum(len(s.rows) for s in served)
    assert built.table.num_rows == expected
    first = built.table.filter(pc.equal(built.table["request_id"], served[0].request_id))
    values = np.column_stack([first[n].to_numpy().astype(np.float32) for n in NAMES])
    assert np.array_equal(values, unpack_rows([r.values for r in served[0].rows]))
    assert first["position"].to_pylist() == [r.position for r in served[0].rows]


def test_rows_of_another_feature_set_are_refused_naming_file_and_request(
    impressions: list[SearchImpression], tmp_path: Path
) -> None:
    layout = DataLayout(tmp_path)
    day = impressions[0].ts.date()
    write_records(impressions, layout.day_dir("impressions", day) / "part-0.parquet", SearchImpression)
    good = [_served(imp) for imp in impressions[1:]]
    old = _served(impressions[0]).model_copy(update={"feature_set": "0" * 16})
    path = layout.day_dir("served", day) / "part-0.parquet"
    write_records([*good, old], path, ServedFeatures)
    with pytest.raises(DataError) as info:
        build_served_training_set(layout)
    message = str(info.value)
    assert str(path) in message and repr(impressions[0].request_id) in message
    assert "0000000000000000" in message and FEATURE_SET in message


def test_a_folder_without_served_logs_points_at_the_replay(tiny_world: Path) -> None:
    with pytest.raises(DataError, match="point-in-time replay"):
        build_served_training_set(DataLayout(tiny_world))


def test_the_unshown_sample_is_uniform_replayable_and_all_when_few() -> None:
    assert sample_unshown("r1", 5, 8).tolist() == [0, 1, 2, 3, 4]
    a = sample_unshown("r1", 90, 8)
    assert a.tolist() == sample_unshown("r1", 90, 8).tolist() and len(set(a.tolist())) == 8
    assert sorted(a.tolist()) == a.tolist() and a.max() < 90
    assert a.tolist() != sample_unshown("r2", 90, 8).tolist()
    assert sample_unshown("r1", 90, 0).tolist() == []


def test_a_click_labels_the_served_row(store: RedisFeatureStore, impressions: list, tmp_path: Path) -> None:
    imp = impressions[0]
    top = min(imp.shown, key=lambda s: s.position)
    click = Interaction(
        request_id=imp.request_id,
        ts=imp.ts,
        user_id=imp.user_id,
        block_id=top.block_id,
        position=top.position,
        type=InteractionType.CLICK,
    )
    store.publish([imp, _served(imp), click])
    StreamArchiver(store.client, store.keys.events_stream, tmp_path).run()
    table = build_served_training_set(DataLayout(tmp_path)).table
    clicked = table.filter(pc.equal(table["click"], 1))
    assert clicked["block_id"].to_pylist() == [top.block_id]
    assert clicked["propensity"].to_pylist() == [top.propensity]
    assert set(table.filter(pc.equal(table["position"], 0))["propensity"].to_pylist()) == {0.0}


def test_a_record_holds_the_page_then_the_sample_and_refuses_non_finite_values() -> None:
    ids = tuple(f"b{i}" for i in range(30))
    rows = np.arange(30 * len(NAMES), dtype=np.float64).reshape(30, len(NAMES)) / 7
    scores = np.linspace(3, 0, 30)
    page = [4, 0, 9]
    record = served_record("r7", datetime.now(UTC), ids, rows, scores, page, 4, score_unshown=False)
    assert ServedFeatures.model_validate_json(record.model_dump_json()) == record  # valid as built
    rest = [i for i in range(30) if i not in page]
    chosen = page + [rest[j] for j in sample_unshown("r7", len(rest), 4)]
    assert [r.block_id for r in record.rows] == [ids[i] for i in chosen]
    assert [r.position for r in record.rows] == [1, 2, 3, 0, 0, 0, 0]
    # An interleaved page: its blocks keep the score that placed them, the unshown have none.
    assert [r.score for r in record.rows] == [scores[i] for i in page] + [None] * 4
    assert np.array_equal(unpack_rows([r.values for r in record.rows]), rows[chosen].astype(np.float32))
    rows[9, 3] = np.inf
    with pytest.raises(ValueError, match="not finite"):
        served_record("r7", datetime.now(UTC), ids, rows, scores, page, 4)


@pytest.mark.parametrize("order", [[0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [2, 0, 4, 1, 3]])
def test_first_of_keeps_each_keys_first_row_in_table_order(order: list[int]) -> None:
    # A re-delivered file may sort before the original one: its duplicates then lead the table.
    keys = ["a", "a", "a", "c", "b"]
    table = pa.table({"k": [keys[i] for i in order], "row": order})
    kept = first_of(table, ["k"]).to_pydict()
    firsts: dict[str, int] = {}
    for k, r in zip(table["k"].to_pylist(), order, strict=True):
        firsts.setdefault(k, r)
    assert kept["k"] == list(firsts) and kept["row"] == list(firsts.values())
