"""Aggregations over the event logs that several stages share (retrieval, features), in pyarrow and numpy.

Inputs are the ``impressions`` and ``interactions`` tables as ``data.layout.DataLayout.read_events`` returns
them. ``before`` keeps only events strictly earlier than that instant (a ``date`` means midnight UTC), so
statistics used to evaluate day D can be computed from days before D without leaking D itself.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Query segments every report shares (world stats, ranker evaluation): entropy terciles of a query's clicks
# (queries with fewer clicks than the minimum have no entropy) and the diversity of a request's wanted blocks.
MIN_CLICKS_FOR_ENTROPY = 10
ENTROPY_BUCKETS = ("low", "mid", "high")
DIVERSITY_BUCKETS = {"focused": (0.0, 1 / 3), "middle": (1 / 3, 2 / 3), "diverse": (2 / 3, 1.0001)}


def _cutoff(before: date | datetime | None) -> datetime | None:
    if before is None:
        return None
    if isinstance(before, datetime):
        if before.tzinfo is None:
            raise ValueError("before must carry a time zone (event timestamps are UTC)")
        return before
    return datetime(before.year, before.month, before.day, tzinfo=UTC)


def _before(table: pa.Table, before: date | datetime | None) -> pa.Table:
    cutoff = _cutoff(before)
    if cutoff is None:
        return table
    return table.filter(pc.less(table["ts"], pa.scalar(cutoff, type=table.schema.field("ts").type)))


def list_parents(lists: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """For each value of ``pc.list_flatten(lists)``, the row of its list. Unlike ``pc.list_parent_indices``
    it skips what flatten skips: the values under a null list entry."""
    lengths = np.asarray(pc.fill_null(pc.list_value_length(lists), 0).to_numpy(), dtype=np.int64)
    return np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)


def dictionary_codes(
    values: pa.ChunkedArray | pa.Array, dictionary: pa.Array | None = None
) -> tuple[np.ndarray, pa.Array]:
    """Each value's index (int64) in ``dictionary`` (default: the distinct values in order of first
    appearance, null included), -1 where absent from it, and the dictionary. Integer codes are what lets a
    log's tens of millions of strings be grouped and matched in a few hundred MB."""
    if dictionary is None:
        dictionary = pc.unique(values)
    codes = pc.fill_null(pc.index_in(values, value_set=dictionary), -1)
    return np.asarray(codes.to_numpy(), dtype=np.int64), dictionary


@dataclass(frozen=True)
class ShownBlocks:
    """Every block a log shows, one entry per (request, shown block) in the table's order, as arrays."""

    parent: np.ndarray  # the impression's row in the table
    block: np.ndarray  # index into ``block_ids``
    position: np.ndarray
    clicked: np.ndarray  # the request clicked this block (once however many of its docs were opened)
    first_click_ms: np.ndarray  # epoch ms of that first click, where clicked
    block_ids: pa.Array


def shown_blocks(impressions: pa.Table, interactions: pa.Table) -> ShownBlocks:
    """The shown blocks of ``impressions`` and when ``interactions`` first clicked each. A click on a block
    its request did not show is ignored (it cannot be attributed to a query)."""
    lists = impressions["shown"]
    flat = pc.list_flatten(lists)
    parent = list_parents(lists)
    block, block_ids = dictionary_codes(pc.struct_field(flat, "block_id"))
    request, requests = dictionary_codes(impressions["request_id"])
    clicks = interactions.filter(pc.equal(interactions["type"], "click"))
    click_request, _ = dictionary_codes(clicks["request_id"], requests)
    click_block, _ = dictionary_codes(clicks["block_id"], block_ids)
    known = (click_request >= 0) & (click_block >= 0)
    width = max(len(block_ids), 1)
    first = (
        pa.table(
            {
                "key": click_request[known] * width + click_block[known],
                "ms": np.asarray(clicks["ts"].cast(pa.int64()).to_numpy(), dtype=np.int64)[known],
            }
        )
        .group_by("key")
        .aggregate([("ms", "min")])
    )
    at = dictionary_codes(pa.array(request[parent] * width + block), first["key"].combine_chunks())[0]
    first_ms = np.asarray(first["ms_min"].to_numpy(), dtype=np.int64)
    return ShownBlocks(
        parent=parent,
        block=block,
        position=np.asarray(pc.struct_field(flat, "position").to_numpy(), dtype=np.int64),
        clicked=at >= 0,
        first_click_ms=first_ms[np.maximum(at, 0)] if len(first_ms) else np.zeros(len(at), np.int64),
        block_ids=block_ids,
    )


