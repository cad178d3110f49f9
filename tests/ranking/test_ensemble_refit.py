"""DASALC-ens with ``refit``: members retrain on train + valid for exactly their validated epochs."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ranking.config import TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.ensemble import DASALCEnsembleRanker, concat_lists
from ranking.models import load_ranker


def test_concat_lists(synthetic: tuple[ListwiseData, ...]) -> None:
    train, valid, _ = synthetic
    both = concat_lists(train, valid)
    assert both.n_lists == train.n_lists + valid.n_lists and both.n_rows == train.n_rows + valid.n_rows
    np.testing.assert_array_equal(both.subset(np.arange(train.n_lists, both.n_lists)).dense, valid.dense)


def test_refit_uses_validated_epochs(synthetic: tuple[ListwiseData, ...], tmp_path: Path) -> None:
    train, valid, test = synthetic
    cfg = TorchTrainSettings(max_epochs=12, patience=3, lists_per_batch=16, learning_rate=3e-3)
    ens = DASALCEnsembleRanker(n_members=2, refit=True, train=cfg, threads=1).fit(train, valid)
    for member in ens.info_["members"]:
        assert member["epochs"] == member["best_epoch"] == member["validated"]["best_epoch"]
        assert member["train_lists"] == train.n_lists + valid.n_lists
    loaded = load_ranker(Path(ens.save(tmp_path / "ens")).parent)
    np.testing.assert_allclose(loaded.score(test), ens.score(test), rtol=1e-5, atol=1e-6)
    assert loaded.get_params()["refit"] is True
