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


def test_interest_matches_its_set_definition(tiny_catalog: BlockAttributes) -> None:
    # The sparse products must give what the docstrings define on token sets: a click's Jaccard overlap
    # with each candidate times its weight, and the decayed query-word counts found in each block's tokens.
    from features.interest import click_interest, query_interest
    from features.packing import keyword_id

    rng = np.random.default_rng(3)
    tokens = tiny_catalog.token_ids
    for _ in range(20):
        rows = rng.choice(len(tiny_catalog.ids), 30, replace=False)
        clicked_rows = [int(r) for r in rng.choice(len(tiny_catalog.ids), 5)]
        clicked = {keyword_id(tiny_catalog.ids[r]): float(rng.random()) + 0.01 for r in clicked_rows}
        clicked[7] = 0.5  # a block the catalogue does not know: counted in the total, overlaps nothing
        words = sorted({t for s in tokens for t in s})
        interest = {int(t): float(rng.random()) for t in rng.choice(words, 6)} | {11: 0.3}
        expected_click = [
            sum(
                w * len(tokens[c] & tokens[r]) / max(len(tokens[c] | tokens[r]), 1)
                for c, w in ((tiny_catalog.row_of_hash(h), w) for h, w in clicked.items())
                if c is not None
            )
            for r in rows
        ]
        expected_query = [sum(interest.get(t, 0.0) for t in tokens[r]) for r in rows]
        got_click = click_interest(clicked, tiny_catalog, rows)["click_score"]
        got_query = query_interest(interest, tiny_catalog, rows)["keyword_score"]
        np.testing.assert_allclose(got_click, expected_click)
        np.testing.assert_allclose(got_query, expected_query)
