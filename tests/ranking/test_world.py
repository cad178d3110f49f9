"""The world adapter on the tiny world: list shapes, IPS weights, feature sets, slices, cache, truth use."""

from __future__ import annotations

import os
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.days import day_start_ms
from data.layout import DataLayout
from data.logstats import click_counts, query_click_entropy
from features.config import FeatureStoreSettings
from features.dataset import sampled_requests
from features.definitions import FEATURES
from ranking.config import WorldTrainingSettings
from ranking.errors import WorldDataError
from ranking.eval_slices import UNSEEN, Slicer
from ranking.training_cache import (
    CACHE_DIR,
    CACHE_ENTRIES_PER_RANGE,
    CACHE_SUFFIX,
    data_signature,
    feature_fingerprint,
    package_digest,
    rows_between,
    training_table,
)
from ranking.world import UNSHOWN_ORDER, USER_PREFIXES, WorldSource, day_split, in_list_order, to_listwise
from ranking.world_eval import parse_world_models, truth_grades, world_metrics

# The tiny world logs 4 days: 1 warm-up, 1 training, 1 validation, 1 test.
TINY = WorldTrainingSettings(test_days=1, ips_clip=10.0)


@pytest.fixture(scope="module")
def source(tiny_world: Path) -> WorldSource:
    return WorldSource(tiny_world, TINY, FeatureStoreSettings())


def test_day_split(source: WorldSource, tiny_world: Path) -> None:
    days = DataLayout(tiny_world).days("impressions")
    split = source.split
    assert split.train == (days[1], days[1]) and split.valid == (days[2], days[2])
    assert split.test == (days[3], days[3])
    with pytest.raises(WorldDataError, match="4 logged days, need at least 5"):
        day_split(DataLayout(tiny_world), WorldTrainingSettings())


def test_adapter_shapes_labels_and_weights(source: WorldSource) -> None:
    table = rows_between(source.table(), *source.split.train)
    lists = source.lists(source.split.train)
    data = lists.data
    assert data.n_rows == table.num_rows
    assert data.n_lists == len(set(table["request_id"].to_pylist())) == lists.request_ids.size
    # Without a retrieval replay the rel_* features hold only their defaults: left out of the lists.
    dense = [f.name for f in FEATURES if not f.categorical and not f.name.startswith("rel_")]
    assert data.feature_names == tuple(dense)
    assert data.categorical_names == ("block_kind", "block_genre") and data.cardinalities == (2, 7)
    # Every list is one impression: one request id, positions in logged order.
    rid = np.repeat(lists.request_ids, data.list_sizes)
    by_key = {
        (r, b): (c, p)
        for r, b, c, p in zip(
            table["request_id"].to_pylist(),
            table["block_id"].to_pylist(),
            table["click"].to_pylist(),
            table["propensity"].to_pylist(),
            strict=True,
        )
    }
    clicks = np.array([by_key[k][0] for k in zip(rid, lists.block_ids, strict=True)])
    prop = np.array([by_key[k][1] for k in zip(rid, lists.block_ids, strict=True)])
    np.testing.assert_array_equal(data.labels, clicks)
    np.testing.assert_allclose(data.weights, np.minimum(1 / prop, TINY.ips_clip), rtol=1e-6)
    assert data.weights.min() >= 1.0 and data.weights.max() <= TINY.ips_clip
    assert (data.weights == TINY.ips_clip).any(), "randomized pages should hit the clip"
    for q in range(data.n_lists):
        pos = lists.positions[data.offsets[q] : data.offsets[q + 1]]
        assert (np.diff(pos) > 0).all()
    assert data.list_meta == {}, "training lists carry no slices"


def _list_order(table: pa.Table) -> pa.ChunkedArray:
    return pc.if_else(pc.equal(table["position"], 0), UNSHOWN_ORDER, table["position"])


