"""Log aggregations (data/logstats.py) and the behavioural retriever built on them, with no leaks in time."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from data.contracts import Interaction, SearchImpression
from data.layout import DataLayout
from data.logstats import click_counts, co_query_counts
from data.schemas import arrow_schema
from retrieval.behavioural import BehaviouralRetriever
from retrieval.config import BehaviouralSettings


def _ts(day: int) -> datetime:
    return datetime(2026, 1, day, 12, tzinfo=UTC)


def _impressions(rows: list[tuple[str, str, str, int, list[str]]]) -> pa.Table:
    records = [
        SearchImpression(
            request_id=r, ts=_ts(day), user_id="u", session_id=s, query=q,
            shown=[{"block_id": b, "position": i + 1, "propensity": 1.0} for i, b in enumerate(blocks)],
            n_candidates=len(blocks), experiment="e", variant="v", ranker_version="p",
        ).model_dump()
        for r, s, q, day, blocks in rows
    ]  # fmt: skip
    return pa.Table.from_pylist(records, schema=arrow_schema(SearchImpression))


def _clicks(rows: list[tuple[str, str, int]]) -> pa.Table:
    records = [
        Interaction(
            request_id=r, ts=_ts(day), user_id="u", block_id=b, doc_id="d", position=1, type="click"
        ).model_dump()
        for r, b, day in rows
    ]
    return pa.Table.from_pylist(records, schema=arrow_schema(Interaction))


IMPS = _impressions(
    [
        ("r1", "s1", "seoul subway fare", 5, ["b1", "b2"]),
        ("r2", "s1", "seoul transit card", 5, ["b3", "b1"]),
        ("r3", "s2", "seoul subway fare", 6, ["b1", "b2"]),
        ("r4", "s2", "seoul transit card", 6, ["b3"]),
        ("r5", "s3", "jeju island", 6, ["b9"]),
        ("r6", "s4", "late query", 8, ["b7"]),
    ]
)
CLICKS = _clicks([("r1", "b1", 5), ("r1", "b1", 5), ("r2", "b3", 5), ("r4", "b3", 6), ("r6", "b7", 8)])


def test_click_counts_count_each_request_once() -> None:
    counts = {(r["query"], r["block_id"]): r for r in click_counts(IMPS, CLICKS).to_pylist()}
    assert counts[("seoul subway fare", "b1")] == {
        "query": "seoul subway fare", "block_id": "b1", "impressions": 2, "clicks": 1
    }  # fmt: skip
    assert counts[("seoul subway fare", "b2")]["clicks"] == 0
    assert counts[("seoul transit card", "b3")]["clicks"] == 2


def test_click_counts_ignore_clicks_they_cannot_attribute() -> None:
    stray = _clicks([("r5", "b1", 6), ("r-unknown", "b9", 6), ("r5", "b9", 6)])  # b1 not shown on r5
    counts = {(r["query"], r["block_id"]): r for r in click_counts(IMPS, stray).to_pylist()}
    assert counts[("jeju island", "b9")]["clicks"] == 1
    assert sum(r["clicks"] for r in counts.values()) == 1
    assert ("jeju island", "b1") not in counts


def test_click_counts_of_an_empty_log() -> None:
    empty = click_counts(IMPS.slice(0, 0), CLICKS.slice(0, 0))
    assert empty.num_rows == 0
    assert empty.schema.names == ["query", "block_id", "impressions", "clicks"]


def test_before_drops_later_events() -> None:
    counts = click_counts(IMPS, CLICKS, before=date(2026, 1, 7))
    assert "late query" not in counts["query"].to_pylist()
    assert co_query_counts(IMPS, before=date(2026, 1, 6)).num_rows == 2  # only session s1 remains
    with pytest.raises(ValueError, match="time zone"):
        click_counts(IMPS, CLICKS, before=datetime(2026, 1, 7))


def test_co_query_counts_are_symmetric_with_lift() -> None:
    pairs = {(r["query_a"], r["query_b"]): r for r in co_query_counts(IMPS).to_pylist()}
    ab = pairs[("seoul subway fare", "seoul transit card")]
    ba = pairs[("seoul transit card", "seoul subway fare")]
    assert ab["sessions"] == ba["sessions"] == 2
    # 4 sessions; each query in 2 of them, together in 2: lift = 2 * 4 / (2 * 2) = 2.
    assert ab["lift"] == pytest.approx(2.0) and ab["pmi"] == pytest.approx(ab["npmi"] * 0.6931, rel=1e-3)
    assert ("jeju island", "late query") not in pairs


def test_behavioural_recalls_through_co_queries() -> None:
    retriever = BehaviouralRetriever(BehaviouralSettings(min_co_sessions=2)).fit(IMPS, CLICKS)
    hits = retriever.search("Seoul  Subway FARE", 10)  # case and spacing do not matter
    assert [h.id for h in hits] == ["b1", "b3"]  # b3 was only ever clicked for the co-query
    assert retriever.search("never typed", 10) == []


def test_behavioural_does_not_see_the_future() -> None:
    retriever = BehaviouralRetriever().fit(IMPS, CLICKS, before=date(2026, 1, 8))
    assert not retriever.known("late query")
    assert retriever.search("late query", 5) == []


def test_world_behavioural_learns_only_from_earlier_days(tiny_world: Path, last_day: date) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    retriever = BehaviouralRetriever().fit(imps, acts, before=last_day)
    later = layout.read_events("impressions", start=last_day, validate_rows=False)
    before_only = click_counts(imps, acts, before=last_day)
    seen = {
        q
        for q, c in zip(before_only["query"].to_pylist(), before_only["clicks"].to_pylist(), strict=True)
        if c
    }
    new_queries = set(later["query"].to_pylist()) - seen
    assert new_queries, "the tiny world should have queries first typed on its last day"
    assert all(not retriever.known(q) for q in new_queries)
