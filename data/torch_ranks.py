"""``torch.distributed`` ranks on Dask workers: what every data-parallel trainer on the engine shares.

In: a cluster client, where the ranks go (``rank_slots``), a rank function and each rank's arguments. Out:
every rank's return value, or one ``RanksFailed`` that says what happened to each rank. Dask places the
ranks and torch.distributed (gloo on CPU) does the communication; nothing here schedules work itself:

- A rank goes to each worker (``per="worker"``, with the worker's threads), or to the first worker of each
  host with the threads of all the host's workers (``per="host"``): one process per machine that splits its
  matrix products over the machine's cores, and gloo only between machines. Which is faster depends on the
  model: a rank's exchange per step against its compute (docs/scale.md).

- A free TCP port is taken on the first worker's host, by a task on that worker: rank 0 serves the
  rendezvous there (``init_method tcp://host:port``).
- One task per rank, pinned to its worker (``workers=[address]``, no other worker allowed, not pure: a rank
  is not a cached value), joins the group as rank ``i`` of ``len(slots)`` with its slot's torch threads,
  runs the rank function, and leaves the group whatever happens. Per host assumes the host's other workers
  get no task while its rank runs (the job is the cluster's only one), so their cores are the rank's
  threads (capped at the cores the rank's process may use), and that the hosts are alike (each rank takes
  an equal share of every batch). Hosts are told apart by their workers' addresses.
- Large arguments go to their worker first (``to_worker``), so the task graph does not carry the arrays.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

if TYPE_CHECKING:
    from distributed import Client

#: How long a rank waits for the others, at the rendezvous and in each collective: long enough for the
#: slowest rank's validation pass, short enough that a rank that died does not hold the others for long.
TIMEOUT_S = 600.0
#: How long the other ranks get to fail after one has (a lost peer breaks their next collective at once).
SETTLE_S = 30.0


#: Where ranks go: one per Dask worker, or one per host using every core of the host's workers.
RankPlacement = Literal["worker", "host"]


class RanksFailed(RuntimeError):
    """A rank failed or was lost; the message names every rank's outcome."""


class RankSlot(NamedTuple):
    """Where one rank runs: its worker's address and its torch threads."""

    worker: str
    threads: int


def rank_slots(client: Client, per: RankPlacement) -> list[RankSlot]:
    """The cluster's rank slots, in worker-address order: one per worker with its own threads, or one per
    host on its first worker with the threads of every worker of that host. Empty when it has no workers."""
    if per not in ("worker", "host"):
        raise ValueError(f"ranks go per 'worker' or per 'host', not {per!r}")
    nthreads = client.nthreads()  # every worker (scheduler_info lists only a few in some versions)
    slots: dict[str, RankSlot] = {}
    for address in sorted(nthreads):
        key = address if per == "worker" else _host(address)
        first = slots.get(key, RankSlot(address, 0))
        slots[key] = RankSlot(first.worker, first.threads + int(nthreads[address]))
    return list(slots.values())


def run_ranks(
    client: Client, slots: list[RankSlot], rank_fn: Callable[..., Any], rank_args: list[tuple[Any, ...]]
) -> list[Any]:
    """``rank_fn(*rank_args[i])`` as rank ``i`` on ``slots[i]``, all in one gloo group; their results in
    rank order."""
    workers = [slot.worker for slot in slots]
    host = _host(workers[0])
    # Free when probed; another process could take it before rank 0 binds it (torchrun's free-port pick has
    # the same window): rank 0 then fails with the bind error, which the gather raises.
    port = client.submit(_free_port, host, workers=[workers[0]], allow_other_workers=False, pure=False)
    init_method = f"tcp://{f'[{host}]' if ':' in host else host}:{port.result()}"  # an IPv6 host in brackets
    futures = [
        client.submit(
            _run_rank,
            rank,
            len(workers),
            init_method,
            slot.threads,
            rank_fn,
            *args,
            workers=[slot.worker],
            allow_other_workers=False,
            pure=False,
        )
        for rank, (slot, args) in enumerate(zip(slots, rank_args, strict=True))
    ]
    return _gather_ranks(futures, workers)


