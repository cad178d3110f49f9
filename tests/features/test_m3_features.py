"""The M3 ranking features (``m3_similarity``, ``m3_score``, ``m3_missing``): a training row and the online
store give the same values for the same user, blocks and time; a training row's vector uses no event at or
after its day's start; missing vectors give the declared defaults."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.contracts import Interaction
from data.days import day_start_ms
from data.io import write_table
from data.layout import DataLayout
from data.schemas import TIMESTAMP
from features.block_attributes import BlockAttributes, BlockVectors
from features.config import FeatureStoreSettings
from features.dataset import build_training_set
from features.definitions import DEFAULTS, INDEX, Request, compute, plan
from features.embeddings.asof import DailyVectors, cutoffs, train_daily_vectors
from features.embeddings.config import EmbeddingSettings
from features.embeddings.store import decode_vector, write_vectors
from features.keys import Keys
from features.packing import split_blob
from features.store import RedisFeatureStore

M3_COLUMNS = ["m3_similarity", "m3_score", "m3_missing"]
# Small and deterministic: no wall-time cap (it would make the epochs trained depend on machine load).
FAST = EmbeddingSettings(
    as_of=True,
    dim=16,
    as_of_epochs=2,
    patience=1,
    as_of_max_train_seconds=None,
    as_of_valid_events=300,
    threads=1,
)


def _days(world: Path) -> list[date]:
    return DataLayout(world).days("impressions")


def _m3(table: pa.Table) -> np.ndarray:
    return np.column_stack([table[c].to_numpy() for c in M3_COLUMNS])


@pytest.fixture(scope="module")
def vectors(tiny_world: Path, tiny_catalog: BlockAttributes) -> DailyVectors:
    days = _days(tiny_world)
    return train_daily_vectors(DataLayout(tiny_world), days[2], days[3], tiny_catalog.ids, FAST)


@pytest.fixture(scope="module")
def training(
    tiny_world: Path, tiny_catalog: BlockAttributes, vectors: DailyVectors, redis_base_settings
) -> pa.Table:
    days = _days(tiny_world)
    return build_training_set(
        DataLayout(tiny_world), days[2], days[3], redis_base_settings, catalog=tiny_catalog, vectors=vectors
    )


def test_models_train_only_on_days_before_the_rows(tiny_world: Path, vectors: DailyVectors) -> None:
    days = _days(tiny_world)
    assert cutoffs(days, days[1], days[3], FAST) == [days[2]]  # day 1 has no earlier model: no vectors
    assert [m["cutoff"] for m in vectors.models] == [days[2].isoformat()]
    assert set(vectors.users) == {days[2], days[3]}
    assert vectors.users[days[2]][0] == vectors.users[days[3]][0] == "m3-asof-" + days[2].isoformat()


def test_training_rows_carry_the_similarity(training: pa.Table) -> None:
    missing = training["m3_missing"].to_numpy()
    assert 0.5 < (missing == 0).mean() < 1.0  # most users have a click history; new ones do not
    sim = training["m3_similarity"].to_numpy()
    assert np.all(np.abs(sim) <= 1.0 + 1e-6)
    assert np.all(sim[missing == 1] == 0.0) and np.all(training["m3_score"].to_numpy()[missing == 1] == 0.0)
    assert np.std(sim[missing == 0]) > 0.01


def test_offline_and_online_values_agree(
    tiny_world: Path,
    training: pa.Table,
    vectors: DailyVectors,
    store: RedisFeatureStore,
) -> None:
    """The vectors a training row was computed from, written to Redis by the online writer, give the
    served request the same M3 values (bit for bit: both read the same float16 bytes)."""
    day = _days(tiny_world)[3]
    version, users = vectors.users[day]
    blocks = vectors.blocks[version]
    on_day = training.filter(pc.greater_equal(training["ts"], pa.scalar(day_start_ms(day), TIMESTAMP)))
    rids = list(dict.fromkeys(on_day["request_id"].to_pylist()))[:40]
    write_vectors(
        store,
        version,
        users={u: decode_vector(raw) for u, raw in users.items()},
        blocks={
            b: blocks.matrix[i] for i, b in enumerate(store_catalog(tiny_world).ids) if blocks.present[i]
        },
    )
    catalog = store_catalog(tiny_world)  # no vectors in memory: the store loads them on first use
    checked = 0
    for rid in rids:
        rows = on_day.filter(pc.equal(on_day["request_id"], rid))
        req = Request(
            rid,
            int(rows["ts"].cast(pa.int64())[0].as_py()),
            rows["user_id"][0].as_py(),
            rows["query"][0].as_py(),
            tuple(rows["block_id"].to_pylist()),
        )
        served = store.assemble(req, catalog)[:, [INDEX[c] for c in M3_COLUMNS]].astype(np.float32)
        np.testing.assert_array_equal(served, _m3(rows))
        checked += int((rows["m3_missing"].to_numpy() == 0).sum())
    assert checked > 100
    assert version in catalog.vectors and catalog.vectors[version].complete


def store_catalog(world: Path) -> BlockAttributes:
    layout = DataLayout(world)
    return BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())


def test_no_event_at_or_after_the_day_start_reaches_a_row(
    tiny_world: Path,
    tmp_path: Path,
    tiny_catalog: BlockAttributes,
    vectors: DailyVectors,
    training: pa.Table,
    redis_base_settings: FeatureStoreSettings,
) -> None:
    """Clicks planted on day 2 (from its first second) change the user's day-3 rows and none of day 2."""
    days = _days(tiny_world)
    world = tmp_path / "planted"
    shutil.copytree(tiny_world, world)
    layout = DataLayout(world)
    imps = layout.read_events("impressions", start=days[2], end=days[2], validate_rows=False)
    user = imps["user_id"][0].as_py()  # the day's first searcher
    target = imps.filter(pc.equal(imps["user_id"], user)).slice(0, 1).to_pylist()[0]
    start_ms = day_start_ms(days[2])
    planted = [
        Interaction(
            request_id=target["request_id"],
            # The first at the request's time (the day's first event of this user), the rest right after.
            ts=pa.scalar(int(target["ts"].timestamp() * 1000) + i, pa.int64()).cast(TIMESTAMP).as_py(),
            user_id=user,
            block_id=s["block_id"],
            doc_id=None,
            position=s["position"],
            type="click",
        )
        for i, s in enumerate(target["shown"])
    ]
    assert int(target["ts"].timestamp() * 1000) >= start_ms
    part = layout.day_dir("interactions", days[2]) / "part-0.parquet"
    original = pq.read_table(part)
    extra = pa.Table.from_pylist([p.model_dump() for p in planted], schema=original.schema)
    write_table(pa.concat_tables([original, extra]).sort_by("ts"), part, Interaction)

    again = train_daily_vectors(layout, days[2], days[3], tiny_catalog.ids, FAST)
    after = build_training_set(
        layout, days[2], days[3], redis_base_settings, catalog=tiny_catalog, vectors=again
    )
    # The model saw only days 0-1 in both worlds: the same block vectors.
    version = vectors.users[days[2]][0]
    np.testing.assert_array_equal(vectors.blocks[version].matrix, again.blocks[version].matrix)
    assert vectors.users[days[2]][1][user] == again.users[days[2]][1][user]
    assert vectors.users[days[3]][1].get(user) != again.users[days[3]][1].get(user)

    ts = training["ts"].cast(pa.int64()).to_numpy()
    mine = np.array(training["user_id"].to_pylist()) == user
    on_day2 = ts < day_start_ms(days[3])
    np.testing.assert_array_equal(_m3(training)[on_day2], _m3(after)[on_day2])  # every day-2 row, any user
    later = mine & ~on_day2
    assert later.any()
    assert not np.array_equal(_m3(training)[later], _m3(after)[later])


