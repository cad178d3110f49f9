"""M3 data-parallel on the engine: ``torch.distributed`` ranks (gloo on CPU), one per host on all of its
workers' cores, or one per Dask worker (``EmbeddingSettings.engine_ranks``).

In: the training and validation sequences, the validation targets, the settings and a cluster client. Out:
the trained model, its report and what the engine did. Rank placement is ``data.torch_ranks``'.

Every rank builds the same model from the same seed and walks the same seeded order of training events,
drawing the same negatives; it takes every ``world``-th event of each batch. Its loss is its events' share
of the batch's mean, so the sum of the ranks' gradients is the gradient one process computes for the batch:

- the dense weights: one flat ``all_reduce``;
- a sparse item table (``sparse_items``): each rank's touched rows and their gradients are gathered
  (``all_gather`` of tensors padded to the longest) and summed by coalescing, so only the rows a step used
  travel, not the 241,920-row table of the large world.

Each rank then steps its own optimisers: the same gradients on the same weights keep the copies equal. The
validation targets are split between the ranks; their hits are summed, so every rank sees the same recall
and stops at the same epoch (running out of time is agreed the same way). What differs from one process:
dropout draws other masks on ranks other than 0, and float sums run in another order. With one rank it is
one process's fit on the rank's threads, with nothing summed.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

from data.torch_ranks import (
    RanksFailed,
    agreed_weights,
    all_sum,
    flat_gradients,
    load_numpy_state,
    rank_slots,
    replica,
    run_ranks,
    set_gradients,
    to_worker,
)
from features.embeddings.config import EmbeddingSettings
from features.embeddings.errors import EmbeddingError
from features.embeddings.evaluate import evaluate
from features.embeddings.sequences import Sequences
from features.embeddings.train import (
    Encoder,
    TrainReport,
    build_model,
    m3_scorer,
    run_epochs,
    training_events,
)

if TYPE_CHECKING:
    from distributed import Client


def fit_on_engine(
    client: Client,
    train: Sequences,
    valid: Sequences,
    valid_targets: np.ndarray,
    settings: EmbeddingSettings,
) -> tuple[Encoder, TrainReport, dict[str, Any]]:
    """``fit`` with the cluster's ranks (``settings.engine_ranks``); returns the model, its report and the
    engine run."""
    training_events(train)  # before a cluster is asked: no data, no ranks
    slots = rank_slots(client, settings.engine_ranks)
    if not slots:
        raise EmbeddingError("the Dask cluster has no workers to train on")
    workers = [slot.worker for slot in slots]
    args = [
        (
            to_worker(client, train, worker),
            to_worker(client, valid, worker),
            valid_targets[rank :: len(workers)],
            settings,
        )
        for rank, worker in enumerate(workers)
    ]
    try:
        results = run_ranks(client, slots, train_rank, args)
        weights = agreed_weights(results)
    except RanksFailed as exc:
        raise EmbeddingError(f"M3 data-parallel training on the engine failed; {exc}") from None
    model = build_model(train.n_items, settings)
    load_numpy_state(model, weights)
    model.eval()
    run = {
        "backend": "gloo",
        "placement": settings.engine_ranks,
        "ranks": len(results),
        "workers": workers,
        "threads": [r["threads"] for r in results],  # torch's, as each rank ran
        "pids": [r["pid"] for r in results],
        "sum_gradients_seconds": [r["sync_seconds"] for r in results],  # all_reduce and all_gathers
    }
    return model, TrainReport(**results[0]["report"]), run


def train_rank(
    train: Sequences, valid: Sequences, targets: np.ndarray, settings: EmbeddingSettings
) -> dict[str, Any]:
    """This process's rank of the group: train, keep the best epoch, report (weights from rank 0 only)."""
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(settings.seed)  # the same initial weights on every rank
    model = build_model(train.n_items, settings)
    if rank:  # dropout: each rank draws for its own rows; rank 0 goes on with one process's stream
        torch.manual_seed(settings.seed + rank)
    sync = _GradientSum(model) if world > 1 else None  # a lone rank's sum would copy every gradient a step
    report = run_epochs(
        model,
        train,
        settings,
        lambda m: _recall(m, valid, targets, settings),
        rank=rank,
        world=world,
        sync=sync,
    )
    return {
        "rank": rank,
        "pid": os.getpid(),
        "threads": torch.get_num_threads(),
        **replica(model.state_dict()),
        "report": report.__dict__,
        "sync_seconds": round(sync.seconds, 2) if sync is not None else 0.0,
    }


class _GradientSum:
    """Replaces each rank's gradients by their sum over the ranks (dense: all_reduce; sparse: gathered).

    The dense sum carries one more value, each rank's ``out_of_time``: ``stop`` is then the same on every
    rank after the step."""

    def __init__(self, model: Encoder) -> None:
        table = model.items.weight
        self.sparse = table if model.items.sparse else None
        self.dense = [p for p in model.parameters() if p is not self.sparse]
        self.seconds = 0.0
        self.out_of_time = False
        self.stop = False

    def __call__(self, model: Encoder) -> None:
        began = time.perf_counter()
        flat = flat_gradients(self.dense, float(self.out_of_time))
        dist.all_reduce(flat)
        self.stop = bool(flat[-1] > 0)
        set_gradients(self.dense, flat[:-1])
        if self.sparse is not None:
            self.sparse.grad = _gathered_sum(self.sparse)
        self.seconds += time.perf_counter() - began


def _gathered_sum(table: torch.nn.Parameter) -> torch.Tensor:
    """The ranks' sparse gradients of ``table`` summed: every rank's rows gathered, then coalesced."""
    dim = table.shape[1]
    if table.grad is None:
        rows, values = torch.zeros(0, dtype=torch.long), torch.zeros(0, dim)
    else:
        grad = table.grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
    world = dist.get_world_size()
    counts = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
    dist.all_gather(counts, torch.tensor([len(rows)]))
    longest = max(int(c) for c in counts)
    padded_rows = torch.zeros(longest, dtype=torch.long)
    padded_rows[: len(rows)] = rows
    padded_values = torch.zeros(longest, dim)
    padded_values[: len(rows)] = values
    all_rows = [torch.zeros(longest, dtype=torch.long) for _ in range(world)]
    all_values = [torch.zeros(longest, dim) for _ in range(world)]
    dist.all_gather(all_rows, padded_rows)
    dist.all_gather(all_values, padded_values)
    keep = [slice(0, int(c)) for c in counts]
    indices = torch.cat([r[k] for r, k in zip(all_rows, keep, strict=True)])[None, :]
    stacked = torch.cat([v[k] for v, k in zip(all_values, keep, strict=True)])
    return torch.sparse_coo_tensor(indices, stacked, table.shape, check_invariants=False).coalesce()


def _recall(model: Encoder, valid: Sequences, targets: np.ndarray, settings: EmbeddingSettings) -> float:
    """recall@k over every rank's targets: each scores its own, the hits are summed."""
    k = f"recall@{settings.eval_k}"
    mine = evaluate(m3_scorer(model, valid, settings.max_history), valid, targets, settings.eval_k)
    # Whole hits: the same total gives the same float however the targets were split (ties decide epochs).
    hits, events = all_sum([round(mine[k] * mine["events"]), mine["events"]])
    return hits / events if events else 0.0
