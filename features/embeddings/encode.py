"""Turn histories into M3 inputs and user vectors, in batches, without gradients."""

from __future__ import annotations

import numpy as np
import torch

from features.embeddings.model import M3, MeanEncoder
from features.embeddings.sequences import Sequences, gap_bucket


def model_inputs(
    seqs: Sequences, users: np.ndarray, ends: np.ndarray, as_of_ms: np.ndarray, length: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(items (n, L), gaps (n, L), ctx_gap (n,)) for the histories ending before ``ends``, as of ``as_of_ms``.

    The context gap is the time from the last history item to the moment the vector is for (a request
    time, or the refresh time for stored vectors); same-page clicks give a gap of 0.
    """
    items, gaps, last = seqs.histories(users, ends, length)
    last_ts = seqs.ts_ms[np.maximum(last, 0)]
    ctx = np.where(last >= 0, gap_bucket(np.maximum(np.asarray(as_of_ms) - last_ts, 0)), 1)
    return torch.from_numpy(items), torch.from_numpy(gaps), torch.from_numpy(ctx)


@torch.no_grad()
def user_vectors(
    model: M3 | MeanEncoder,
    seqs: Sequences,
    users: np.ndarray,
    ends: np.ndarray,
    as_of_ms: np.ndarray,
    length: int,
    *,
    batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors (n, D) float32, gates (n, 3)) for each (user, history end, as-of time); histories must be
    non-empty."""
    was_training = model.training
    model.eval()
    vecs, gates = [], []
    for lo in range(0, len(users), batch):
        sl = slice(lo, lo + batch)
        u, g = model(*model_inputs(seqs, users[sl], ends[sl], as_of_ms[sl], length))
        vecs.append(u.numpy())
        gates.append(g.numpy())
    model.train(was_training)
    if not vecs:
        return np.zeros((0, model.dim), np.float32), np.zeros((0, 3), np.float32)
    return np.concatenate(vecs), np.concatenate(gates)


def latest_user_vectors(
    model: M3, seqs: Sequences, users: np.ndarray, as_of_ms: int, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors of ``users`` (indices into ``seqs.user_ids``) from their whole history, as of one instant."""
    users = np.asarray(users, dtype=np.int64)
    ends = seqs.offsets[users + 1]
    return user_vectors(model, seqs, users, ends, np.full(len(users), as_of_ms, np.int64), length)
