"""Score a ranker on ``ListwiseData``: NDCG@k and MRR per list, averaged overall and by list slice, and the
policy-aware NDCG@k of the clicks' weights (``pa_ndcg@k``), the one of them that estimates what serving the
ranker's order would get rather than how closely it repeats the logged page.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.metrics import dcg, mrr, ndcg, order_by
from ranking.dataset import ListwiseData
from ranking.errors import InputError

DEFAULT_KS = (1, 5, 10)


def per_list_metrics(
    data: ListwiseData, scores: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict[str, np.ndarray]:
    """{"ndcg@k": (Q,), ..., "mrr": (Q,)}: the metrics of every list under ``scores`` (N,)."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (data.n_rows,):
        raise InputError(f"scores must have shape ({data.n_rows},), got {scores.shape}")
    if not np.isfinite(scores).all():
        raise InputError("scores must be finite")
    index, mask = data.padded_index(np.arange(data.n_lists))  # (Q, L)
    # Padding ranks last (score -inf) and carries a negative grade, which adds no gain.
    padded_scores = np.where(mask, scores[index], -np.inf)
    padded_grades = np.where(mask, data.labels[index], -1.0)
    ranked = order_by(padded_scores, padded_grades)
    out = {f"ndcg@{k}": ndcg(ranked, k) for k in ks}
    out["mrr"] = mrr(ranked)
    return out


def weighted_dcg(
    data: ListwiseData, scores: np.ndarray, ks: Sequence[int]
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{k: (DCG@k, ideal DCG@k) per list} of the linear gains label x weight, in the order of ``scores``.

    With the policy-aware weights of candidate lists (``ranking.feedback``), a list's DCG estimates the
    examination-discounted clicks the ranker's order would earn on that request (Oosterhuis and de Rijke,
    SIGIR 2020): a click on a block the policy rarely shows counts for the clicks it stands for, and an
    unshown candidate (label 0) earns nothing and, ranked above a click, pushes it down. Linear gains: a
    weight is a count of clicks, and 2^w would let one weight rule the list. The lists are ordered once for
    every k.
    """
    index, mask = data.padded_index(np.arange(data.n_lists))
    padded_scores = np.where(mask, np.asarray(scores, dtype=np.float64)[index], -np.inf)
    gains = np.where(mask, data.labels[index].astype(np.float64) * data.weights[index], 0.0)
    ranked, ideal = order_by(padded_scores, gains), -np.sort(-gains, axis=1)
    return {k: (dcg(ranked, k, linear=True), dcg(ideal, k, linear=True)) for k in ks}


def policy_aware_ndcg(actual: np.ndarray, ideal: np.ndarray) -> float:
    """Sum of DCG over sum of ideal DCG: normalised over the lists together (self-normalised), since one
    list's own ratio is 1 or 0 whenever it holds a single click, whatever its weight."""
    total = float(ideal.sum())
    return float(actual.sum()) / total if total > 0 else 0.0


def evaluate_scores(
    data: ListwiseData, scores: np.ndarray, ks: Sequence[int] = DEFAULT_KS, slices: Sequence[str] = ()
) -> dict:
    """Mean metrics over lists, plus ``{"by_<slice>": {value: {metrics..., "lists": n}}}`` per slice name.

    Lists without any positive label score 0 under every metric and are kept (as LightGBM and the LETOR
    tools do), so numbers are comparable with theirs.
    """
    per_list = per_list_metrics(data, scores, ks)
    weighted = weighted_dcg(data, scores, ks)
    result: dict = {name: round(float(v.mean()), 6) for name, v in per_list.items()}
    for k, (actual, ideal) in weighted.items():
        result[f"pa_ndcg@{k}"] = round(policy_aware_ndcg(actual, ideal), 6)
    for name in slices:
        if name not in data.list_meta:
            raise InputError(f"no list_meta '{name}' to slice by; have {sorted(data.list_meta)}")
        meta = data.list_meta[name]
        groups: dict = {}
        for value in sorted({str(v) for v in meta}):
            sel = np.asarray([str(v) == value for v in meta])
            groups[value] = {m: round(float(v[sel].mean()), 6) for m, v in per_list.items()}
            for k, (actual, ideal) in weighted.items():
                groups[value][f"pa_ndcg@{k}"] = round(policy_aware_ndcg(actual[sel], ideal[sel]), 6)
            groups[value]["lists"] = int(sel.sum())
        result[f"by_{name}"] = groups
    return result
