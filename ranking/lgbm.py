"""LightGBM lambdarank (LambdaMART): the gradient-boosted tree baseline; saved as LightGBM's text model."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Self

import numpy as np

from ranking.base import Ranker
from ranking.dataset import ListwiseData
from ranking.errors import InputError, ParameterError

MODEL_FILE = "model.txt"


class LightGBMRanker(Ranker):
    """LambdaMART on dense features, categorical ids (as LightGBM categoricals) and vectors (as columns).

    Per-row ``weights`` scale each row's lambda gradients (LightGBM's ranking objective multiplies them in),
    which is how inverse-propensity weights reach the trees. Labels must be integer grades (or clicks).
    """

    kind = "lgbm"

    def __init__(
        self,
        n_estimators: int = 300,
        learning_rate: float = 0.05,
        num_leaves: int = 31,
        min_data_in_leaf: int = 20,
        early_stopping_rounds: int | None = 50,
        eval_k: int = 10,
        seed: int = 0,
        threads: int = 1,
    ) -> None:
        self.n_estimators = n_estimators
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.early_stopping_rounds = early_stopping_rounds
        self.eval_k = eval_k
        self.seed = seed
        self.threads = threads

    def get_params(self) -> dict[str, Any]:
        return {
            "n_estimators": self.n_estimators,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "early_stopping_rounds": self.early_stopping_rounds,
            "eval_k": self.eval_k,
            "seed": self.seed,
            "threads": self.threads,
        }

    def _booster_params(self) -> dict[str, Any]:
        return {
            "objective": "lambdarank",
            "metric": "ndcg",
            "eval_at": [self.eval_k],
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "num_threads": self.threads,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "verbosity": -1,
        }

    def fit(self, train: ListwiseData, valid: ListwiseData | None = None, warm_start: bool = False) -> Self:
        import lightgbm as lgb

        if self.n_estimators < 1 or self.num_leaves < 2 or self.learning_rate <= 0:
            raise ParameterError(
                "need n_estimators >= 1, num_leaves >= 2 and learning_rate > 0, got "
                f"{self.n_estimators}, {self.num_leaves}, {self.learning_rate}"
            )
        if warm_start:
            self.check_fitted("warm_start")
            self.schema_.check(train)
        _check_integer_labels(train)
        train_set = self._dataset(train)
        valid_sets, callbacks = [], []
        if valid is not None:
            train.schema.check(valid)
            _check_integer_labels(valid)
            valid_sets = [self._dataset(valid, reference=train_set)]
            if self.early_stopping_rounds:
                callbacks.append(lgb.early_stopping(self.early_stopping_rounds, verbose=False))
        booster = lgb.train(
            self._booster_params(),
            train_set,
            num_boost_round=self.n_estimators,
            valid_sets=valid_sets,
            callbacks=callbacks,
            init_model=self.booster_ if warm_start else None,
        )
        self.booster_ = booster
        self.schema_ = train.schema
        best = booster.best_iteration or booster.current_iteration()
        valid_score = booster.best_score.get("valid_0", {}).get(f"ndcg@{self.eval_k}") if valid else None
        self.info_ = {
            "trees": booster.current_iteration(),
            "best_iteration": best,
            f"valid_ndcg@{self.eval_k}": valid_score,
            "warm_start": warm_start,
        }
        return self

    def _dataset(self, data: ListwiseData, reference: Any = None) -> Any:
        import lightgbm as lgb

        c = data.categorical.shape[1]
        return lgb.Dataset(
            _matrix(data),
            label=data.labels,
            weight=data.weights,
            group=data.list_sizes,
            feature_name=_column_names(data),
            categorical_feature=list(range(data.dense.shape[1], data.dense.shape[1] + c)) or "auto",
            reference=reference,
            free_raw_data=True,
        )

    def score(self, data: ListwiseData) -> np.ndarray:
        self.check_fitted()
        self.schema_.check(data)
        best = self.booster_.best_iteration or None
        return np.asarray(self.booster_.predict(_matrix(data), num_iteration=best, num_threads=self.threads))

    def _save_weights(self, folder: Path) -> list[str]:
        self.booster_.save_model(str(folder / MODEL_FILE), num_iteration=self.booster_.best_iteration or None)
        return [MODEL_FILE]

    @classmethod
    def _load_weights(cls, folder: Path, manifest: dict[str, Any]) -> Self:
        import lightgbm as lgb

        ranker = cls(**manifest["params"])
        ranker.booster_ = lgb.Booster(model_file=str(folder / MODEL_FILE))
        return ranker


def _matrix(data: ListwiseData) -> np.ndarray:
    """Dense features, then categorical ids, then vectors (sorted by name): the column order of the schema."""
    parts = [data.dense, data.categorical.astype(np.float32)]
    parts += [data.vectors[k] for k in sorted(data.vectors)]
    return np.concatenate(parts, axis=1)


def _column_names(data: ListwiseData) -> list[str]:
    names = [*data.feature_names, *data.categorical_names]
    for k in sorted(data.vectors):
        names += [f"{k}_{i}" for i in range(data.vectors[k].shape[1])]
    # LightGBM refuses some characters in feature names; keep names readable but safe.
    return ["".join(ch if ch.isalnum() or ch == "_" else "_" for ch in n) for n in names]


def _check_integer_labels(data: ListwiseData) -> None:
    if not np.array_equal(data.labels, np.round(data.labels)):
        raise InputError("LightGBM lambdarank needs integer labels (grades or clicks)")
