"""DASALC-ens on the engine: one member per task, each a whole fit on one Dask worker (docs/scale.md).

The members differ only by seed and never exchange gradients, so they need no process group: the lists go
to every worker once, each member's fit is a task that the next free worker takes (on that worker's
threads), and each returns its weights as numpy arrays with its report. The driver puts the weights into
networks it builds itself, so the ensemble it saves is the one a fit in this process with the workers'
threads gives. A member is the unit of restart: the scheduler reruns a member whose worker died on another
worker, and the members already done are kept.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ranking.dataset import ListwiseData
from ranking.engine_lists import engine_workers
from ranking.errors import RankingError

if TYPE_CHECKING:
    from distributed import Client

    from ranking.torch_rankers import DASALCRanker


def fit_members_on_engine(
    client: Client,
    members: Sequence[DASALCRanker],
    train: ListwiseData,
    valid: ListwiseData | None,
    warm_start: bool,
) -> list[DASALCRanker]:
    """``members`` fitted on the cluster's workers, in order; each one's ``info_["engine"]`` says where."""
    import torch

    engine_workers(client)  # refuses a cluster without workers before anything is sent
    (train_on,) = client.scatter([train], broadcast=True, hash=False)
    valid_on = None if valid is None else client.scatter([valid], broadcast=True, hash=False)[0]
    # The first members first: with more members than workers, the last ones to start are the last listed.
    futures = [
        client.submit(_fit_member, member, train_on, valid_on, warm_start, pure=False, priority=-i)
        for i, member in enumerate(members)
    ]
    try:
        results = client.gather(futures)
    except Exception as exc:  # a member's own error, or its worker lost more often than Dask retries
        client.cancel(futures)
        raise RankingError(f"DASALC-ens on the engine: a member's fit failed: {exc!r}") from exc
    fitted = []
    for member, result in zip(members, results, strict=True):
        schema = member.schema_ if warm_start else train.schema
        net = member.net_ if warm_start else member.build_net(schema, member.config())
        net.load_state_dict({k: torch.from_numpy(v) for k, v in result["state"].items()}, strict=True)
        member.net_, member.schema_ = net, schema
        member.info_ = {**result["info"], "engine": result["engine"]}
        fitted.append(member)
    return fitted


def _fit_member(
    member: DASALCRanker, train: ListwiseData, valid: ListwiseData | None, warm_start: bool
) -> dict[str, Any]:
    """One member's fit on this worker's threads; its weights and report."""
    from distributed import get_worker

    worker = get_worker()
    member.set_params(threads=worker.state.nthreads)
    member.fit(train, valid, warm_start=warm_start)
    state = {k: v.detach().numpy().copy() for k, v in member.net_.state_dict().items()}
    return {
        "state": state,
        "info": member.info_,
        "engine": {
            "worker": worker.address,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "threads": worker.state.nthreads,
        },
    }
