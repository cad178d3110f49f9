"""rt_click_score: a session's clicks make blocks like the clicked one score higher, decaying with time."""

from __future__ import annotations

import numpy as np

from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.definitions import INDEX, Request, compute, plan
from features.ops import ImpressionEvent, InteractionEvent, Shown
from features.replay import Replayer

T0 = 1_800_000_000_000


def _rows(replayer: Replayer, catalog: BlockAttributes, ids: tuple[str, ...], ts_ms: int) -> np.ndarray:
    req = Request("r-next", ts_ms, "u1", "anything", ids)
    fetched = [replayer.state.fetch(key, fields) for key, fields in plan(replayer.keys, req)]
    return compute(req, fetched, catalog, FeatureStoreSettings())


def test_a_click_raises_blocks_sharing_its_keywords(tiny_catalog: BlockAttributes) -> None:
    clicked = tiny_catalog.ids[0]
    tokens = tiny_catalog.token_ids
    overlap = [len(tokens[0] & tokens[i]) / len(tokens[0] | tokens[i]) for i in range(len(tiny_catalog.ids))]
    similar = int(np.argsort(overlap)[-2])  # the most similar other block
    unrelated = int(np.argmin(overlap))
    ids = (tiny_catalog.ids[similar], tiny_catalog.ids[unrelated])
    replayer = Replayer(FeatureStoreSettings())
    before = _rows(replayer, tiny_catalog, ids, T0)
    assert (before[:, INDEX["rt_click_missing"]] == 1).all()
    assert (before[:, INDEX["rt_click_score"]] == 0).all()

    replayer.apply(ImpressionEvent("r1", T0, "u1", "q", (Shown(clicked, 1),)))
    replayer.apply(InteractionEvent("r1", T0 + 1000, "u1", clicked, 1, "click"))
    now = _rows(replayer, tiny_catalog, ids, T0 + 2000)
    assert (now[:, INDEX["rt_click_missing"]] == 0).all()
    score = now[:, INDEX["rt_click_score"]]
    assert score[0] > score[1] >= 0
    np.testing.assert_allclose(score[0], overlap[similar], rtol=1e-3)
    # Two half-lives later the interest is a quarter.
    later = _rows(replayer, tiny_catalog, ids, T0 + 1000 + (4 * 3600 * 1000))
    np.testing.assert_allclose(later[0, INDEX["rt_click_score"]], score[0] / 4, rtol=1e-2)