def test_rows_in_list_order_give_the_lists_a_shuffled_copy_gives(source: WorldSource) -> None:
    """A built training set is in (time, request, shown position, candidates) order: the lists skip the
    sort and its days are slices. A shuffled copy is sorted (and filtered) into the same lists; one step
    out of order anywhere (time, request or position) is seen."""
    table = source.table()
    assert in_list_order(table, _list_order(table))
    days = source.split.train
    sliced = rows_between(table, *days)
    ts = table["ts"].cast(pa.int64())
    lo, hi = day_start_ms(days[0]), day_start_ms(days[1] + timedelta(days=1))
    assert sliced.num_rows and sliced.equals(table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))))
    shuffled = table.take(np.random.default_rng(0).permutation(table.num_rows))
    assert not in_list_order(shuffled, _list_order(shuffled))
    assert rows_between(shuffled, *days).num_rows == sliced.num_rows
    fast, slow = to_listwise(sliced), to_listwise(rows_between(shuffled, *days))
    for name in ("dense", "labels", "offsets", "weights", "categorical"):
        np.testing.assert_array_equal(getattr(fast.data, name), getattr(slow.data, name), err_msg=name)
    np.testing.assert_array_equal(fast.request_ids, slow.request_ids)
    n = table.num_rows
    for i in (1, n // 2, n - 1):  # the rows i - 1 and i swapped: out of order wherever they differ
        swapped = table.take(np.r_[0 : i - 1, i, i - 1, i + 1 : n])
        keys = [(table[c][i - 1].as_py(), table[c][i].as_py()) for c in ("ts", "request_id", "position")]
        differ = any(a != b for a, b in keys)
        assert in_list_order(swapped, _list_order(swapped)) is not differ, (i, keys)


def test_non_personalized_drops_user_features(source: WorldSource) -> None:
    full = source.lists(source.split.train).data
    plain = source.lists(source.split.train, personalized=False).data
    user = [n for n in full.feature_names if n.startswith(USER_PREFIXES)]
    assert user and {"user_diversity", "rt_keyword_score"} <= set(user)
    assert not any(n.startswith(USER_PREFIXES) for n in plain.feature_names)
    assert set(plain.feature_names) == set(full.feature_names) - set(user)
    np.testing.assert_array_equal(plain.offsets, full.offsets)
    np.testing.assert_array_equal(
        plain.dense, full.dense[:, [full.feature_names.index(n) for n in plain.feature_names]]
    )


def test_entropy_buckets_use_only_days_before_validation(source: WorldSource, tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    cutoff = source.split.valid[0]
    slicer = Slicer.from_logs(layout, cutoff, min_clicks=TINY.entropy_min_clicks)
    imps = layout.read_events("impressions", end=cutoff)
    acts = layout.read_events("interactions", end=cutoff)
    expected = query_click_entropy(
        click_counts(imps, acts, before=cutoff), min_clicks=TINY.entropy_min_clicks
    )
    assert slicer.entropy == {q: e for q, (e, _) in expected.items()}
    everything = query_click_entropy(
        click_counts(layout.read_events("impressions"), layout.read_events("interactions")),
        min_clicks=TINY.entropy_min_clicks,
    )
    assert slicer.entropy != {q: e for q, (e, _) in everything.items()}, "test-day clicks must not leak"
    lo, hi = slicer.cuts
    buckets = slicer.entropy_buckets(np.array([*sorted(slicer.entropy), "never typed"]))
    assert buckets[-1] == UNSEEN and set(buckets[:-1]) == {"low", "mid", "high"}
    for q, b in zip(sorted(slicer.entropy), buckets, strict=False):
        e = slicer.entropy[q]
        assert b == ("low" if e < lo else "mid" if e < hi else "high")


def test_diversity_buckets_come_from_truth(source: WorldSource, tiny_world: Path) -> None:
    test = source.lists(source.split.test, slices=True, with_truth=True)
    users = pq.read_table(tiny_world / "truth" / "users.parquet").to_pydict()
    diversity = dict(zip(users["user_id"], users["diversity"], strict=True))
    table = rows_between(source.table(), *source.split.test)
    user_of = dict(zip(table["request_id"].to_pylist(), table["user_id"].to_pylist(), strict=False))
    for rid, bucket in zip(test.request_ids, test.data.list_meta["diversity_bucket"], strict=True):
        d = diversity[user_of[rid]]
        assert bucket == ("focused" if d < 1 / 3 else "middle" if d < 2 / 3 else "diverse")
    assert set(test.data.list_meta["entropy_bucket"]) <= {"low", "mid", "high", UNSEEN}


def test_cache_is_reused_and_keyed(source: WorldSource, tiny_world: Path) -> None:
    source.table()
    again = WorldSource(tiny_world, TINY, FeatureStoreSettings())
    assert again.table().equals(source.table()) and again.from_cache is True
    base = FeatureStoreSettings()
    assert feature_fingerprint(base) == feature_fingerprint(
        base.model_copy(update={"redis_url": "redis://x"})
    )
    assert feature_fingerprint(base) != feature_fingerprint(
        base.model_copy(update={"interest_half_life_hours": 3.0})
    )


def test_a_package_digest_covers_its_data_files_and_not_its_bytecode(tmp_path: Path) -> None:
    """The retrieval package's digest keys cached training sets: its calibration texts change the dense
    vectors (and so the rel_* columns) as much as its code does."""
    package = tmp_path / "pkg" / "encoders"
    package.mkdir(parents=True)
    (tmp_path / "pkg" / "asof.py").write_text("x = 1\n")
    (package / "calibration.txt").write_text("one text\n")
    module = str(tmp_path / "pkg" / "asof.py")
    before = package_digest(module)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "smoothing.cpython-311.pyc").write_bytes(b"compiled")
    assert package_digest(module) == before
    (package / "calibration.txt").write_text("another text\n")
    assert package_digest(module) != before


def test_cache_keeps_the_most_recently_used_entries_of_a_range(tmp_path: Path, tiny_world: Path) -> None:
    # Settings compared side by side (24 candidates and 48, say) each keep their table; beyond
    # CACHE_ENTRIES_PER_RANGE, the one used longest ago goes.
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns(".cache", "truth"))
    layout = DataLayout(world)
    day = layout.days("impressions")[1]
    halves = range(1, CACHE_ENTRIES_PER_RANGE + 2)
    variants = [FeatureStoreSettings(interest_half_life_hours=h) for h in halves]
    folder = world / CACHE_DIR

    def build(settings: FeatureStoreSettings) -> bool:
        return training_table(layout, day, day, settings)[1]

    def entries() -> set[Path]:
        return set(folder.glob(f"training_*{CACHE_SUFFIX}"))

    files: list[Path] = []
    for i, settings in enumerate(variants[:CACHE_ENTRIES_PER_RANGE]):
        assert not build(settings)
        (new,) = entries() - set(files)
        os.utime(new, (1_000_000 + i, 1_000_000 + i))  # built in this order, a second apart
        files.append(new)
    assert build(variants[0])  # reused, so now the most recently used
    assert not build(variants[CACHE_ENTRIES_PER_RANGE])
    assert files[1] not in entries() and len(entries()) == CACHE_ENTRIES_PER_RANGE
    assert build(variants[0]) and build(variants[2])


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_an_unreadable_cache_entry_is_built_again(tmp_path: Path, tiny_world: Path, damage: str) -> None:
    """A cached table cut short (a full disk, an interrupted copy) or overwritten is rebuilt, not raised."""
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns(".cache", "truth"))
    layout = DataLayout(world)
    day = layout.days("impressions")[1]
    built, from_cache = training_table(layout, day, day, FeatureStoreSettings())
    assert not from_cache
    (entry,) = (world / CACHE_DIR).glob(f"training_*{CACHE_SUFFIX}")
    data = entry.read_bytes()
    entry.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"\x00" * len(data))
    again, from_cache = training_table(layout, day, day, FeatureStoreSettings())
    assert not from_cache and again.equals(built)
    assert training_table(layout, day, day, FeatureStoreSettings())[1]  # rewritten whole: reused again


