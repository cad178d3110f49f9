"""Baselines scored on the same held-out clicks as M3, over the same item vectors (M3's trained, tied item
embedding table), so only the user representation differs:

- ``popular``: consumed counts before the evaluated period; the same list for everyone.
- ``average``: the mean vector of every block the user consumed before the click.
- ``multi``: K window vectors per user (e.g. the last day, the last 7 days, everything), each the mean of
  the window's blocks, unit-normalized; a block scores its best dot product over the non-empty windows.
  This is the multi-embedding approach M3 replaces, stored as K vectors per user.
"""

from __future__ import annotations

import numpy as np
import torch

from data.days import DAY_MS
from features.embeddings.evaluate import Scorer
from features.embeddings.sequences import USER_SHIFT, Sequences


def popular_scorer(counts: np.ndarray) -> Scorer:
    """``counts`` (n_items,) consumed counts, index 0 = padding."""
    row = torch.from_numpy(np.asarray(counts[1:], dtype=np.float32))  # (B,)

    def score(idx: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        return row.expand(len(idx), -1)  # (n, B)

    return score


def _prefix_sums(seqs: Sequences, item_vecs: np.ndarray) -> np.ndarray:
    """(N + 1, D) running sums of consumed-item vectors over the flat event order."""
    vecs = item_vecs[seqs.item - 1].astype(np.float64)  # (N, D)
    out = np.zeros((seqs.n_events + 1, item_vecs.shape[1]))
    np.cumsum(vecs, axis=0, out=out[1:])
    return out


def average_scorer(seqs: Sequences, item_vecs: np.ndarray) -> Scorer:
    """``item_vecs`` (B, D): block ``i``'s vector in row ``i``."""
    prefix = _prefix_sums(seqs, item_vecs)
    items_t = torch.from_numpy(item_vecs.astype(np.float32))

    def score(idx: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        start = seqs.offsets[seqs.user[idx]]
        mean = (prefix[ends] - prefix[start]) / np.maximum(ends - start, 1)[:, None]  # (n, D)
        return torch.from_numpy(mean.astype(np.float32)) @ items_t.T  # (n, B)

    return score


def window_vectors(
    seqs: Sequences,
    prefix: np.ndarray,
    users: np.ndarray,
    ends: np.ndarray,
    as_of_ms: np.ndarray,
    windows_days: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """(K, n, D) unit-normalized window means and (K, n) whether each window has any item.

    A window of ``w`` days holds the user's events in [as_of - w days, end); ``w = 0`` means all of them.
    """
    key = seqs.user * USER_SHIFT + seqs.ts_ms  # sorted, as events are sorted by (user, time)
    starts = seqs.offsets[users]
    vecs, present = [], []
    for w in windows_days:
        if w <= 0:
            lo = starts
        else:
            lo = np.searchsorted(key, users * USER_SHIFT + (as_of_ms - int(w * DAY_MS)), side="left")
            lo = np.clip(lo, starts, ends)
        mean = (prefix[ends] - prefix[lo]) / np.maximum(ends - lo, 1)[:, None]  # (n, D)
        norm = np.linalg.norm(mean, axis=1, keepdims=True)
        vecs.append(np.divide(mean, norm, out=np.zeros_like(mean), where=norm > 0))
        present.append(ends > lo)
    return np.stack(vecs), np.stack(present)


def multi_scorer(seqs: Sequences, item_vecs: np.ndarray, windows_days: tuple[float, ...]) -> Scorer:
    prefix = _prefix_sums(seqs, item_vecs)
    items_t = torch.from_numpy(item_vecs.astype(np.float32))

    def score(idx: np.ndarray, ends: np.ndarray) -> torch.Tensor:
        vecs, present = window_vectors(seqs, prefix, seqs.user[idx], ends, seqs.req_ms[idx], windows_days)
        per_window = torch.from_numpy(vecs.astype(np.float32)) @ items_t.T  # (K, n, B)
        mask = torch.from_numpy(~present)[:, :, None]  # (K, n, 1)
        return per_window.masked_fill(mask, float("-inf")).amax(0)  # (n, B)

    return score
