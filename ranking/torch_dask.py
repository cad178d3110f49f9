"""The torch rankers on the engine: one ``torch.distributed`` rank per Dask worker (docs/scale.md).

Rank placement, the rendezvous and failure reports are ``data.torch_ranks``'; this module decides what
each rank trains on and checks what comes back:

- The signal lists (those with a positive label: the only ones the loss learns from) are dealt out to one
  shard per worker, whole lists only (``ranking.engine_lists``), and so are the validation lists. Each
  shard is scattered to its worker.
- Each rank runs ``ranking.nn.ddp.train_rank``. Rank 0 returns the weights as numpy arrays; every rank
  returns its pid, host and a digest of its weights, and the driver checks that the digests agree (the
  copies stayed identical).

The driver built the network (initial weights, input statistics over all training lists) exactly as one
process does, so the two paths differ only in how the steps are computed (``ranking.nn.ddp``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from data.torch_ranks import (
    RanksFailed,
    agreed_weights,
    rank_slots,
    replica,
    run_ranks,
    to_worker,
    worker_record,
)
from ranking.config import TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.engine_lists import list_partitions
from ranking.errors import InputError, RankingError

if TYPE_CHECKING:
    from distributed import Client

    from ranking.nn.nets import ScoringNet


def fit_on_engine(
    client: Client,
    net: ScoringNet,
    train: ListwiseData,
    valid: ListwiseData | None,
    cfg: TorchTrainSettings,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """Train ``net``'s copies on the cluster's workers; returns rank 0's weights (name -> array), its
    training report and what the engine did (ranks, their workers, hosts, pids and threads)."""
    sums = np.add.reduceat(train.labels, train.offsets[:-1])
    signal = np.flatnonzero(sums > 0)
    if signal.size == 0:
        raise InputError("no training list has a positive label: nothing to learn from")
    # One rank per worker: DCN-V2 trained 1.62x faster on 2 workers than on 1, where one process on both
    # cores gained 1.42x (docs/scale.md). Never a rank without lists.
    slots = rank_slots(client, "worker")[: signal.size]
    if not slots:
        raise InputError("the Dask cluster has no workers to train on")
    workers = [slot.worker for slot in slots]
    shards = [train.subset(signal[part]) for part in list_partitions(signal.size, len(workers))]
    valid_shards: list[ListwiseData | None] = [None] * len(workers)
    if valid is not None:
        for i, part in enumerate(list_partitions(valid.n_lists, len(workers))):
            valid_shards[i] = valid.subset(part)
    rank_args = [
        (net, to_worker(client, shards[rank], worker), to_worker(client, valid_shards[rank], worker), cfg)
        for rank, worker in enumerate(workers)
    ]
    try:
        results = run_ranks(client, slots, _train_rank, rank_args)
        weights = agreed_weights(results)
    except RanksFailed as exc:
        raise RankingError(f"torch.distributed training on the engine failed; {exc}") from None
    run = {
        "backend": "gloo",
        "ranks": len(results),
        "workers": [r["worker"] for r in results],
        "hosts": [r["host"] for r in results],
        "pids": [r["pid"] for r in results],
        "threads": [r["threads"] for r in results],
        "train_lists": [r["train_lists"] for r in results],
    }
    return weights, results[0]["info"], run


def _train_rank(
    net: ScoringNet, train: ListwiseData, valid: ListwiseData | None, cfg: TorchTrainSettings
) -> dict[str, Any]:
    """One rank's fit, inside its process group: train, then report."""
    import torch.distributed as dist

    from ranking.nn.ddp import train_rank
    from ranking.nn.train import TensorLists

    rank = dist.get_rank()
    tensors = TensorLists(train, cfg.targets)
    info = train_rank(net, tensors, TensorLists(valid) if valid is not None else None, cfg, cfg.seed)
    return {
        "rank": rank,
        **worker_record(),
        "train_lists": train.n_lists,
        "info": info,
        **replica(net.state_dict()),
    }
