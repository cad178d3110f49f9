"""LambdaMART on the engine: a real local Dask cluster of 2 worker processes trains LightGBM on the tiny
world's lists as well as one process does, both workers join LightGBM's network, and the model saves, loads
and scores in process like any other."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data.engine import EngineSettings, engine_client
from ranking.engine_lists import list_partitions
from ranking.evaluate import evaluate_scores
from ranking.lgbm import LightGBMRanker
from ranking.lgbm_dask import list_rows
from search.settings import Settings


def test_partitions_keep_lists_whole() -> None:
    offsets = np.array([0, 3, 4, 9, 11, 12])
    parts = list_partitions(5, 2)
    assert [p.tolist() for p in parts] == [[0, 2, 4], [1, 3]]
    assert list_rows(offsets, parts[0]).tolist() == [0, 1, 2, 4, 5, 6, 7, 8, 11]
    assert len(list_partitions(1, 4)) == 1  # never an empty partition


@pytest.mark.slow
def test_two_workers_train_like_one_process(
    tiny_world: Path, base_settings: Settings, tmp_path: Path
) -> None:
    from data.layout import DataLayout
    from features.dataset import build_training_set
    from ranking.world import to_listwise

    layout = DataLayout(tiny_world)
    days = layout.days("impressions")
    train = to_listwise(build_training_set(layout, days[1], days[-2], base_settings.features)).data
    test = to_listwise(build_training_set(layout, days[-1], days[-1], base_settings.features)).data
    params = {"n_estimators": 40, "learning_rate": 0.1, "num_leaves": 15, "threads": 1}
    single = LightGBMRanker(**params).fit(train)
    with engine_client(EngineSettings(workers=2)) as client:
        ranker = LightGBMRanker(**params).fit(train, client=client)
    # LightGBM's own count of machines in its network: a single-process fallback has none.
    assert ranker.info_["engine"] == {"workers": 2, "partitions": 2, "machines": 2}
    assert ranker.get_params() == single.get_params()  # where it ran is not part of the model
    ndcg = evaluate_scores(test, single.score(test), ks=(10,))["ndcg@10"]
    on_engine = evaluate_scores(test, ranker.score(test), ks=(10,))["ndcg@10"]
    assert abs(on_engine - ndcg) <= 0.02, (on_engine, ndcg)
    ranker.save(tmp_path / "m")  # LightGBM text + manifest, scored in process by the plain Booster
    np.testing.assert_allclose(LightGBMRanker.load(tmp_path / "m").score(test), ranker.score(test))
