"""Loaders accept well-formed files and refuse malformed ones, naming file, line/row and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from data.contracts import Block, Doc, Interaction, SearchImpression, ShownBlock
from data.errors import DataError
from data.io import iter_records, read_table, write_records
from data.schemas import arrow_schema

TS = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _impression(**overrides: object) -> dict:
    row = {
        "request_id": "r1",
        "ts": TS.isoformat(),
        "user_id": "u1",
        "session_id": "s1",
        "query": "jeju travel",
        "shown": [
            {"block_id": "b1", "position": 1, "propensity": 0.8},
            {"block_id": "b2", "position": 2, "propensity": 0.1},
        ],
        "n_candidates": 20,
        "experiment": "default",
        "variant": "control",
        "ranker_version": "v1",
    }
    row.update(overrides)
    return row


def _write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_records_round_trip(tmp_path: Path, suffix: str) -> None:
    records = [
        SearchImpression.model_validate(_impression()),
        SearchImpression.model_validate(
            _impression(request_id="r2", shown=[{"block_id": "b9", "position": 3, "propensity": 1.0}])
        ),
    ]
    path = tmp_path / f"imps{suffix}"
    write_records(records, path, SearchImpression)
    assert list(iter_records(path, SearchImpression)) == records
    table = read_table(path, SearchImpression)
    assert table.schema.equals(arrow_schema(SearchImpression))
    assert table["shown"].to_pylist()[1] == [
        ShownBlock(block_id="b9", position=3, propensity=1.0).model_dump()
    ]


def test_every_contract_round_trips_through_parquet(tmp_path: Path) -> None:
    doc = Doc(id="d1", title="Jeju", body="Sea.", genre="blog", keywords=["jeju"], created_at=TS)
    block = Block(id="b1", title="Jeju food", kind="topic", keywords=["jeju"], doc_ids=["d1"], created_at=TS)
    click = Interaction(
        request_id="r1", ts=TS, user_id="u1", block_id="b1", doc_id="d1", position=1, type="click"
    )
    for rec in (doc, block, click):
        path = tmp_path / f"{type(rec).__name__}.parquet"
        write_records([rec], path, type(rec))
        assert list(iter_records(path, type(rec))) == [rec]


@pytest.mark.parametrize(
    ("line", "field", "needle"),
    [
        ('{"request_id": "r1", ', None, "invalid JSON"),
        (
            _impression(shown=[{"block_id": "b1", "position": 0, "propensity": 0.5}]),
            "shown.0.position",
            "greater than",
        ),
        (
            _impression(shown=[{"block_id": "b1", "position": 1, "propensity": 0}]),
            "shown.0.propensity",
            "greater than",
        ),
        (_impression(ts="2026-01-05T12:00:00"), "ts", "timezone"),
        (_impression(query=""), "query", "at least 1"),
        (_impression(extra_col=1), "extra_col", "Extra inputs"),
        ({k: v for k, v in _impression().items() if k != "user_id"}, "user_id", "Field required"),
        (_impression(n_candidates=1), "<row>", "below the 2 blocks shown"),
    ],
)
def test_malformed_jsonl_names_file_line_and_field(
    tmp_path: Path, line: dict | str, field: str | None, needle: str
) -> None:
    path = _write_jsonl(tmp_path / "imps.jsonl", [_impression(), _impression(request_id="r2"), line])
    with pytest.raises(DataError) as info:
        read_table(path, SearchImpression)
    err = info.value
    assert err.path == str(path) and err.line == 3 and err.field == field
    assert needle in str(err) and str(path) in str(err) and "line 3" in str(err)


def test_dwell_without_duration_is_refused(tmp_path: Path) -> None:
    row = {
        "request_id": "r",
        "ts": TS.isoformat(),
        "user_id": "u",
        "block_id": "b",
        "position": 2,
        "type": "dwell",
    }
    path = _write_jsonl(tmp_path / "acts.jsonl", [row])
    with pytest.raises(DataError, match=r"line 1.*dwell interaction needs dwell_ms"):
        list(iter_records(path, Interaction))


def _valid_interactions() -> pa.Table:
    rows = [
        Interaction(
            request_id=f"r{i}", ts=TS, user_id="u", block_id="b", doc_id="d", position=i + 1, type="click"
        )
        for i in range(3)
    ]
    return pa.Table.from_pylist([r.model_dump() for r in rows], schema=arrow_schema(Interaction))


def test_parquet_bad_row_is_named_by_row_and_field(tmp_path: Path) -> None:
    table = _valid_interactions()
    positions = pa.array([1, 2, -4], pa.int64())
    table = table.set_column(table.schema.get_field_index("position"), "position", positions)
    path = tmp_path / "acts.parquet"
    pq.write_table(table, path)
    with pytest.raises(DataError) as info:
        read_table(path, Interaction)
    assert (info.value.row, info.value.field) == (2, "position")
    assert "row 2" in str(info.value) and str(path) in str(info.value)


@pytest.mark.parametrize(
    ("mutate", "field", "needle"),
    [
        (lambda t: t.drop_columns(["block_id"]), "block_id", "required column is missing"),
        (lambda t: t.append_column("blok_id", pa.array(["x"] * 3)), "blok_id", "unknown column"),
        (
            lambda t: t.set_column(5, "position", pa.array(["1", "2", "c"])),
            "position",
            "row 2, field 'position': cannot read 'c'",
        ),
        (lambda t: t.set_column(1, "ts", t["ts"].cast(pa.timestamp("ms"))), "ts", "time zone"),
    ],
)
def test_parquet_bad_schema_is_named_by_field(tmp_path: Path, mutate, field: str, needle: str) -> None:
    path = tmp_path / "acts.parquet"
    pq.write_table(mutate(_valid_interactions()), path)
    with pytest.raises(DataError) as info:
        read_table(path, Interaction)
    assert info.value.field == field and needle in str(info.value)


def test_compatible_types_are_cast_not_refused(tmp_path: Path) -> None:
    table = _valid_interactions()
    table = table.set_column(5, "position", table["position"].cast(pa.int32()))
    path = tmp_path / "acts.parquet"
    pq.write_table(table, path)
    assert read_table(path, Interaction)["position"].type == pa.int64()


def test_unreadable_and_missing_files_are_named(tmp_path: Path) -> None:
    garbage = tmp_path / "docs.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match="not a readable Parquet file"):
        read_table(garbage, Doc)
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.jsonl", Doc)
    with pytest.raises(DataError, match="unsupported file type"):
        read_table(_write_jsonl(tmp_path / "docs.csv", ["a,b"]), Doc)
