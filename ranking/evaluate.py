"""Score a ranker on ``ListwiseData``: NDCG@k and MRR per list, averaged overall and by list slice."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data.metrics import mrr, ndcg, order_by
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


def evaluate_scores(
    data: ListwiseData, scores: np.ndarray, ks: Sequence[int] = DEFAULT_KS, slices: Sequence[str] = ()
) -> dict:
    """Mean metrics over lists, plus ``{"by_<slice>": {value: {metrics..., "lists": n}}}`` per slice name.

    Lists without any positive label score 0 under every metric and are kept (as LightGBM and the LETOR
    tools do), so numbers are comparable with theirs.
    """
    per_list = per_list_metrics(data, scores, ks)
    result: dict = {name: round(float(v.mean()), 6) for name, v in per_list.items()}
    for name in slices:
        if name not in data.list_meta:
            raise InputError(f"no list_meta '{name}' to slice by; have {sorted(data.list_meta)}")
        meta = data.list_meta[name]
        groups: dict = {}
        for value in sorted({str(v) for v in meta}):
            sel = np.asarray([str(v) == value for v in meta])
            groups[value] = {m: round(float(v[sel].mean()), 6) for m, v in per_list.items()}
            groups[value]["lists"] = int(sel.sum())
        result[f"by_{name}"] = groups
    return result
