"""DASALC-ens on the engine: one member per task, each a whole fit on one Dask worker (docs/scale.md).

The members differ only by seed and never exchange gradients, so they need no process group: the lists go
to the workers once, each member's fit is a task (on all of its worker's threads, one member at a time per
worker process), and each returns its weights as numpy arrays with its report. The driver puts the weights
into networks it builds itself, so the ensemble it saves is the one a fit in this process with the workers'
threads gives. A member is the unit of restart: the scheduler reruns a member whose worker was lost, and a
member that has finished is fetched to the driver at once, so a later loss does not cost it again.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from data.errors import SmartblockError
from data.torch_ranks import load_numpy_state, numpy_state, worker_record
from ranking.dataset import ListwiseData
from ranking.engine_lists import engine_workers
from ranking.errors import RankingError

if TYPE_CHECKING:
    from distributed import Client

    from ranking.torch_rankers import DASALCRanker

# A worker with several threads could run several members at once, and a fit uses process-wide torch state
# (the global random generator its seed sets, the intra-op thread count): one member at a time per process.
_ONE_MEMBER = threading.Lock()


def fit_members_on_engine(
    client: Client,
    members: Sequence[DASALCRanker],
    train: ListwiseData,
    valid: ListwiseData | None,
    warm_start: bool,
) -> list[DASALCRanker]:
    """``members`` fitted on the cluster's workers, in order; each one's ``info_["engine"]`` says where it
    ran (``data.torch_ranks.worker_record``). A member's own error is raised as it is, naming the member."""
    from distributed import as_completed

    if valid is not None:
        train.schema.check(valid)
    if warm_start:  # the members' inputs are checked here, before any list is sent
        for member in members:
            member.schema_.check(train)
    # Only as many workers as members need the lists: each gets its own copy (a lost worker's members then
    # rerun on another that holds them).
    workers = engine_workers(client)[: len(members)]
    (train_on,) = client.scatter([train], workers=workers, broadcast=True, hash=False)
    valid_on = None
    if valid is not None:
        (valid_on,) = client.scatter([valid], workers=workers, broadcast=True, hash=False)
    # Earlier members first: with more members than worker threads, the last ones wait for a free worker.
    futures = [
        client.submit(_fit_member, member, train_on, valid_on, warm_start, pure=False, priority=-i)
        for i, member in enumerate(members)
    ]
    index = {future.key: i for i, future in enumerate(futures)}
    results: list[dict[str, Any] | None] = [None] * len(members)
    try:
        for future in as_completed(futures):
            i = index[future.key]
            if future.status != "finished":
                _raise_member_error(future, i, members[i])
            results[i] = future.result()
            future.release()  # fetched: the worker may drop it, and a later loss does not recompute it
    finally:
        client.cancel([f for f in futures if f.status == "pending"])
    fitted = []
    for member, result in zip(members, results, strict=True):
        assert result is not None  # every future finished, or the loop raised
        schema = member.schema_ if warm_start else train.schema
        net = member.net_ if warm_start else member.build_net(schema, member.config())
        load_numpy_state(net, result["state"])
        member.net_, member.schema_ = net, schema
        member.info_ = {**result["info"], "engine": result["engine"]}
        fitted.append(member)
    return fitted


def _raise_member_error(future: Any, i: int, member: DASALCRanker) -> None:
    """Raise what became of member ``i``: its own smartblock error as it is (an input problem stays one, with
    a note naming the member), anything else (its worker lost more often than Dask retries, say) as a
    ``RankingError`` that names it."""
    name = f"DASALC-ens member {i} (seed {member.config().train.seed})"
    try:
        error = future.exception()
    except Exception as exc:  # cancelled or lost: no exception of the task's own to fetch
        error = exc
    if isinstance(error, SmartblockError):
        error.add_note(f"raised by {name} on the engine")
        raise error
    raise RankingError(f"{name} failed on the engine: {error!r}") from error


def _fit_member(
    member: DASALCRanker, train: ListwiseData, valid: ListwiseData | None, warm_start: bool
) -> dict[str, Any]:
    """One member's fit on this worker's threads; its weights and report."""
    where = worker_record()
    with _ONE_MEMBER:
        member.set_params(threads=where["threads"])
        member.fit(train, valid, warm_start=warm_start)
    return {"state": numpy_state(member.net_.state_dict()), "info": member.info_, "engine": where}