def test_a_range_over_max_requests_keeps_a_sample_of_its_requests(tmp_path: Path, tiny_world: Path) -> None:
    world = tmp_path / "w"
    shutil.copytree(tiny_world, world, ignore=shutil.ignore_patterns(".cache", "truth"))
    layout = DataLayout(world)
    day = layout.days("impressions")[1]
    logged = layout.day_rows("impressions", day)
    whole, from_cache = training_table(layout, day, day, FeatureStoreSettings())
    assert not from_cache and whole.schema.metadata[b"request_sample"] == b"1.0"
    # A bound the range does not pass samples nothing: the same table, from the same cache entry.
    assert training_table(layout, day, day, FeatureStoreSettings(), max_requests=logged)[1]
    half, from_cache = training_table(layout, day, day, FeatureStoreSettings(), max_requests=logged // 2)
    assert not from_cache  # another key
    share = (logged // 2) / logged
    assert float(half.schema.metadata[b"request_sample"]) == share
    ids = sorted(set(whole["request_id"].to_pylist()))
    kept = [r for r, keep in zip(ids, sampled_requests(ids, share), strict=True) if keep]
    assert 0 < len(kept) < len(ids) and sorted(set(half["request_id"].to_pylist())) == kept
    assert half.equals(whole.filter(pc.is_in(whole["request_id"], value_set=pa.array(kept, pa.string()))))
    cached, from_cache = training_table(layout, day, day, FeatureStoreSettings(), max_requests=logged // 2)
    assert from_cache and cached.equals(half) and float(cached.schema.metadata[b"request_sample"]) == share


def test_data_signature_changes_with_the_logs(tmp_path: Path, tiny_world: Path) -> None:
    copy = tmp_path / "w"
    shutil.copytree(tiny_world, copy, ignore=shutil.ignore_patterns(".cache", "truth"))
    before = data_signature(DataLayout(copy))
    part = next((copy / "events" / "interactions").rglob("*.parquet"))
    part.write_bytes(part.read_bytes())  # same bytes, new mtime: a rewritten world
    assert data_signature(DataLayout(copy)) != before


def test_metrics_against_truth(source: WorldSource) -> None:
    test = source.lists(source.split.test, slices=True, with_truth=True)
    grades = truth_grades(source.layout, test)
    oracle = world_metrics(test, grades, grades.astype(float))
    logging = world_metrics(test, grades, -test.positions.astype(float))
    assert oracle["ndcg@10"] == pytest.approx(1.0) and oracle["ndcg@1"] == pytest.approx(1.0)
    assert 0.3 < logging["ndcg@10"] < oracle["ndcg@10"]
    assert set(logging["by_diversity"]) == {"focused", "middle", "diverse"}
    assert sum(v["lists"] for v in logging["by_entropy"].values()) == logging["lists"]


def test_model_names() -> None:
    assert parse_world_models("logging,dcn,dasalc-np,oracle") == ["logging", "dcn", "dasalc-np", "oracle"]
    with pytest.raises(Exception, match=r"unknown model\(s\) \['xgb-np'\]"):
        parse_world_models("logging,xgb-np")


def test_training_needs_no_truth(tmp_path: Path, tiny_world: Path) -> None:
    """Truth is for evaluation only: lists for training build without it, slicing by diversity refuses."""
    copy = tmp_path / "portal"
    shutil.copytree(tiny_world, copy, ignore=shutil.ignore_patterns("truth"))
    src = WorldSource(copy, TINY, FeatureStoreSettings())
    assert src.lists(src.split.train).data.n_lists > 0
    assert "entropy_bucket" in src.lists(src.split.test, slices=True).data.list_meta
    with pytest.raises(WorldDataError, match=r"users\.parquet is missing"):
        src.lists(src.split.test, slices=True, with_truth=True)
