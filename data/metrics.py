"""Ranking metrics shared by every evaluation (world stats, retrieval, rankers, experiments)."""

from __future__ import annotations

import numpy as np


def dcg(gains: np.ndarray, k: int, *, linear: bool = False) -> np.ndarray:
    """DCG@k per row of grades (N, L) in ranked order; gain 2^g - 1 (``linear``: g itself), and g <= 0 (or
    padding < 0) adds 0."""
    top = gains[:, :k]
    g = np.where(top > 0, top if linear else 2.0 ** np.maximum(top, 0) - 1.0, 0.0)
    discounts = 1.0 / np.log2(np.arange(2, g.shape[1] + 2))
    return g @ discounts


def ndcg(ranked_grades: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per row: grades (N, L) in the order a system ranked them; rows with no gain score 0."""
    ideal = dcg(-np.sort(-ranked_grades, axis=1), k)
    actual = dcg(ranked_grades, k)
    return np.divide(actual, ideal, out=np.zeros_like(actual), where=ideal > 0)


def order_by(scores: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Reorder each row of ``values`` by descending ``scores`` (stable: ties keep their original order)."""
    idx = np.argsort(-scores, axis=1, kind="stable")
    return np.take_along_axis(values, idx, axis=1)


def entropy_bits(counts: np.ndarray) -> float:
    """Shannon entropy, in bits, of a distribution given by counts."""
    total = counts.sum()
    if total <= 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def mrr(ranked_grades: np.ndarray, k: int | None = None, threshold: float = 0.0) -> np.ndarray:
    """Reciprocal rank of the first item with grade > ``threshold`` per row (N, L) in ranked order.

    Rows without such an item (within the top ``k``, when given) score 0; padding should be negative.
    """
    top = ranked_grades if k is None else ranked_grades[:, :k]
    hit = top > threshold
    first = np.argmax(hit, axis=1)
    return np.where(hit.any(axis=1), 1.0 / (first + 1.0), 0.0)


def ndcg_against(ranked_grades: np.ndarray, ideal_grades: np.ndarray, k: int) -> np.ndarray:
    """NDCG@k per row when the ideal ranking includes items the system did not return (retrieval).

    ``ranked_grades`` (N, L): grades in the system's order; ``ideal_grades`` (N, M): every judged grade of
    the row's query, in any order (padding < 0). Rows with no gain score 0.
    """
    ideal = dcg(-np.sort(-ideal_grades, axis=1), k)
    actual = dcg(ranked_grades, k)
    return np.divide(actual, ideal, out=np.zeros_like(actual), where=ideal > 0)


def recall(ranked_relevant: np.ndarray, n_relevant: np.ndarray, k: int) -> np.ndarray:
    """Recall@k per row: ``ranked_relevant`` (N, L) is 1 where the item at that rank is relevant (0 for
    padding), ``n_relevant`` (N,) how many relevant items the row has; rows with none score 0."""
    found = (ranked_relevant[:, :k] > 0).sum(axis=1).astype(float)
    total = np.asarray(n_relevant, dtype=float)
    return np.divide(found, total, out=np.zeros_like(found), where=total > 0)