def test_missing_vectors_give_the_defaults(tiny_catalog: BlockAttributes) -> None:
    keys = Keys("t")
    ids = tuple(tiny_catalog.ids[:4])
    req = Request("r1", 1_800_000_000_000, "u1", "jeju", ids)
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((len(tiny_catalog.ids), 8)).astype(np.float16).astype(np.float32)
    present = np.ones(len(tiny_catalog.ids), dtype=bool)
    present[1] = False  # block 1 has no vector of this model
    catalog = replace(tiny_catalog, vectors={"m-a": BlockVectors.from_rows("m-a", matrix, present)})
    user_vec = rng.standard_normal(8).astype(np.float16)

    def rows(user_hash: dict) -> np.ndarray:
        fetched: list[dict] = [{} for _ in plan(keys, req)]
        fetched[2] = user_hash
        return compute(req, fetched, catalog, FeatureStoreSettings())[:, [INDEX[c] for c in M3_COLUMNS]]

    defaults = DEFAULTS[[INDEX[c] for c in M3_COLUMNS]]
    np.testing.assert_array_equal(rows({}), np.tile(defaults, (4, 1)))  # no user vector
    other = {**split_blob("v", user_vec.tobytes()), "m": b"m-b"}  # a model whose blocks are not loaded
    np.testing.assert_array_equal(rows(other), np.tile(defaults, (4, 1)))
    got = rows({**split_blob("v", user_vec.tobytes()), "m": b"m-a"})
    np.testing.assert_array_equal(got[1], defaults)
    u = user_vec.astype(np.float32)
    for i in (0, 2, 3):
        b = matrix[i]
        assert got[i, 2] == 0.0
        assert got[i, 0] == pytest.approx(float(b @ u / (np.linalg.norm(b) * np.linalg.norm(u))), rel=1e-5)
        assert got[i, 1] == pytest.approx(float(b @ u), rel=1e-5)


