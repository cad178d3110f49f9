"""The replay keeps memory flat on large logs: events become records a chunk at a time, in the same order, and
request contexts leave memory when they expire in event time, as their Redis hashes do."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from data.errors import DataError
from data.layout import DataLayout
from features.config import FeatureStoreSettings
from features.ops import ImpressionEvent, InteractionEvent, Shown
from features.replay import Replayer, impressions_of, in_time_order

T0 = 1_800_000_000_000


def test_chunked_records_keep_the_time_order(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    whole = list(in_time_order(imps, acts, chunk=imps.num_rows + acts.num_rows))
    assert list(in_time_order(imps, acts, chunk=777)) == whole  # chunks that cut ties and days
    assert len(whole) == imps.num_rows + acts.num_rows
    # An impression precedes the clicks at its own time; times never go back.
    keys = [(e.ts_ms, isinstance(e, InteractionEvent)) for e in whole]
    assert keys == sorted(keys)
    assert {e.request_id for e in whole if isinstance(e, ImpressionEvent)} == set(
        imps["request_id"].to_pylist()
    )


def test_chunks_of_one_kind_and_empty_tables(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False).slice(0, 40)
    acts = layout.read_events("interactions", validate_rows=False)
    acts = acts.filter(pc.is_in(acts["request_id"], value_set=imps["request_id"].combine_chunks()))
    whole = list(in_time_order(imps, acts))
    assert len(whole) == imps.num_rows + acts.num_rows > imps.num_rows
    # Chunks of one event each: most hold no impression (or no interaction) at all.
    assert list(in_time_order(imps, acts, chunk=1)) == whole
    assert impressions_of(imps.slice(0, 0)) == []
    assert all(isinstance(e, InteractionEvent) for e in in_time_order(imps.slice(0, 0), acts))


def _search(replayer: Replayer, request: str, ts_ms: int) -> None:
    replayer.apply(ImpressionEvent(request, ts_ms, "u1", "jeju", (Shown("b1", 1),), "s1"))


def _click(replayer: Replayer, request: str, ts_ms: int) -> None:
    replayer.apply(InteractionEvent(request, ts_ms, "u1", "b1", 1, "click"))


def test_contexts_expire_in_event_time_as_in_redis() -> None:
    settings = FeatureStoreSettings()
    ttl_ms = settings.request_ttl_hours * 3_600_000
    replayer = Replayer(settings)
    ctx = replayer.keys.request_context("r1")
    _search(replayer, "r1", T0)
    _click(replayer, "r1", T0 + ttl_ms - 10_000)  # inside the TTL: applied, and it extends the context
    _click(replayer, "r1", T0 + ttl_ms + 5_000)  # past the impression's TTL, inside the extended one
    assert replayer.late == 0 and replayer.events == 3
    assert ctx in replayer.state.hashes

    _search(replayer, "r2", T0 + 3 * ttl_ms)  # event time moves on: r1's context is gone
    assert ctx not in replayer.state.hashes and ctx not in replayer.state.expire_at
    _click(replayer, "r1", T0 + 3 * ttl_ms + 1)  # what Redis would send to the dead letters
    assert replayer.late == 1 and replayer.events == 4
    with pytest.raises(DataError, match="no impression before it"):
        _click(replayer, "never-seen", T0 + 3 * ttl_ms + 2)  # a malformed log is still an error


def test_an_idle_session_expires_and_starts_afresh() -> None:
    settings = FeatureStoreSettings()
    ttl_ms = int(settings.session_ttl_hours * 3_600_000)
    replayer = Replayer(settings)
    session = replayer.keys.session("s1")
    _search(replayer, "r1", T0)
    _click(replayer, "r1", T0 + 1000)
    assert session in replayer.state.hashes
    kept = replayer.state.fetch(session, None)  # packed bytes: a copy
    _search(replayer, "r2", T0 + ttl_ms // 2)  # active again inside the TTL: it stays and grows
    assert replayer.state.fetch(session, None) != kept

    replayer.apply(ImpressionEvent("r3", T0 + 3 * ttl_ms, "u2", "other", (Shown("b2", 1),), "s2"))
    assert session not in replayer.state.hashes  # idle past its TTL: gone, as in Redis
    _search(replayer, "r4", T0 + 3 * ttl_ms + 1)
    fresh = Replayer(settings)
    _search(fresh, "r4", T0 + 3 * ttl_ms + 1)
    assert replayer.state.fetch(session, None) == fresh.state.fetch(session, None)  # afresh, as in Redis