def click_counts(
    impressions: pa.Table, interactions: pa.Table, *, before: date | datetime | None = None
) -> pa.Table:
    """Per (query, block): times the block was shown for the query, and how many of those were clicked.

    Returns columns ``query``, ``block_id``, ``impressions`` and ``clicks`` (int64). A click counts once
    per (request, block) however many of the block's docs were opened; clicks on blocks that were not
    shown on that request are ignored (they cannot be attributed to a query).
    """
    impressions = _before(impressions, before)
    shown = shown_blocks(impressions, _before(interactions, before))
    query, queries = dictionary_codes(impressions["query"])
    width = max(len(shown.block_ids), 1)
    pairs, pair = np.unique(query[shown.parent] * width + shown.block, return_inverse=True)
    out = pa.table(
        {
            "query": queries.take(pa.array(pairs // width)),
            "block_id": shown.block_ids.take(pa.array(pairs % width)),
            "impressions": pa.array(np.bincount(pair, minlength=len(pairs)), pa.int64()),
            "clicks": pa.array(
                np.bincount(pair, weights=shown.clicked, minlength=len(pairs)).astype(np.int64), pa.int64()
            ),
        }
    )
    return out.sort_by([("query", "ascending"), ("block_id", "ascending")])


def co_query_counts(impressions: pa.Table, *, before: date | datetime | None = None) -> pa.Table:
    """Pairs of distinct queries typed in the same session, with how strongly they go together.

    Returns one row per ordered pair (both directions are present, so lookups by ``query_a`` find all):
    ``query_a``, ``query_b``, ``sessions`` (sessions with both), ``sessions_a``, ``sessions_b`` (sessions with
    each), ``lift`` = P(a, b) / (P(a) P(b)) over sessions, ``pmi`` = ln(lift) and ``npmi`` = pmi / -ln P(a, b)
    in [-1, 1] (1: the two always occur together).
    """
    imps = _before(impressions, before)
    per_session = imps.select(["session_id", "query"]).group_by(["session_id", "query"]).aggregate([])
    n_sessions = pc.count_distinct(per_session["session_id"]).as_py()
    query_sessions = per_session.group_by("query").aggregate([("session_id", "count")])
    query_sessions = query_sessions.rename_columns(["query", "n"])
    other = per_session.rename_columns(["session_id", "query_b"])
    pairs = per_session.join(other, keys="session_id", join_type="inner")
    pairs = pairs.filter(pc.not_equal(pairs["query"], pairs["query_b"]))
    pairs = pairs.group_by(["query", "query_b"]).aggregate([("session_id", "count")])
    pairs = pairs.rename_columns(["query_a", "query_b", "sessions"])
    pairs = pairs.join(query_sessions.rename_columns(["query_a", "sessions_a"]), keys="query_a")
    pairs = pairs.join(query_sessions.rename_columns(["query_b", "sessions_b"]), keys="query_b")
    n_ab = pairs["sessions"].to_numpy().astype(float)
    n_a = pairs["sessions_a"].to_numpy().astype(float)
    n_b = pairs["sessions_b"].to_numpy().astype(float)
    total = float(max(n_sessions, 1))
    lift = n_ab * total / (n_a * n_b)
    pmi = np.log(lift)
    p_ab = n_ab / total
    # P(a, b) = 1 (every session has both) makes the denominator 0; such a pair is perfectly associated.
    npmi = np.divide(pmi, -np.log(p_ab), out=np.ones_like(pmi), where=p_ab < 1)
    out = pa.table(
        {
            "query_a": pairs["query_a"],
            "query_b": pairs["query_b"],
            "sessions": pairs["sessions"].cast(pa.int64()),
            "sessions_a": pairs["sessions_a"].cast(pa.int64()),
            "sessions_b": pairs["sessions_b"].cast(pa.int64()),
            "lift": pa.array(lift),
            "pmi": pa.array(pmi),
            "npmi": pa.array(npmi),
        }
    )
    return out.sort_by([("query_a", "ascending"), ("query_b", "ascending")])


def query_click_entropy(counts: pa.Table, *, min_clicks: int = 1) -> dict[str, tuple[float, int]]:
    """Per query with at least ``min_clicks`` clicks: (entropy in bits of its clicked blocks, clicks).

    ``counts`` is what ``click_counts`` returns. Low entropy: one block takes the clicks (single intent);
    high: clicks spread over many blocks (many intents, where personalization matters).
    """
    clicked = counts.filter(pc.greater(counts["clicks"], 0)).sort_by("query")
    queries = clicked["query"].to_numpy(zero_copy_only=False)
    n = clicked["clicks"].to_numpy().astype(float)
    out: dict[str, tuple[float, int]] = {}
    if not len(queries):
        return out
    bounds = np.flatnonzero(np.r_[True, queries[1:] != queries[:-1], True])
    for lo, hi in itertools.pairwise(bounds):
        total = n[lo:hi].sum()
        if total >= min_clicks:
            p = n[lo:hi] / total
            out[str(queries[lo])] = (float(-(p * np.log2(p)).sum()), int(total))
    return out
