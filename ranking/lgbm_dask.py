"""LambdaMART on the engine: ``lightgbm.dask.DaskLGBMRanker`` over a Dask client (docs/scale.md).

The training lists are dealt out to partitions (a list's rows stay together: no list straddles two), one
or more per worker. Each partition's rows, labels, weights and list sizes are
scattered together onto one worker, round-robin, so every worker holds training data and joins the
LightGBM network (data-parallel tree learner). The fitted model is the plain ``lightgbm.Booster`` of the
first worker: it is saved, loaded and scored in process exactly as a single-process model.

``lightgbm.dask`` has no early stopping for rankers. With validation lists, all ``n_estimators`` trees are
trained and the best iteration is then chosen here by the rule of ``lightgbm.early_stopping``: the first
iteration with the best validation NDCG@k, stopping once ``early_stopping_rounds`` later ones did not beat
it. The metric is ``ranking.evaluate``'s NDCG@k (lists without a positive count 0, as LightGBM's own).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ranking.dataset import ListwiseData
from ranking.engine_lists import engine_workers, list_partitions
from ranking.evaluate import evaluate_scores

if TYPE_CHECKING:
    import lightgbm as lgb
    from distributed import Client

#: Partitions per worker: more than one lets a slow worker hand some over before training starts.
PARTS_PER_WORKER = 1


def list_rows(offsets: np.ndarray, lists: np.ndarray) -> np.ndarray:
    """The rows of ``lists``, list after list, each list's rows in order."""
    starts, sizes = offsets[lists], offsets[lists + 1] - offsets[lists]
    within = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.repeat(starts, sizes) + within


def placed(client: Client, pieces: list[np.ndarray], homes: list[str]) -> Any:
    """One dask array, chunk ``i`` being ``pieces[i]`` scattered to worker ``homes[i]``.

    Chunks made from an in-memory array (``da.from_array``) are tasks without inputs, which the scheduler
    may run all on one worker: LightGBM then trains on a network of one. A chunk that already lives on its
    worker stays there: ``lightgbm.dask`` groups the partitions by the worker that holds them.
    """
    import dask.array as da

    blocks = []
    for piece, home in zip(pieces, homes, strict=True):
        (future,) = client.scatter([piece], workers=[home], hash=False)
        blocks.append(da.from_delayed(future, shape=piece.shape, dtype=piece.dtype))
    return da.concatenate(blocks, axis=0)


def fit_on_engine(
    client: Client,
    params: dict[str, Any],
    n_estimators: int,
    train: ListwiseData,
    matrix: np.ndarray,
    fit_kwargs: dict[str, Any],
    init_model: lgb.Booster | None = None,
) -> tuple[lgb.Booster, dict[str, Any]]:
    """Train on the cluster; returns the booster and what the engine did (workers, partitions, rows)."""
    from lightgbm.dask import DaskLGBMRanker

    workers = engine_workers(client)
    # Dealt out, not cut in runs: LightGBM's distributed learner builds each feature's bins from one
    # machine's rows, which should see counts of every day.
    partitions = list_partitions(train.n_lists, len(workers) * PARTS_PER_WORKER)
    rows = [list_rows(train.offsets, lists) for lists in partitions]
    homes = [workers[i % len(workers)] for i in range(len(partitions))]
    X, y, w = (
        placed(client, [values[r] for r in rows], homes) for values in (matrix, train.labels, train.weights)
    )
    g = placed(client, [train.list_sizes[lists] for lists in partitions], homes)
    model = DaskLGBMRanker(client=client, n_estimators=n_estimators, **params)
    model.fit(X, y, sample_weight=w, group=g, init_model=init_model, **fit_kwargs)
    booster = model.booster_
    # LightGBM's own count of the machines that trained (a single-process fit has none).
    run = {
        "workers": len(workers),
        "partitions": len(partitions),
        "machines": booster.params.get("num_machines"),
    }
    return booster, run


def best_iteration(
    booster: lgb.Booster, valid: ListwiseData, matrix: np.ndarray, k: int, rounds: int | None
) -> tuple[int, float]:
    """(best iteration, its NDCG@k) on ``valid`` by ``lightgbm.early_stopping``'s rule (``rounds`` None or 0:
    the best over all trees)."""
    trees = booster.current_iteration()
    scores = np.zeros(valid.n_rows)
    best, best_score = 0, -np.inf
    for i in range(trees):
        scores += booster.predict(matrix, start_iteration=i, num_iteration=1, raw_score=True)
        value = evaluate_scores(valid, scores, ks=(k,))[f"ndcg@{k}"]
        if value > best_score:
            best, best_score = i + 1, value
        elif rounds and i + 1 - best >= rounds:
            break
    return best, float(best_score)