def all_sum(values: list[float] | tuple[float, ...]) -> list[float]:
    """Element-wise sums over the ranks (float64: exact for counts, and metric sums keep their digits)."""
    import torch
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def flat_gradients(params: list[Any], last: float) -> Any:
    """Every parameter's gradient (zeros where it has none) in one flat float tensor, then ``last``: what a
    rank sums over the ranks in a single ``all_reduce``."""
    import torch

    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    return torch.cat([g.reshape(-1) for g in grads] + [torch.tensor([float(last)])])


def set_gradients(params: list[Any], flat: Any) -> None:
    """``flat_gradients``' layout (without its last value) back into each parameter's gradient."""
    offset = 0
    for p in params:
        p.grad = flat[offset : offset + p.numel()].view_as(p).clone()
        offset += p.numel()


def state_digest(state: dict[str, Any]) -> str:
    """sha256 of a state dict's tensors, by name: equal on every rank when the replicas stayed identical."""
    h = hashlib.sha256()
    for name, value in sorted(state.items()):
        h.update(name.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def numpy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict's tensors as numpy copies: how weights travel from a worker back to the driver."""
    return {k: v.detach().numpy().copy() for k, v in state.items()}


def load_numpy_state(module: Any, arrays: dict[str, Any]) -> None:
    """``numpy_state``'s arrays into ``module``, every tensor of it (strict)."""
    import torch

    module.load_state_dict({k: torch.from_numpy(v) for k, v in arrays.items()}, strict=True)


def worker_record() -> dict[str, Any]:
    """Where the calling task runs: its Dask worker's address, the host, the process id and the worker's
    threads (what the engine's runs report of each rank or member)."""
    from distributed import get_worker

    worker = get_worker()
    return {
        "worker": worker.address,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "threads": worker.state.nthreads,
    }


def replica(state: dict[str, Any]) -> dict[str, Any]:
    """What a rank returns of its weights: their digest, and on rank 0 the weights as numpy arrays."""
    import torch.distributed as dist

    weights = numpy_state(state) if dist.get_rank() == 0 else None
    return {"digest": state_digest(state), "state": weights}


def agreed_weights(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Rank 0's weights (``replica``'s), once every rank's digest says the copies stayed identical."""
    if len({r["digest"] for r in results}) != 1:
        raise RanksFailed(f"the {len(results)} ranks ended with different weights: a replica diverged")
    return results[0]["state"]


def to_worker(client: Client, data: Any, worker: str) -> Any:
    """``data`` scattered to ``worker`` itself (a future); None stays None."""
    if data is None:
        return None
    (future,) = client.scatter([data], workers=[worker], hash=False)
    return future


def _gather_ranks(futures: list[Any], workers: list[str]) -> list[Any]:
    """Every rank's result; else ``RanksFailed``.

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
    raise RanksFailed("; ".join(causes))


def _host(address: str) -> str:
    from distributed.comm import get_address_host

    return get_address_host(address)


def _free_port(host: str) -> int:
    """A TCP port free on ``host`` now (runs on the worker that will host rank 0)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _run_rank(
    rank: int, world: int, init_method: str, threads: int, rank_fn: Callable[..., Any], *args: Any
) -> Any:
    """One rank, run on its Dask worker: join the group, run on ``threads``, leave the group in any case."""
    import torch.distributed as dist

    from data.threads import all_cores, torch_threads

    dist.init_process_group(
        "gloo", init_method=init_method, rank=rank, world_size=world, timeout=timedelta(seconds=TIMEOUT_S)
    )
    try:
        # Never more threads than the process may run on: a host's workers may declare more than its cores.
        with torch_threads(max(1, min(threads, all_cores()))):
            return rank_fn(*args)
    finally:
        dist.destroy_process_group()
