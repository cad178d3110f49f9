"""Intent features: a block's topic or genre label links it to blocks of the same intent on other entities, so
a user's long-term and in-session taste for an intent reaches blocks they never saw."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pytest

from data.layout import DataLayout
from features.batch import batch_snapshot
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.definitions import INDEX, USER_SLOT, Request, compute, plan
from features.keys import Keys
from features.ops import ImpressionEvent, InteractionEvent, Shown
from features.replay import Replayer

T0 = 1_800_000_000_000


def _entity(catalog: BlockAttributes, row: int) -> str:
    return catalog.keywords[row][0]


def _same_and_other_intent(catalog: BlockAttributes) -> tuple[int, int, int]:
    """(clicked, same intent on another entity, another intent on the clicked block's entity)."""
    for a in range(len(catalog.ids)):
        same = [
            b
            for b in range(len(catalog.ids))
            if catalog.intent[b] == catalog.intent[a] and _entity(catalog, b) != _entity(catalog, a)
        ]
        other = [
            b
            for b in range(len(catalog.ids))
            if catalog.intent[b] != catalog.intent[a] and _entity(catalog, b) == _entity(catalog, a)
        ]
        if same and other:
            return a, same[0], other[0]
    raise AssertionError("the tiny world has no two entities sharing an intent")


def test_blocks_of_one_intent_share_it_across_entities(tiny_catalog: BlockAttributes) -> None:
    labels = [tiny_catalog.intent_labels[i] for i in tiny_catalog.intent]
    assert all(labels), "every simulated block names its intent"
    assert len(set(labels)) < len(tiny_catalog.ids) / 2
    for row, label in enumerate(labels):
        assert label == tiny_catalog.keywords[row][1].lower()


def test_a_click_raises_blocks_of_the_same_intent_on_other_entities(tiny_catalog: BlockAttributes) -> None:
    clicked, same, other = _same_and_other_intent(tiny_catalog)
    ids = (tiny_catalog.ids[same], tiny_catalog.ids[other])
    replayer = Replayer(FeatureStoreSettings())

    def rows(ts_ms: int) -> np.ndarray:
        req = Request("r-next", ts_ms, "u1", "anything", ids)
        fetched = [replayer.state.fetch(key, fields) for key, fields in plan(replayer.keys, req)]
        return compute(req, fetched, tiny_catalog, FeatureStoreSettings())

    before = rows(T0)
    assert (before[:, INDEX["rt_intent_click"]] == 0).all()
    replayer.apply(ImpressionEvent("r1", T0, "u1", "q", (Shown(tiny_catalog.ids[clicked], 1),)))
    replayer.apply(InteractionEvent("r1", T0 + 1000, "u1", tiny_catalog.ids[clicked], 1, "click"))
    now = rows(T0 + 2000)
    assert now[0, INDEX["rt_intent_click"]] == pytest.approx(1.0, rel=1e-3)  # barely decayed
    assert now[0, INDEX["rt_intent_click_share"]] == pytest.approx(1.0)
    assert now[1, INDEX["rt_intent_click"]] == 0.0
    assert now[1, INDEX["rt_intent_click_share"]] == 0.0
    # The same query tokens as the clicked block's intent label make the query interest point there too.
    label_tokens = tiny_catalog.intent_labels[tiny_catalog.intent[same]]
    replayer.apply(ImpressionEvent("r2", T0 + 3000, "u1", label_tokens, (Shown(tiny_catalog.ids[other], 1),)))
    later = rows(T0 + 4000)
    assert later[0, INDEX["rt_intent_query"]] > later[1, INDEX["rt_intent_query"]]


def test_long_term_intent_share_is_the_users_click_share(
    tiny_world: Path, tiny_catalog: BlockAttributes
) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    clicks = acts.filter(pc.equal(acts["type"], "click"))
    users = Counter(clicks["user_id"].to_pylist())
    user = users.most_common(1)[0][0]
    mine = clicks.filter(pc.equal(clicks["user_id"], user))["block_id"].to_pylist()
    intents = Counter(int(tiny_catalog.intent[tiny_catalog.index[b]]) for b in mine)
    top, n_top = intents.most_common(1)[0]
    keys = Keys("t")
    snapshot = batch_snapshot(imps, acts, tiny_catalog, keys, FeatureStoreSettings())

    candidates = (
        next(b for i, b in enumerate(tiny_catalog.ids) if tiny_catalog.intent[i] == top),
        next(b for i, b in enumerate(tiny_catalog.ids) if tiny_catalog.intent[i] not in intents),
    )
    req = Request("r1", T0, user, "anything", candidates)
    fetched: list[dict] = [{} for _ in plan(keys, req)]
    fetched[USER_SLOT] = snapshot.user[keys.user(user)]
    got = compute(req, fetched, tiny_catalog, FeatureStoreSettings())[:, INDEX["user_intent_share"]]
    assert got[0] == pytest.approx(n_top / len(mine), abs=1e-4)
    assert got[1] == 0.0


def test_query_intent_share_is_the_querys_click_share(
    tiny_world: Path, tiny_catalog: BlockAttributes
) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    clicks = acts.filter(pc.equal(acts["type"], "click")).join(
        imps.select(["request_id", "query"]), "request_id"
    )
    query = Counter(clicks["query"].to_pylist()).most_common(1)[0][0]
    mine = clicks.filter(pc.equal(clicks["query"], query))["block_id"].to_pylist()
    intents = Counter(int(tiny_catalog.intent[tiny_catalog.index[b]]) for b in mine)
    top, n_top = intents.most_common(1)[0]
    keys = Keys("t")
    snapshot = batch_snapshot(imps, acts, tiny_catalog, keys, FeatureStoreSettings())
    # Another block of the top intent that was never clicked for this query inherits the intent's share.
    unclicked = next(
        b for i, b in enumerate(tiny_catalog.ids) if tiny_catalog.intent[i] == top and b not in set(mine)
    )
    other = next(b for i, b in enumerate(tiny_catalog.ids) if tiny_catalog.intent[i] not in intents)
    req = Request("r1", T0, "u-new", query, (unclicked, other))
    fetched: list[dict] = [{} for _ in plan(keys, req)]
    fetched[1] = snapshot.query[keys.query_batch(query)]
    got = compute(req, fetched, tiny_catalog, FeatureStoreSettings())[:, INDEX["query_intent_share"]]
    assert got[0] == pytest.approx(n_top / len(mine))
    assert got[1] == 0.0
