"""The policy-aware NDCG of ``ranking.evaluate``: what a ranker's own order would earn, not how well it
repeats the logged page."""

from __future__ import annotations

import numpy as np
import pytest

from ranking.dataset import ListwiseData
from ranking.evaluate import evaluate_scores, policy_aware_ndcg, weighted_dcg
from ranking.feedback import policy_aware_weights

EXAMINATION = (1.0, 0.6, 0.4, 0.3)


def _lists() -> tuple[ListwiseData, np.ndarray]:
    """Two requests of a 4-slot page plus one unshown candidate each (position 0).

    Request 1: the policy's own top, shown for sure; its first block is clicked. Request 2: a randomized
    page (propensity 1/16 per slot) that put a block the policy rarely shows at slot 4, where it was clicked.
    """
    positions = np.array([1, 2, 3, 4, 0, 1, 2, 3, 4, 0])
    propensity = np.array([1, 1, 1, 1, 0, 1 / 16, 1 / 16, 1 / 16, 1 / 16, 0])
    clicks = np.array([1, 0, 0, 0, 0, 0, 0, 0, 1, 0])
    weights = policy_aware_weights(
        clicks, positions, propensity, examination=EXAMINATION, page_size=4, clip=200.0
    )
    data = ListwiseData(
        dense=np.arange(10, dtype=np.float32)[:, None],
        labels=clicks.astype(np.float32),
        offsets=np.array([0, 5, 10]),
        feature_names=("x",),
        weights=weights,
        list_meta={"kind": np.array(["head", "random"])},
    )
    return data, positions


def test_the_rare_click_counts_by_its_weight() -> None:
    data, positions = _lists()
    logged = np.where(positions > 0, 10.0 - positions, 0.0)  # repeats each page, candidate last
    explorer = logged.copy()
    explorer[8] = 100.0  # request 2: the rarely shown, clicked block first
    explorer[0] = -1.0  # request 1: its clicked block last
    # Logged clicks, unweighted, prefer repeating the pages; the policy-aware NDCG sees that the rare click,
    # a 1 / (1/4 * 0.3) chance to be shown and seen, is worth 13 of the policy's sure ones.
    repeat, explore = evaluate_scores(data, logged), evaluate_scores(data, explorer)
    assert repeat["ndcg@10"] > explore["ndcg@10"]
    assert explore["pa_ndcg@10"] > repeat["pa_ndcg@10"]
    weight = 1 / (0.25 * 0.3)
    assert repeat["pa_ndcg@10"] == pytest.approx((1 + weight / np.log2(5)) / (1 + weight), abs=1e-6)
    actual, ideal = weighted_dcg(data, explorer, (10,))[10]
    assert actual[1] == pytest.approx(weight)  # first place: no discount, the full weight
    assert ideal.tolist() == pytest.approx([1.0, weight])
    assert policy_aware_ndcg(actual, ideal) == pytest.approx((1 / np.log2(6) + weight) / (1 + weight))


def test_an_unshown_candidate_ranked_first_costs_the_clicked_rows_their_place() -> None:
    data, positions = _lists()
    page = np.where(positions > 0, 10.0 - positions, 0.0)
    page[8] = 100.0
    pushed = page.copy()
    pushed[[4, 9]] = 1000.0  # the unshown candidates on top: label 0, they earn nothing
    assert evaluate_scores(data, pushed)["pa_ndcg@10"] < evaluate_scores(data, page)["pa_ndcg@10"]
    actual, _ = weighted_dcg(data, pushed, (1,))[1]
    assert actual.tolist() == [0.0, 0.0]


def test_slices_are_normalised_within_each_group() -> None:
    data, positions = _lists()
    scores = np.where(positions > 0, 10.0 - positions, 0.0)
    result = evaluate_scores(data, scores, slices=["kind"])
    assert result["by_kind"]["head"]["pa_ndcg@10"] == pytest.approx(1.0)
    assert result["by_kind"]["random"]["pa_ndcg@10"] == pytest.approx(1 / np.log2(5), abs=1e-6)
    assert result["by_kind"]["random"]["lists"] == 1
