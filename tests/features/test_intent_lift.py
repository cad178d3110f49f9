"""Intent lifts and session exposures: what a person clicks measured against what they were shown.

The lifts are checked against a plain loop over the tiny world's logs (the module computes them with
columnar sums), and the session tally goes through the same replay ops the stream consumer applies."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import pytest

from data.layout import DataLayout
from features.batch import batch_snapshot
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.definitions import INDEX, USER_SLOT, Request, compute, plan
from features.keys import Keys
from features.ops import LIFT_FIELD, ImpressionEvent, InteractionEvent, Shown
from features.packing import join_blob, unpack_lifts
from features.replay import Replayer

T0 = 1_800_000_000_000


def _loop_lifts(imps, acts, catalog: BlockAttributes, settings: FeatureStoreSettings):
    """The definition, one shown block at a time."""
    prior = settings.position_prior
    clicked = {
        (r, b)
        for r, b, t in zip(
            acts["request_id"].to_pylist(),
            acts["block_id"].to_pylist(),
            acts["type"].to_pylist(),
            strict=True,
        )
        if t == "click"
    }
    rows = []
    for r, u, shown in zip(
        imps["request_id"].to_pylist(), imps["user_id"].to_pylist(), imps["shown"].to_pylist(), strict=True
    ):
        for s in shown:
            i = int(catalog.intent[catalog.index[s["block_id"]]])
            exam = prior[min(max(s["position"], 1), len(prior)) - 1]
            rows.append((u, i, exam, float((r, s["block_id"]) in clicked)))
    clicks, exams = defaultdict(float), defaultdict(float)
    for _, i, e, c in rows:
        clicks[i] += c
        exams[i] += e
    rate = {i: clicks[i] / exams[i] for i in clicks}
    per = defaultdict(lambda: [0.0, 0.0])
    for u, i, e, c in rows:
        per[u, i][0] += c
        per[u, i][1] += e * rate[i]
    a = settings.lift_prior_clicks
    out, overalls = {}, {}
    for u in {u for u, _ in per}:
        mine = {i: v for (v_u, i), v in per.items() if v_u == u}
        overall = (sum(c for c, _ in mine.values()) + a) / (sum(x for _, x in mine.values()) + a)
        out[u] = {i: (c + a * overall) / (x + a) for i, (c, x) in mine.items()}
        overalls[u] = overall
    return out, overalls


def test_user_intent_lift_is_clicks_over_expected_clicks_shrunk_to_the_users_own_rate(
    tiny_world: Path, tiny_catalog: BlockAttributes
) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    settings = FeatureStoreSettings()
    settings = settings.model_copy(update={"user_intent_lifts": 16})  # fewer than the user's intents
    expected, overalls = _loop_lifts(imps, acts, tiny_catalog, settings)
    user = max(expected, key=lambda u: (len(expected[u]), u))
    lifts = expected[user]
    assert max(lifts.values()) > 1.0 > min(lifts.values()), (
        "the most active user likes some intents, not others"
    )
    keys = Keys("t")
    snapshot = batch_snapshot(imps, acts, tiny_catalog, keys, settings)
    stored = unpack_lifts(join_blob(snapshot.user[keys.user(user)], LIFT_FIELD))
    assert len(stored) == min(len(lifts), settings.user_intent_lifts) + 1  # and the overall lift
    kept = [i for i in lifts if tiny_catalog.intent_profile_ids[i] in stored]
    dropped = [i for i in lifts if i not in kept]
    probe = kept + dropped[:1]
    blocks = tuple(
        next(b for r, b in enumerate(tiny_catalog.ids) if tiny_catalog.intent[r] == i) for i in probe
    )
    req = Request("r1", T0, user, "anything", blocks)
    fetched: list[dict] = [{} for _ in plan(keys, req)]
    fetched[USER_SLOT] = snapshot.user[keys.user(user)]
    got = compute(req, fetched, tiny_catalog, settings)[:, INDEX["user_intent_lift"]]
    for j, i in enumerate(kept):  # stored as 16-bit fixed point over [0, 4]
        assert got[j] == pytest.approx(math.log(max(min(lifts[i], 4.0), 1 / 64)), abs=2e-3)
    assert dropped, "the most active user has more intents than are kept"
    # An intent not kept falls back to the user's overall lift, which every kept lift was shrunk towards.
    assert got[-1] == pytest.approx(math.log(overalls[user]), abs=2e-3)


def test_a_shown_and_skipped_intent_is_counted_for_the_session(tiny_catalog: BlockAttributes) -> None:
    settings = FeatureStoreSettings()
    replayer = Replayer(settings)
    by_intent: dict[int, list[int]] = defaultdict(list)
    for r in range(len(tiny_catalog.ids)):
        by_intent[int(tiny_catalog.intent[r])].append(r)
    a, b = [rows for i, rows in sorted(by_intent.items()) if i and len(rows) >= 2][:2]
    ids = tiny_catalog.ids
    shown = (Shown(ids[a[0]], 1), Shown(ids[b[0]], 2))
    replayer.apply(ImpressionEvent("r1", T0, "u1", "first query", shown, session_id="s1"))
    replayer.apply(InteractionEvent("r1", T0 + 1000, "u1", ids[b[0]], 2, "click"))

    def rows(session: str) -> dict[str, list[float]]:
        req = Request(
            "r2", T0 + 2000, "u1", "next query", (ids[a[0]], ids[a[1]], ids[b[1]]), session_id=session
        )
        fetched = [replayer.state.fetch(key, fields) for key, fields in plan(replayer.keys, req)]
        out = compute(req, fetched, tiny_catalog, settings)
        names = ("session_block_shown", "session_intent_shown", "session_intent_click")
        return {n: out[:, INDEX[n]].tolist() for n in names}

    got = rows("s1")
    assert got["session_block_shown"] == pytest.approx([1.0, 0.0, 0.0], abs=1e-3)  # barely decayed
    assert got["session_intent_shown"] == pytest.approx([1.0, 1.0, 1.0], abs=1e-3)
    # Intent a was shown and left, intent b shown and clicked: the two together tell them apart.
    assert got["session_intent_click"][0] == 0.0 < got["session_intent_click"][2]
    other = rows("s2")
    assert other["session_block_shown"] == [0.0, 0.0, 0.0]
    assert other["session_intent_shown"] == [0.0, 0.0, 0.0]