def test_served_user_vector_without_stored_blocks_gives_the_defaults(
    store: RedisFeatureStore, tiny_catalog: BlockAttributes
) -> None:
    catalog = replace(tiny_catalog, vectors={})
    write_vectors(store, "m3-gone", users={"u1": np.ones(8, np.float32)})  # its blocks were never written
    req = Request("r1", 1_800_000_000_000, "u1", "jeju", tuple(catalog.ids[:5]))
    got = store.assemble(req, catalog)[:, [INDEX[c] for c in M3_COLUMNS]]
    np.testing.assert_array_equal(got, np.tile(DEFAULTS[[INDEX[c] for c in M3_COLUMNS]], (5, 1)))
    assert not catalog.vectors["m3-gone"].present.any()  # loaded once, found empty: retried later only


def test_a_failed_block_vector_load_serves_the_defaults_and_waits_to_retry(
    store: RedisFeatureStore, tiny_catalog: BlockAttributes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow or failing bulk read (a serving client's short timeout) must not fail the request."""
    import redis

    catalog = replace(tiny_catalog, vectors={})
    write_vectors(store, "m3-x", users={"u1": np.ones(8, np.float32)}, blocks={catalog.ids[0]: np.ones(8)})
    calls = []

    def fail(block_ids: list[str], version: str) -> BlockVectors:
        calls.append(version)
        raise redis.TimeoutError("Timeout reading from socket")

    monkeypatch.setattr(store, "read_block_vectors", fail)
    req = Request("r1", 1_800_000_000_000, "u1", "jeju", tuple(catalog.ids[:3]))
    for _ in range(3):
        got = store.assemble(req, catalog)[:, [INDEX[c] for c in M3_COLUMNS]]
        np.testing.assert_array_equal(got, np.tile(DEFAULTS[[INDEX[c] for c in M3_COLUMNS]], (3, 1)))
    assert calls == ["m3-x"]  # tried once; the next attempt waits for the retry time
