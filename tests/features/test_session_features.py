"""Session features: the tallies of the request's own session, which a user's other sessions cannot blur."""

from __future__ import annotations

import math

import numpy as np
import pytest

from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.definitions import DEFAULTS, INDEX, NAMES, Request, compute, plan
from features.ops import ImpressionEvent, InteractionEvent, Shown
from features.replay import Replayer

T0 = 1_800_000_000_000
SESSION = [n for n in NAMES if n.startswith("session_")]


def _two_intents(catalog: BlockAttributes) -> tuple[int, int]:
    a = 0
    b = next(i for i in range(len(catalog.ids)) if catalog.intent[i] != catalog.intent[a])
    return a, b


def _rows(replayer: Replayer, catalog: BlockAttributes, ids: tuple[str, ...], session: str) -> np.ndarray:
    req = Request("r-next", T0 + 60_000, "u1", "anything", ids, session_id=session)
    fetched = [replayer.state.fetch(key, fields) for key, fields in plan(replayer.keys, req)]
    return compute(req, fetched, catalog, FeatureStoreSettings())


def _search_and_click(replayer: Replayer, request: str, session: str, block: str, ts_ms: int) -> None:
    replayer.apply(ImpressionEvent(request, ts_ms, "u1", "jeju", (Shown(block, 1),), session))
    replayer.apply(InteractionEvent(request, ts_ms + 1000, "u1", block, 1, "click"))


def test_each_session_sees_its_own_clicks_and_the_user_sees_both(tiny_catalog: BlockAttributes) -> None:
    a, b = _two_intents(tiny_catalog)
    ids = (tiny_catalog.ids[a], tiny_catalog.ids[b])
    replayer = Replayer(FeatureStoreSettings())
    # Two sessions of one user, interleaved within seconds (a heavy user's day).
    _search_and_click(replayer, "r1", "s-a", ids[0], T0)
    _search_and_click(replayer, "r2", "s-b", ids[1], T0 + 5000)
    _search_and_click(replayer, "r3", "s-a", ids[0], T0 + 10_000)

    in_a = _rows(replayer, tiny_catalog, ids, "s-a")
    assert in_a[0, INDEX["session_intent_click_share"]] == pytest.approx(1.0)
    assert in_a[1, INDEX["session_intent_click_share"]] == 0.0
    assert in_a[0, INDEX["session_intent_click"]] > 1.9  # two clicks, barely decayed
    np.testing.assert_allclose(in_a[:, INDEX["session_searches_log"]], math.log1p(2))
    assert (in_a[:, INDEX["session_missing"]] == 0).all()
    assert (in_a[:, INDEX["session_click_missing"]] == 0).all()
    # The user-level tallies mix both sessions.
    assert in_a[0, INDEX["rt_intent_click"]] > 0 and in_a[1, INDEX["rt_intent_click"]] > 0

    in_b = _rows(replayer, tiny_catalog, ids, "s-b")
    assert in_b[1, INDEX["session_intent_click_share"]] == pytest.approx(1.0)
    assert in_b[0, INDEX["session_intent_click_share"]] == 0.0
    np.testing.assert_allclose(in_b[:, INDEX["session_searches_log"]], math.log1p(1))


def test_no_session_or_a_new_one_gives_the_defaults(tiny_catalog: BlockAttributes) -> None:
    a, b = _two_intents(tiny_catalog)
    ids = (tiny_catalog.ids[a], tiny_catalog.ids[b])
    replayer = Replayer(FeatureStoreSettings())
    _search_and_click(replayer, "r1", "s-a", ids[0], T0)
    defaults = np.tile(DEFAULTS[[INDEX[n] for n in SESSION]], (2, 1))
    for session in ("", "s-new"):
        got = _rows(replayer, tiny_catalog, ids, session)[:, [INDEX[n] for n in SESSION]]
        np.testing.assert_array_equal(got, defaults)


def test_a_one_request_session_keeps_no_state(tiny_catalog: BlockAttributes) -> None:
    """The API logs a request without a client session as a session of its own id: nothing reads it."""
    replayer = Replayer(FeatureStoreSettings())
    block = tiny_catalog.ids[0]
    _search_and_click(replayer, "r1", "r1", block, T0)
    assert not [k for k in replayer.state.hashes if k == replayer.keys.session("r1")]
    _search_and_click(replayer, "r2", "s-a", block, T0)
    assert replayer.keys.session("s-a") in replayer.state.hashes
