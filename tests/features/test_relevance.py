"""The rel_* features: what retrieval scored each candidate, aligned and scaled the same way everywhere."""

from __future__ import annotations

import typing

import numpy as np

from features.definitions import DEFAULTS, INDEX, NAMES, Request, compute
from features.relevance import (
    RELEVANCE_MEMBERS,
    UNRANKED,
    RetrievalScores,
    relevance_columns,
    relevance_columns_many,
)
from retrieval.base import Hit
from retrieval.config import MemberName

HITS = [
    Hit("b1", 0.9, {"splade": 12.0, "dense": 0.8}),
    Hit("b2", 0.5, {"dense": 0.6, "behavioural": 0.3}),
    Hit("b3", 0.2, {"splade": 3.0}),
]


def test_members_are_the_retrieval_members() -> None:
    assert set(RELEVANCE_MEMBERS) == set(typing.get_args(MemberName))


def test_columns_follow_the_hits_whatever_the_block_order() -> None:
    blocks = ("b3", "unknown", "b1", "b2")  # a shown block outside the hits, and hits out of order
    cols = relevance_columns(RetrievalScores.align(HITS, blocks), len(blocks))
    assert cols is not None
    np.testing.assert_array_equal(cols["rel_missing"], [0, 1, 0, 0])
    np.testing.assert_allclose(cols["rel_rank_log"], [np.log1p(2), UNRANKED, 0.0, np.log1p(1)])
    np.testing.assert_allclose(cols["rel_fused_share"], [0.2 / 0.9, 0.0, 1.0, 0.5 / 0.9])
    np.testing.assert_allclose(cols["rel_splade"], [3.0, 0.0, 12.0, 0.0])
    np.testing.assert_allclose(cols["rel_splade_share"], [0.25, 0.0, 1.0, 0.0])
    np.testing.assert_array_equal(cols["rel_dense_missing"], [1, 1, 0, 0])
    np.testing.assert_array_equal(cols["rel_bm25_missing"], [1, 1, 1, 1])
    np.testing.assert_allclose(cols["rel_behavioural_share"], [0.0, 0.0, 0.0, 1.0])


def test_many_requests_at_once_give_each_its_own_columns() -> None:
    """Ranks and shares are taken within each request: a batch is its requests alone, concatenated, with
    ties, a list without any member score, and one whose best score is not positive."""
    lists = [
        (HITS, ("b3", "unknown", "b1", "b2")),
        ([Hit("x", 0.4, {"dense": 0.2}), Hit("y", 0.4, {"dense": 0.2}), Hit("z", 0.1, {})], ("z", "y", "x")),
        ([Hit("n", -0.5, {"splade": -1.0})], ("n", "m")),
        ([], ("a",)),
    ]
    scores = [RetrievalScores.align(hits, blocks) for hits, blocks in lists]
    sizes = [len(blocks) for _, blocks in lists]
    together = relevance_columns_many(scores, sizes)
    for name, values in together.items():
        alone = [relevance_columns(s, n)[name] for s, n in zip(scores, sizes, strict=True)]  # type: ignore[index]
        np.testing.assert_array_equal(values, np.concatenate(alone), err_msg=name)
    tied = relevance_columns(scores[1], 3)
    assert tied is not None
    np.testing.assert_array_equal(tied["rel_rank_log"], [np.log1p(2), 0.0, 0.0])  # x and y share rank 0


def test_compute_fills_rel_columns_only_with_retrieval_scores(tiny_catalog) -> None:
    ids = tuple(tiny_catalog.ids[:3])
    hits = [Hit(b, 1.0 - i / 10, {"splade": 5.0 - i}) for i, b in enumerate(ids)]
    empty: list[dict] = [{}, {}, {}, {}]
    plain = compute(Request("r", 1_767_600_000_000, "u", "q", ids), empty, tiny_catalog, _settings())
    scored = compute(
        Request("r", 1_767_600_000_000, "u", "q", ids, RetrievalScores.align(hits, ids)),
        empty,
        tiny_catalog,
        _settings(),
    )
    rel = [i for i, n in enumerate(NAMES) if n.startswith("rel_")]
    np.testing.assert_array_equal(plain[:, rel], np.tile(DEFAULTS[rel], (3, 1)))
    assert (scored[:, INDEX["rel_missing"]] == 0).all()
    np.testing.assert_allclose(scored[:, INDEX["rel_splade"]], [5.0, 4.0, 3.0])
    others = [i for i in range(len(NAMES)) if i not in rel]
    np.testing.assert_array_equal(plain[:, others], scored[:, others])


def _settings():
    from features.config import FeatureStoreSettings

    return FeatureStoreSettings()
