"""The served-feature record (``ServedFeatures``): packed float32 rows that round-trip exactly, and clear
refusals, naming the field, of a row cut short, text that is not base64, non-finite values and repeats."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import numpy as np
import pytest
from pydantic import ValidationError

from data.contracts import ServedFeatures, pack_floats, unpack_floats

WIDTH = 5


def _record(**overrides: object) -> dict:
    rows = [
        {"block_id": "b1", "position": 1, "score": 0.5, "values": pack_floats(np.arange(WIDTH) / 3)},
        {"block_id": "b9", "position": 0, "score": None, "values": pack_floats(-np.arange(WIDTH) / 7)},
    ]
    return {
        "request_id": "r1",
        "ts": datetime(2026, 1, 5, tzinfo=UTC),
        "feature_set": "0123456789abcdef",
        "width": WIDTH,
        "rows": rows,
        **overrides,
    }


def _error(data: dict) -> str:
    with pytest.raises(ValidationError) as info:
        ServedFeatures.model_validate(data)
    err = info.value.errors()[0]
    return ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]


def test_values_round_trip_as_float32_through_json() -> None:
    record = ServedFeatures.model_validate(_record())
    again = ServedFeatures.model_validate_json(record.model_dump_json())
    assert again == record
    values = unpack_floats(again.rows[0].values)
    assert values.dtype == np.float32 and np.array_equal(values, (np.arange(WIDTH) / 3).astype(np.float32))
    # Compact: 4 bytes a value, base64 (4 characters per 3 bytes), not a list of JSON floats.
    assert len(again.rows[0].values) == 4 * -(-WIDTH * 4 // 3)


def test_a_row_cut_short_is_refused_naming_the_row() -> None:
    data = _record()
    data["rows"][1]["values"] = pack_floats(np.arange(WIDTH - 1))  # valid base64, one value short
    assert "rows[1].values holds 16 bytes, not width 5 x 4 = 20" in _error(data)


def test_truncated_base64_and_bad_values_are_refused_naming_the_field() -> None:
    good = _record()["rows"][0]["values"]
    cut = _record()
    cut["rows"][0]["values"] = good[:-3]
    assert _error(cut).startswith("rows.0.values: ")
    other = _record()
    other["rows"][0]["values"] = "not base64!"
    assert _error(other).startswith("rows.0.values: ") and "base64" in _error(other)
    nan = _record()
    nan["rows"][0]["values"] = base64.b64encode(np.full(WIDTH, np.nan, "<f4").tobytes()).decode()
    assert "rows.0.values" in _error(nan) and "not finite" in _error(nan)
    inf = _record()
    inf["rows"][0]["score"] = float("inf")
    assert _error(inf).startswith("rows.0.score: ")


def test_digest_shape_positions_and_repeats() -> None:
    assert _error(_record(feature_set="XYZ")).startswith("feature_set: ")
    assert _error(_record(rows=[])).startswith("rows: ")
    repeated = _record()
    repeated["rows"][1]["block_id"] = "b1"
    assert "rows repeat a block" in _error(repeated)
    twice = _record()
    twice["rows"][1]["position"] = 1
    assert "repeat a position" in _error(twice)
    negative = _record()
    negative["rows"][0]["position"] = -1
    assert _error(negative).startswith("rows.0.position: ")
