"""The torch rankers on the engine: one ``torch.distributed`` rank per Dask worker (docs/scale.md).

Dask places the ranks and torch.distributed does the communication; nothing here schedules work itself:

- The signal lists (those with a positive label: the only ones the loss learns from) are dealt out to one
  shard per worker, whole lists only (``ranking.engine_lists``), and so are the validation lists. Each
  shard is scattered to its worker.
- A free TCP port is taken on the first worker's host, by a task on that worker: the rendezvous
  (``init_method tcp://host:port``) is served there by rank 0.
- One task per worker, pinned to it (``workers=[address]``, no other worker allowed, not pure: a rank is
  not a cached value), runs ``ranking.nn.ddp.train_rank`` as rank ``i`` of ``len(workers)``, on gloo, with
  as many torch threads as the worker has Dask threads (its share of the cores).
- Rank 0 returns the weights as numpy arrays; every rank returns its pid, host and a digest of its
  weights, and the driver checks that the digests agree (the copies stayed identical).

The driver built the network (initial weights, input statistics over all training lists) exactly as one
process does, so the two paths differ only in how the steps are computed (``ranking.nn.ddp``).
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from ranking.config import TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.engine_lists import engine_workers, list_partitions
from ranking.errors import InputError, RankingError

if TYPE_CHECKING:
    from distributed import Client

    from ranking.nn.nets import ScoringNet

#: How long a rank waits for the others, at the rendezvous and in each collective: long enough for the
#: slowest rank's validation pass, short enough that a rank that died does not hold the others for long.
TIMEOUT_S = 600.0
#: How long the other ranks get to fail after one has (a lost peer breaks their next collective at once).
SETTLE_S = 30.0


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
    workers = engine_workers(client)[: signal.size]  # never a rank without lists
    shards = [train.subset(signal[part]) for part in list_partitions(signal.size, len(workers))]
    valid_shards: list[ListwiseData | None] = [None] * len(workers)
    if valid is not None:
        for i, part in enumerate(list_partitions(valid.n_lists, len(workers))):
            valid_shards[i] = valid.subset(part)
    # Rank 0 serves the rendezvous on this port. It is free when probed; another process could take it
    # before rank 0 binds it (torchrun's free-port pick has the same window): rank 0 then fails with the bind
    # error, which the gather below raises.
    host = _host(workers[0])
    port = client.submit(_free_port, host, workers=[workers[0]], allow_other_workers=False, pure=False)
    init_method = f"tcp://{f'[{host}]' if ':' in host else host}:{port.result()}"  # an IPv6 host in brackets
    futures = []
    for rank, worker in enumerate(workers):
        futures.append(
            client.submit(
                _run_rank,
                rank,
                len(workers),
                init_method,
                net,
                _to_worker(client, shards[rank], worker),
                _to_worker(client, valid_shards[rank], worker),
                cfg,
                workers=[worker],
                allow_other_workers=False,
                pure=False,
            )
        )
    results = _gather_ranks(futures, workers)
    digests = {r["digest"] for r in results}
    if len(digests) != 1:
        raise RankingError(f"the {len(results)} ranks ended with different weights: a replica diverged")
    run = {
        "backend": "gloo",
        "ranks": len(results),
        "workers": [r["worker"] for r in results],
        "hosts": [r["host"] for r in results],
        "pids": [r["pid"] for r in results],
        "threads": [r["threads"] for r in results],
        "train_lists": [r["train_lists"] for r in results],
    }
    return results[0]["state"], results[0]["info"], run


def _gather_ranks(futures: list[Any], workers: list[str]) -> list[dict[str, Any]]:
    """Every rank's result; else one ``RankingError`` that says what happened to each rank.

    A rank whose worker process dies takes its task with it (Dask reports it cancelled or lost), and the
    other ranks fail at their next collective ("Connection closed by peer"), or wait in the rendezvous if
    it came before. So the first rank to end badly stops the wait; the others get ``SETTLE_S`` to fail,
    any still running is cancelled, and every rank is reported.
    """
    from distributed import as_completed

    for future in as_completed(futures):
        if future.status != "finished":
            break
    else:
        return [future.result() for future in futures]
    deadline = time.monotonic() + SETTLE_S
    while any(f.status == "pending" for f in futures) and time.monotonic() < deadline:
        time.sleep(0.1)
    causes = []
    for rank, (future, worker) in enumerate(zip(futures, workers, strict=True)):
        if future.status == "error":
            exc = future.exception()
            causes.append(f"rank {rank} on {worker} failed: {type(exc).__name__}: {exc}")
        elif future.status in ("cancelled", "lost"):
            causes.append(f"rank {rank} on {worker} was lost: its worker process died (killed or crashed)")
        elif future.status != "finished":
            future.cancel()
            causes.append(f"rank {rank} on {worker} was stopped: it did not end with the others")
    raise RankingError("torch.distributed training on the engine failed; " + "; ".join(causes))


def _to_worker(client: Client, data: ListwiseData | None, worker: str) -> Any:
    """``data`` scattered to ``worker`` itself (a future), so the task graph does not carry the arrays."""
    if data is None:
        return None
    (future,) = client.scatter([data], workers=[worker], hash=False)
    return future


def _host(address: str) -> str:
    from distributed.comm import get_address_host

    return get_address_host(address)


def _free_port(host: str) -> int:
    """A TCP port free on ``host`` now (runs on the worker that will host rank 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_rank(
    rank: int,
    world: int,
    init_method: str,
    net: ScoringNet,
    train: ListwiseData,
    valid: ListwiseData | None,
    cfg: TorchTrainSettings,
) -> dict[str, Any]:
    """One rank, run on its Dask worker: join the group, train, report; the group is left in any case."""
    import torch.distributed as dist
    from distributed import get_worker

    from data.threads import torch_threads
    from ranking.nn.ddp import state_digest, train_rank
    from ranking.nn.train import TensorLists

    threads = get_worker().state.nthreads
    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=TIMEOUT_S)
    )
    try:
        with torch_threads(threads):
            tensors = TensorLists(train, cfg.targets)
            info = train_rank(net, tensors, TensorLists(valid) if valid is not None else None, cfg, cfg.seed)
        state = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()} if rank == 0 else None
        return {
            "rank": rank,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "worker": get_worker().address,
            "threads": threads,
            "train_lists": train.n_lists,
            "digest": state_digest(net),
            "info": info,
            "state": state,
        }
    finally:
        dist.destroy_process_group()
