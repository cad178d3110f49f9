"""The column checks (data/row_checks.py) refuse exactly the rows the pydantic contracts refuse.

Each case breaks one rule in one row of otherwise valid rows; the mask must equal pydantic's verdict row by
row, and reading the file must name the same row and field as validating row by row did.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError, model_validator

from data.contracts import CONTRACTS, Block, Doc, Interaction, Record, SearchImpression, ServedFeatures
from data.errors import DataError
from data.io import _validate_each_row, _validate_rows, read_table
from data.layout import DataLayout
from data.row_checks import MODEL_RULES, NotCheckable, _model_checks, invalid_rows
from data.schemas import arrow_schema

TS = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def _impression(i: int) -> dict[str, Any]:
    return {
        "request_id": f"r{i}", "ts": TS, "user_id": "u", "session_id": "s", "query": "jeju travel",
        "shown": [
            {"block_id": "b1", "position": 1, "propensity": 0.8},
            {"block_id": "b2", "position": 2, "propensity": 1.0},
            {"block_id": "b3", "position": 5, "propensity": 0.1},
        ],
        "n_candidates": 3, "experiment": "e", "variant": "v", "ranker_version": "p", "teams": None,
    }  # fmt: skip


def _interaction(i: int) -> dict[str, Any]:
    return {
        "request_id": f"r{i}", "ts": TS, "user_id": "u", "block_id": "b1", "doc_id": "d", "position": 1,
        "type": "click", "dwell_ms": None, "event_id": None,
    }  # fmt: skip


def _block(i: int) -> dict[str, Any]:
    return {
        "id": f"b{i}", "title": "Jeju food", "kind": "topic", "keywords": ["jeju"], "doc_ids": ["d1"],
        "created_at": TS,
    }  # fmt: skip


def _doc(i: int) -> dict[str, Any]:
    return {
        "id": f"d{i}", "title": "Jeju", "body": "Sea.", "genre": "blog", "keywords": ["jeju"],
        "created_at": TS,
    }  # fmt: skip


def _shown(field: str, value: Any, at: int = 0) -> Any:
    def change(row: dict[str, Any]) -> None:
        row["shown"][at][field] = value

    return change


def _set(field: str, value: Any) -> Any:
    def change(row: dict[str, Any]) -> None:
        row[field] = value

    return change


CASES: dict[str, tuple[type[Record], Any, list[tuple[str, Any]]]] = {
    "impressions": (
        SearchImpression,
        _impression,
        [
            ("empty request id", _set("request_id", "")),
            ("no user", _set("user_id", None)),
            ("no time", _set("ts", None)),
            ("no shown blocks", _set("shown", [])),
            ("shown null", _set("shown", None)),
            ("shown block null", _set("shown", [None])),
            ("position 0", _shown("position", 0)),
            ("position null", _shown("position", None, at=1)),
            ("propensity 0", _shown("propensity", 0.0)),
            ("propensity above 1", _shown("propensity", 1.5, at=2)),
            ("propensity NaN", _shown("propensity", math.nan)),
            ("empty block id", _shown("block_id", "", at=2)),
            ("repeated position", _shown("position", 2, at=2)),
            ("negative candidates", _set("n_candidates", -1)),
            ("fewer candidates than shown", _set("n_candidates", 2)),
            ("more candidates (fine)", _set("n_candidates", 50)),
            ("teams short", _set("teams", ["a", "b"])),
            ("teams unknown", _set("teams", ["a", "b", "c"])),
            ("teams fine", _set("teams", ["a", "b", "a"])),
            ("empty variant", _set("variant", "")),
        ],
    ),
    "interactions": (
        Interaction,
        _interaction,
        [
            ("empty doc id", _set("doc_id", "")),
            ("no doc id (fine)", _set("doc_id", None)),
            ("position 0", _set("position", 0)),
            ("unknown type", _set("type", "hover")),
            ("dwell without duration", _set("type", "dwell")),
            ("negative dwell", _set("dwell_ms", -1)),
            ("event id too long", _set("event_id", "é" * 129)),
            ("event id at the limit (fine)", _set("event_id", "é" * 128)),
            ("empty event id", _set("event_id", "")),
            ("no block", _set("block_id", None)),
        ],
    ),
    "blocks": (
        Block,
        _block,
        [
            ("no docs", _set("doc_ids", [])),
            ("empty keyword", _set("keywords", ["jeju", ""])),
            ("null keyword", _set("keywords", [None])),
            ("no keywords (fine)", _set("keywords", [])),
            ("unknown kind", _set("kind", "listicle")),
            ("empty title", _set("title", "")),
        ],
    ),
    "docs": (
        Doc,
        _doc,
        [
            ("unknown genre", _set("genre", "podcast")),
            ("empty body (fine)", _set("body", "")),
            ("null body", _set("body", None)),
            ("empty keyword", _set("keywords", [""])),
        ],
    ),
}


def _pydantic_refuses(contract: type[Record], rows: list[dict[str, Any]]) -> np.ndarray:
    refused = []
    for row in rows:
        try:
            contract.model_validate(row)
        except ValidationError:
            refused.append(True)
        else:
            refused.append(False)
    return np.array(refused)


@pytest.mark.parametrize(
    ("kind", "case"),
    [(kind, name) for kind, (_, _, cases) in CASES.items() for name, _ in cases],
)
def test_column_checks_refuse_what_the_contract_refuses(kind: str, case: str, tmp_path: Path) -> None:
    contract, make, cases = CASES[kind]
    change = dict(cases)[case]
    rows = [make(i) for i in range(5)]
    change(rows[3])
    table = pa.Table.from_pylist(rows, schema=arrow_schema(contract))
    expected = _pydantic_refuses(contract, table.to_pylist())
    assert list(invalid_rows(table, contract)) == list(expected)
    assert expected.any() == ("fine" not in case)
    path = tmp_path / f"{kind}.parquet"
    # A user's file may declare every column nullable, so nulls reach the checks; row groups of 2 rows read
    # back as a table of several chunks.
    pq.write_table(pa.Table.from_pylist(rows, schema=_nullable(table.schema)), path, row_group_size=2)
    if not expected.any():
        assert read_table(path, contract).num_rows == 5
        return
    with pytest.raises(DataError) as row_by_row:
        _validate_each_row(table, contract, path)  # what every read did before the column checks
    with pytest.raises(DataError) as info:
        read_table(path, contract)
    got, want = info.value, row_by_row.value
    if "cannot read" in str(got):  # a null inside a nested value stops at the cast, before any row check
        assert kind == "impressions" and got.field == "shown"
        return
    assert (got.row, got.field, str(got)) == (want.row, want.field, str(want)) and got.row == 3


def _nullable(schema: pa.Schema) -> pa.Schema:
    def relax(t: pa.DataType) -> pa.DataType:
        if pa.types.is_list(t):
            return pa.list_(pa.field("item", relax(t.value_type), nullable=True))
        if pa.types.is_struct(t):
            return pa.struct([pa.field(f.name, relax(f.type), nullable=True) for f in t])
        return t

    return pa.schema([pa.field(f.name, relax(f.type), nullable=True) for f in schema])


def test_a_world_passes_every_check(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    for kind in ("impressions", "interactions"):
        table = layout.read_events(kind, validate_rows=False)
        assert table.num_rows and not invalid_rows(table, CONTRACTS[kind]).any()
    assert not invalid_rows(layout.read_blocks(), Block).any()
    assert not invalid_rows(layout.read_docs(), Doc).any()


class _Audited(Record):
    """A contract with a validator that has no column version."""

    request_id: str
    position: int

    @model_validator(mode="after")
    def _even(self) -> _Audited:
        if self.position % 2:
            raise ValueError("position must be even")
        return self


def test_a_rule_without_a_column_version_falls_back_to_each_row(tmp_path: Path) -> None:
    with pytest.raises(NotCheckable, match="_even"):
        invalid_rows(pa.table({"request_id": ["r"], "position": [2]}), _Audited)
    with pytest.raises(NotCheckable, match="_rows_fit"):
        invalid_rows(arrow_schema(ServedFeatures).empty_table(), ServedFeatures)
    path = tmp_path / "audited.parquet"
    pq.write_table(pa.table({"request_id": ["r1", "r2"], "position": [2, 3]}), path)
    with pytest.raises(DataError, match="position must be even") as info:
        read_table(path, _Audited)
    assert info.value.row == 1


def test_values_python_cannot_hold_are_refused_by_name(tmp_path: Path) -> None:
    rows = [_interaction(i) for i in range(3)]
    table = pa.Table.from_pylist(rows, schema=arrow_schema(Interaction))
    far = pa.array([0, 0, 253_402_300_800_000], pa.int64()).cast(table.schema.field("ts").type)  # year 10000
    path = tmp_path / "acts.parquet"
    pq.write_table(table.set_column(1, "ts", far), path)
    with pytest.raises(DataError) as info:
        read_table(path, Interaction)
    assert (info.value.row, info.value.field) == (2, "ts")
    bad = pa.Array.from_buffers(
        pa.string(), 1, [None, pa.py_buffer(np.array([0, 2], np.int32)), pa.py_buffer(b"\xff\xfe")]
    )
    table = pa.Table.from_pylist(rows[:1], schema=arrow_schema(Interaction)).set_column(0, "request_id", bad)
    with pytest.raises(DataError, match="not valid data"):
        _validate_rows(table, Interaction, tmp_path / "in-memory")


class _PostInit(Record):
    request_id: str

    def model_post_init(self, context: Any) -> None:
        if self.request_id == "bad":
            raise ValueError("bad request")


def test_rules_the_columns_cannot_see_turn_the_column_checks_off(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotCheckable, match="model_post_init"):
        invalid_rows(pa.table({"request_id": ["bad"]}), _PostInit)
    # A validator edited since its column version was written: the fingerprint no longer matches.
    rule, _ = MODEL_RULES[Interaction]["_dwell_has_duration"]
    monkeypatch.setitem(MODEL_RULES, Interaction, {"_dwell_has_duration": (rule, "0" * 16)})
    _model_checks.cache_clear()
    try:
        with pytest.raises(NotCheckable, match="changed"):
            invalid_rows(arrow_schema(Interaction).empty_table(), Interaction)
    finally:
        monkeypatch.undo()
        _model_checks.cache_clear()
    assert not invalid_rows(arrow_schema(Interaction).empty_table(), Interaction).any()
