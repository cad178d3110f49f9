"""One conformance test for every ranker: it learns, round-trips, clones, is deterministic, refuses misuse."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ranking.base import Ranker
from ranking.config import RankingSettings, TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.ensemble import DASALCEnsembleRanker
from ranking.errors import InputError, NotFittedError, ParameterError
from ranking.evaluate import evaluate_scores
from ranking.lgbm import LightGBMRanker
from ranking.models import MODELS, load_ranker, make_ranker, params_from_settings
from ranking.torch_rankers import DASALCRanker, DCNRanker, LinearRanker, MLPRanker

FAST = TorchTrainSettings(max_epochs=40, patience=8, lists_per_batch=16, learning_rate=3e-3, seed=3)

# Small configurations of every model, so the whole module runs in seconds on two cores.
FACTORIES: dict[str, Callable[[], Ranker]] = {
    "linear": lambda: LinearRanker(train=FAST),
    "mlp": lambda: MLPRanker(hidden=(32, 16), train=FAST),
    "dcn": lambda: DCNRanker(cross_layers=2, rank=8, hidden=(32,), structure="parallel", train=FAST),
    "dcn-stacked-full": lambda: DCNRanker(
        cross_layers=2, rank=None, hidden=(32,), structure="stacked", train=FAST
    ),
    "dasalc": lambda: DASALCRanker(hidden=(32, 16), heads=2, noise_std=0.1, train=FAST),
    "dasalc-ens": lambda: DASALCEnsembleRanker(n_members=2, hidden=(16,), heads=2, noise_std=0.1, train=FAST),
    "lgbm": lambda: LightGBMRanker(n_estimators=60, num_leaves=7, min_data_in_leaf=5, seed=3),
}


def test_every_catalogue_model_is_covered() -> None:
    assert set(MODELS) <= set(FACTORIES)


@pytest.mark.parametrize("name", MODELS)
def test_settings_build_every_model(name: str) -> None:
    settings = RankingSettings(threads=1)
    assert set(params_from_settings(settings)) == set(MODELS)
    ranker = make_ranker(name, settings, seed=7)
    config = ranker.config()
    assert type(ranker) is MODELS[name] and ranker.kind == config.type == name
    assert isinstance(config, type(ranker).config_class) and config.threads == 1
    params = ranker.get_params()  # the seed reaches LightGBM's own seed, or the torch models' training
    assert params.get("seed", params.get("train", {}).get("seed")) == 7


@pytest.fixture(scope="module")
def fitted(synthetic: tuple[ListwiseData, ...]) -> dict[str, Ranker]:
    train, valid, _ = synthetic
    return {name: make().fit(train, valid) for name, make in FACTORIES.items()}


def random_ndcg(data: ListwiseData, k: int, draws: int = 20) -> float:
    rng = np.random.default_rng(0)
    return float(np.mean([evaluate_scores(data, rng.random(data.n_rows))[f"ndcg@{k}"] for _ in range(draws)]))


@pytest.mark.parametrize("name", FACTORIES)
def test_learns_the_signal(name: str, fitted: dict[str, Ranker], synthetic: tuple[ListwiseData, ...]) -> None:
    test = synthetic[2]
    result = evaluate_scores(test, fitted[name].score(test), slices=["bucket"])
    assert result["ndcg@5"] > random_ndcg(test, 5) + 0.15, result
    assert set(result["by_bucket"]) == {"low", "high"}


@pytest.mark.parametrize("name", FACTORIES)
def test_save_load_round_trip(
    name: str, fitted: dict[str, Ranker], synthetic: tuple[ListwiseData, ...], tmp_path: Path
) -> None:
    ranker, test = fitted[name], synthetic[2]
    ranker.save(tmp_path / "m", metadata={"metrics": {"note": "test"}})
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = load_ranker(tmp_path / "m")
    assert type(loaded) is type(ranker) and loaded.get_params() == ranker.get_params()
    assert torch.allclose(
        torch.from_numpy(loaded.score(test)), torch.from_numpy(ranker.score(test)), atol=1e-6
    )


@pytest.mark.parametrize("name", FACTORIES)
def test_clone_is_an_equal_unfitted_copy(name: str, fitted: dict[str, Ranker]) -> None:
    ranker = fitted[name]
    params = ranker.get_params()
    json.dumps(params)  # the manifest's form
    clone = type(ranker)(**params)
    assert not clone.is_fitted() and clone.get_params() == params and clone.config() == ranker.config()
    assert repr(clone) == repr(ranker)


@pytest.mark.parametrize("name", FACTORIES)
def test_a_loaded_model_scores_alike_on_the_threads_a_worker_owns(
    name: str, fitted: dict[str, Ranker], synthetic: tuple[ListwiseData, ...], tmp_path: Path
) -> None:
    # Serving sets the worker's threads on a loaded copy (serving.ranker.ServedModel.from_registry).
    ranker, test = fitted[name], synthetic[2]
    ranker.save(tmp_path / "m")
    loaded = load_ranker(tmp_path / "m").set_params(threads=1)
    assert loaded.get_params() == {**ranker.get_params(), "threads": 1}
    for member in getattr(loaded, "members_", []):
        assert member.threads == 1
    np.testing.assert_allclose(loaded.score(test), ranker.score(test), atol=1e-6)
    with pytest.raises(ParameterError, match="threads"):
        loaded.set_params(threads=0)
    with pytest.raises(ParameterError, match="no parameters"):
        loaded.set_params(thread=1)
    assert loaded.threads == 1  # a refused change leaves the model as it was


@pytest.mark.parametrize("name", FACTORIES)
def test_same_seed_same_scores(
    name: str, fitted: dict[str, Ranker], synthetic: tuple[ListwiseData, ...]
) -> None:
    train, valid, test = synthetic
    # Built from the fitted model's parameters: they carry everything training depends on.
    again = type(fitted[name])(**fitted[name].get_params()).fit(train, valid)
    assert torch.allclose(torch.from_numpy(again.score(test)), torch.from_numpy(fitted[name].score(test)))


@pytest.mark.parametrize("name", FACTORIES)
def test_refuses_to_score_before_fit(name: str, synthetic: tuple[ListwiseData, ...], tmp_path: Path) -> None:
    ranker = FACTORIES[name]()
    with pytest.raises(NotFittedError, match="not fitted"):
        ranker.score(synthetic[2])
    with pytest.raises(NotFittedError):
        ranker.save(tmp_path)


@pytest.mark.parametrize("name", ["linear", "dasalc", "lgbm"])
def test_refuses_other_features(name: str, fitted: dict[str, Ranker], lists_factory: Callable) -> None:
    other = lists_factory(3, seed=9)
    renamed = ListwiseData(
        dense=other.dense,
        labels=other.labels,
        offsets=other.offsets,
        feature_names=("x1", "x0", "x2", "x3", "x4", "x5"),
        categorical=other.categorical,
        cardinalities=other.cardinalities,
        categorical_names=other.categorical_names,
        vectors=other.vectors,
    )
    with pytest.raises(InputError, match="order differs"):
        fitted[name].score(renamed)


@pytest.mark.parametrize("name", ["dcn", "dasalc-ens", "lgbm"])
def test_warm_start_continues(
    name: str, fitted: dict[str, Ranker], synthetic: tuple[ListwiseData, ...]
) -> None:
    train, valid, test = synthetic
    ranker = FACTORIES[name]().fit(train, valid)
    before = ranker.score(test)
    ranker.fit(valid, train, warm_start=True)  # new data; the old training set now validates
    assert ranker.info_["warm_start"] is True
    assert not np.allclose(before, ranker.score(test))
    assert evaluate_scores(test, ranker.score(test))["ndcg@5"] > random_ndcg(test, 5) + 0.15


def test_warm_start_needs_a_fitted_model(synthetic: tuple[ListwiseData, ...]) -> None:
    with pytest.raises(NotFittedError):
        FACTORIES["mlp"]().fit(synthetic[0], warm_start=True)


def test_invalid_parameters_are_named(synthetic: tuple[ListwiseData, ...]) -> None:
    with pytest.raises(ParameterError, match="structure"):
        DCNRanker(structure="sideways", train=FAST).fit(synthetic[0])  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="heads"):
        DASALCRanker(hidden=(30,), heads=4, train=FAST).fit(synthetic[0])


def test_lightgbm_caps_the_row_weights_it_trains_on(synthetic: tuple[ListwiseData, ...]) -> None:
    """LambdaMART keeps a cap of its own on inverse-propensity weights (the torch rankers take them whole)."""
    from dataclasses import replace

    train, valid, test = synthetic
    heavy = np.random.default_rng(0).pareto(1.0, train.n_rows).astype(np.float32) + 1  # long-tailed, >= 1
    assert heavy.max() > 20
    heavy_train = replace(train, weights=heavy)
    params = {"n_estimators": 30, "num_leaves": 7, "min_data_in_leaf": 5, "seed": 3, "threads": 1}
    capped = LightGBMRanker(**params, max_weight=4.0).fit(heavy_train, valid)
    by_hand = LightGBMRanker(**params, max_weight=None).fit(
        replace(train, weights=np.minimum(heavy, 4.0)), valid
    )
    uncapped = LightGBMRanker(**params, max_weight=None).fit(heavy_train, valid)
    np.testing.assert_array_equal(capped.score(test), by_hand.score(test))
    assert not np.array_equal(capped.score(test), uncapped.score(test))
    assert LightGBMRanker().get_params()["max_weight"] == 20.0


@pytest.mark.parametrize("stop_on", ["ndcg", "pa_ndcg", "loss"])
def test_each_stopping_rule_reports_its_metric(stop_on: str, synthetic: tuple[ListwiseData, ...]) -> None:
    train, valid, _ = synthetic
    cfg = FAST.model_copy(update={"stop_on": stop_on, "max_epochs": 6, "patience": 2})
    ranker = LinearRanker(train=cfg).fit(train, valid)
    info = ranker.info_
    name = "valid_loss" if stop_on == "loss" else f"valid_{stop_on}@{cfg.eval_k}"
    assert info[name] is not None and 1 <= info["best_epoch"] <= info["epochs"] <= 6
    if stop_on != "loss":  # the restored weights are the best epoch's: the same value, measured again
        measured = evaluate_scores(valid, ranker.score(valid), ks=(cfg.eval_k,))[f"{stop_on}@{cfg.eval_k}"]
        assert info[name] == pytest.approx(measured, abs=1e-5)


def test_a_weight_average_is_what_early_stopping_validates_and_keeps(
    synthetic: tuple[ListwiseData, ...],
) -> None:
    train, valid, _ = synthetic
    cfg = FAST.model_copy(update={"stop_on": "pa_ndcg", "max_epochs": 4, "patience": 4})

    def fit(weight_ema: float | None) -> DCNRanker:
        train_cfg = cfg.model_copy(update={"weight_ema": weight_ema})
        return DCNRanker(cross_layers=2, rank=8, hidden=(32,), train=train_cfg).fit(train, valid)

    last = fit(None)
    # An average that forgets at once is the last step's weights (batch-norm statistics included)...
    assert fit(1e-9).score(valid) == pytest.approx(last.score(valid), abs=1e-6)
    # ...a slower one other weights, and the value early stopping reports is the kept model's.
    averaged = fit(0.9)
    assert not np.allclose(averaged.score(valid), last.score(valid), atol=1e-3)
    measured = evaluate_scores(valid, averaged.score(valid), ks=(10,))["pa_ndcg@10"]
    assert averaged.info_["valid_pa_ndcg@10"] == pytest.approx(measured, abs=1e-5)


def test_the_policy_aware_stopping_value_adds_up_over_shards(synthetic: tuple[ListwiseData, ...]) -> None:
    """Ranks of a data-parallel fit each sum (DCG, ideal DCG) over their validation lists; the ratio of the
    summed pairs must be the value of all the lists in one process, not a mean of the ranks' ratios."""
    from ranking.nn.train import TensorLists, validation_totals

    train, valid, _ = synthetic
    cfg = FAST.model_copy(update={"stop_on": "pa_ndcg", "max_epochs": 2})
    ranker = LinearRanker(train=cfg).fit(train, valid)
    whole = validation_totals(ranker.net_, TensorLists(valid), cfg)
    cut = valid.n_lists // 3  # uneven shards: a mean of ratios would differ
    parts = [
        validation_totals(ranker.net_, TensorLists(valid.subset(np.arange(a, b))), cfg)
        for a, b in ((0, cut), (cut, valid.n_lists))
    ]
    assert sum(p[0] for p in parts) == pytest.approx(whole[0])
    assert sum(p[1] for p in parts) == pytest.approx(whole[1])
    measured = evaluate_scores(valid, ranker.score(valid), ks=(10,))
    assert whole[0] / whole[1] == pytest.approx(measured["pa_ndcg@10"], abs=1e-5)
