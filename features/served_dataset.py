"""Training sets from served traffic: the feature rows each request was ranked on, as the server logged them
(``events/served/``, written by ``events export``), labelled with the clicks that followed.

In: a data folder holding ``events/served``, ``events/impressions`` and ``events/interactions`` (an
``events export`` archive, or logs of your own in the same layout). Out: the table
``features.dataset.build_training_set`` writes, same columns and types: one row per logged (request, block),
the shown blocks at their positions with the impression's propensity, the sampled unshown candidates at
position 0 with propensity 0, click and dwell from the interactions, and the served values of every feature.

Where the point-in-time replay recomputes features from the logs, this reads what was served, so it can be
no other value; it exists only for traffic a server logged with ``serving.log_served_features``. A record of
another feature set (``features.served.FEATURE_SET``) is refused, naming its file and request: its values
would land in the wrong columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from data.contracts import Interaction, ServedFeatures
from data.errors import ConfigError, DataError
from data.io import read_table
from data.layout import DataLayout
from data.schemas import arrow_schema
from features.archive import INTERACTION_KEY, first_of
from features.dataset import ROW_COLUMNS, outcome_labels, training_table
from features.served import check_feature_set, unpack_rows

# A click may come after midnight of its request's day: interactions are read this far past the last day
# (a request's context, which a click is checked against, lives ``features.request_ttl_hours``, 24 h).
_LABEL_DAYS_AFTER = 1


@dataclass(frozen=True)
class _Impression:
    user_id: str
    session_id: str
    query: str
    n_candidates: int
    shown: dict[str, tuple[int, float]]  # block id -> (position, propensity)


@dataclass(frozen=True)
class ServedTrainingSet:
    table: pa.Table
    requests: int
    without_impression: int  # logged requests whose impression is not in the folder: left out


def build_served_training_set(
    layout: DataLayout, start: date | None = None, end: date | None = None
) -> ServedTrainingSet:
    """The training table of the served-feature logs on days [start, end] (None: open ended)."""
    if start is not None and end is not None and end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    if not layout.events_dir("served").is_dir():
        raise DataError(
            "no served-feature logs (events/served/): this traffic was not logged with "
            "serving.log_served_features; build its training set with the point-in-time replay "
            "(`features dataset` without --served)",
            path=layout.root,
        )
    impressions = _impressions(layout, start, end)
    logged = pa.array(list(impressions), pa.string())
    parts: list[pa.Table] = []
    missing: set[str] = set()
    for day in layout.days("served"):
        if (start and day < start) or (end and day > end):
            continue
        for path in layout.day_files("served", day):
            part = _rows_of(path, impressions)
            known = pc.is_in(part["request_id"], value_set=logged)
            missing.update(part.filter(pc.invert(known))["request_id"].to_pylist())
            parts.append(part.filter(known))
    rows = first_of(pa.concat_tables(parts) if parts else _empty_rows(), ["request_id", "block_id"])
    rows = rows.take(pc.sort_indices(rows, [("ts", "ascending")]))  # stable: requests in time order
    labels_end = end + timedelta(days=_LABEL_DAYS_AFTER) if end is not None else None
    clicked, dwell = outcome_labels(_interactions(layout, start, labels_end))
    cols: dict[str, list] = {k: [] for k in ROW_COLUMNS}
    for r, ts, b, p in zip(
        rows["request_id"].to_pylist(),
        rows["ts"].cast(pa.int64()).to_pylist(),
        rows["block_id"].to_pylist(),
        rows["position"].to_pylist(),
        strict=True,
    ):
        imp = impressions[r]
        cols["request_id"].append(r)
        cols["ts"].append(ts)
        cols["user_id"].append(imp.user_id)
        cols["session_id"].append(imp.session_id)
        cols["query"].append(imp.query)
        cols["block_id"].append(b)
        cols["position"].append(p)
        cols["propensity"].append(imp.shown[b][1] if p else 0.0)
        cols["n_candidates"].append(imp.n_candidates)
        cols["click"].append(1 if (r, b) in clicked else 0)
        cols["dwell_ms"].append(dwell.get((r, b), 0))
    features = unpack_rows(rows["values"].to_pylist())
    table = training_table(cols, features)
    return ServedTrainingSet(table, len(set(cols["request_id"])), len(missing))


def _rows_of(path: Path, impressions: dict[str, _Impression]) -> pa.Table:
    """One served file's rows, one per (request, block): request_id, ts, block_id, position, values.

    Refuses (``DataError`` naming the file and the request) a record of another feature set, and a shown
    row that its request's impression did not show at that position.
    """
    records = read_table(path, ServedFeatures)  # rows validated: base64, lengths, finite values
    sets = records.select(["feature_set", "width"]).group_by(["feature_set", "width"]).aggregate([])
    for feature_set, width in zip(sets["feature_set"].to_pylist(), sets["width"].to_pylist(), strict=True):
        match = pc.and_(pc.equal(records["feature_set"], feature_set), pc.equal(records["width"], width))
        request_id = records.filter(match)["request_id"][0].as_py()
        check_feature_set(feature_set, width, request_id=request_id, where=str(path))
    nested = records["rows"].combine_chunks()  # one chunk: parent indices count from its start
    parent = pc.list_parent_indices(nested)
    flat = pc.list_flatten(nested)
    out = pa.table(
        {
            "request_id": records["request_id"].take(parent),
            "ts": records["ts"].take(parent),
            "block_id": flat.field("block_id"),
            "position": flat.field("position"),
            "values": flat.field("values"),
        }
    )
    for r, b, p in zip(
        out["request_id"].to_pylist(), out["block_id"].to_pylist(), out["position"].to_pylist(), strict=True
    ):
        imp = impressions.get(r)
        if p and imp is not None and imp.shown.get(b, (None,))[0] != p:
            raise DataError(
                f"request {r!r} logged block {b!r} at position {p}, which its impression did not show there",
                path=path,
            )
    return out


def _empty_rows() -> pa.Table:
    ts_type = arrow_schema(ServedFeatures).field("ts").type
    return pa.table(
        {
            "request_id": pa.array([], pa.string()),
            "ts": pa.array([], ts_type),
            "block_id": pa.array([], pa.string()),
            "position": pa.array([], pa.int64()),
            "values": pa.array([], pa.string()),
        }
    )


def _impressions(layout: DataLayout, start: date | None, end: date | None) -> dict[str, _Impression]:
    """The logged impressions by request id (first of each: the archive delivers at least once)."""
    imps = first_of(
        layout.read_events("impressions", start=start, end=end, validate_rows=False), ["request_id"]
    )
    out = {}
    for r, u, s, q, n, shown in zip(
        imps["request_id"].to_pylist(),
        imps["user_id"].to_pylist(),
        imps["session_id"].to_pylist(),
        imps["query"].to_pylist(),
        imps["n_candidates"].to_pylist(),
        imps["shown"].to_pylist(),
        strict=True,
    ):
        out[r] = _Impression(u, s, q, n, {x["block_id"]: (x["position"], x["propensity"]) for x in shown})
    return out


def _interactions(layout: DataLayout, start: date | None, end: date | None) -> pa.Table:
    if not layout.events_dir("interactions").is_dir():  # no click has happened yet
        return arrow_schema(Interaction).empty_table()
    acts = layout.read_events("interactions", start=start, end=end, validate_rows=False)
    return first_of(acts, INTERACTION_KEY)
