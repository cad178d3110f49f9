"""DASALC-ens on the engine: a real local Dask cluster of 2 worker processes, one member per task. The
members come back with the weights a fit in this process gives on the same threads; a worker killed in the
middle of a member's fit costs that member a rerun, not the ensemble."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pytest

from data.engine import EngineSettings, engine_client
from ranking.config import TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.ensemble import DASALCEnsembleRanker
from ranking.models import load_ranker

if TYPE_CHECKING:
    from distributed import Client

CFG = TorchTrainSettings(max_epochs=6, patience=6, lists_per_batch=16, learning_rate=3e-3)


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with engine_client(EngineSettings(workers=2)) as client:
        yield client


def test_members_train_one_per_task_on_the_workers_as_in_one_process(
    synthetic: tuple[ListwiseData, ...], client: Client, tmp_path: Path
) -> None:
    train, valid, test = synthetic
    single = DASALCEnsembleRanker(n_members=3, train=CFG, threads=1).fit(train, valid)
    ens = DASALCEnsembleRanker(n_members=3, train=CFG, threads=1).fit(train, valid, client=client)
    workers = client.run(os.getpid)
    runs = [m["engine"] for m in ens.info_["members"]]
    # Every member ran in a worker process, never this one, and both workers took members: a fallback to
    # this process, or to one worker, fails here.
    assert {r["pid"] for r in runs} == set(workers.values()) and os.getpid() not in workers.values()
    assert {r["worker"] for r in runs} == set(workers) and all(r["threads"] == 1 for r in runs)
    # The same weights as the members fitted here one after the other, on one thread each.
    for here, there in zip(single.members_, ens.members_, strict=True):
        a, b = here.net_.state_dict(), there.net_.state_dict()
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key].numpy(), b[key].numpy(), err_msg=key)
    np.testing.assert_array_equal(ens.score(test), single.score(test))
    assert ens.get_params() == single.get_params()  # where it ran is not part of the model
    # Saved and loaded like any ensemble (safetensors + manifest).
    loaded = load_ranker(Path(ens.save(tmp_path / "ens")).parent)
    np.testing.assert_allclose(loaded.score(test), ens.score(test), rtol=1e-6, atol=1e-6)


def test_refit_on_the_engine_retrains_each_member_for_its_validated_epochs(
    synthetic: tuple[ListwiseData, ...], client: Client
) -> None:
    train, valid, test = synthetic
    cfg = CFG.model_copy(update={"max_epochs": 8, "patience": 2})
    single = DASALCEnsembleRanker(n_members=2, refit=True, train=cfg, threads=1).fit(train, valid)
    ens = DASALCEnsembleRanker(n_members=2, refit=True, train=cfg, threads=1).fit(train, valid, client=client)
    for member in ens.info_["members"]:
        assert member["epochs"] == member["best_epoch"] == member["validated"]["best_epoch"]
        assert member["train_lists"] == train.n_lists + valid.n_lists
        assert "engine" in member and "engine" in member["validated"]  # both rounds ran on the workers
    np.testing.assert_array_equal(ens.score(test), single.score(test))


def test_warm_start_on_the_engine_fine_tunes_each_member_as_in_one_process(
    synthetic: tuple[ListwiseData, ...], client: Client
) -> None:
    train, valid, test = synthetic
    cfg = CFG.model_copy(update={"max_epochs": 2, "patience": 2})
    here = DASALCEnsembleRanker(n_members=2, train=cfg, threads=1).fit(train, valid)
    there = DASALCEnsembleRanker(n_members=2, train=cfg, threads=1).fit(train, valid)
    before = here.score(test)
    here.fit(valid, train, warm_start=True)  # more epochs on other lists, from the fitted weights
    there.fit(valid, train, warm_start=True, client=client)
    assert all(m["warm_start"] and "engine" in m for m in there.info_["members"])
    np.testing.assert_array_equal(there.score(test), here.score(test))
    assert not np.array_equal(there.score(test), before)  # the members did move


def test_lists_that_do_not_fit_the_members_are_refused_before_anything_is_sent(
    synthetic: tuple[ListwiseData, ...], client: Client, lists_factory
) -> None:
    from ranking.errors import InputError

    train, valid, _ = synthetic
    cfg = CFG.model_copy(update={"max_epochs": 1, "patience": 1})
    ens = DASALCEnsembleRanker(n_members=2, train=cfg, threads=1).fit(train, valid)
    base = lists_factory(20, seed=9)
    other = dataclasses.replace(base, feature_names=tuple(f"y{i}" for i in range(base.dense.shape[1])))
    with pytest.raises(InputError, match="dense features differ"):
        ens.fit(other, None, warm_start=True, client=client)
    assert not client.who_has()  # nothing was scattered to the workers


def test_a_worker_killed_mid_fit_costs_its_member_a_rerun_not_the_ensemble(
    synthetic: tuple[ListwiseData, ...],
) -> None:
    """kill -9 of a worker process while it fits a member: the scheduler gives the member to a worker
    again (the nanny restarts the killed one), the fit ends, and the ensemble is the one a fit without the
    kill gives. Its own cluster, so the module's stays as the other tests expect it."""
    import importlib

    train, valid, test = synthetic
    cfg = CFG.model_copy(update={"max_epochs": 60, "patience": 60})
    single = DASALCEnsembleRanker(n_members=2, train=cfg, threads=1).fit(train, valid)
    member_s = min(m["seconds"] for m in single.info_["members"])
    outcome: dict[str, object] = {}
    with engine_client(EngineSettings(workers=2)) as own:
        own.run(importlib.import_module, "ranking.ensemble_dask")  # torch imported: a task starts fitting
        own.run(importlib.import_module, "ranking.torch_rankers")
        pids = own.run(os.getpid)

        def fit() -> None:
            try:
                outcome["result"] = DASALCEnsembleRanker(n_members=2, train=cfg, threads=1).fit(
                    train, valid, client=own
                )
            except BaseException as exc:  # the assertion below says what came out
                outcome["result"] = exc

        thread = threading.Thread(target=fit, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        running: list[tuple[str, str]] = []
        while not running:
            assert time.monotonic() < deadline and thread.is_alive(), "no member ever started"
            running = [
                (w, str(k)) for w, keys in own.processing().items() for k in keys if "fit_member" in str(k)
            ]
            time.sleep(0.05)
        time.sleep(member_s / 3)  # a third into the member's epochs
        victim, key = running[0]
        os.kill(pids[victim], signal.SIGKILL)
        thread.join(timeout=300)
        assert not thread.is_alive(), "the fit did not end within 300 s of the kill"
        # The scheduler started the killed member twice: on the victim, then again after the loss.
        starts = own.run_on_scheduler(
            lambda dask_scheduler, key=key: sum(1 for t in dask_scheduler.story(key) if t[2] == "processing")
        )
    assert starts >= 2, starts
    ens = outcome["result"]
    assert isinstance(ens, DASALCEnsembleRanker), ens
    assert pids[victim] not in {m["engine"]["pid"] for m in ens.info_["members"]}
    np.testing.assert_array_equal(ens.score(test), single.score(test))


def test_a_worker_with_two_threads_fits_its_members_one_at_a_time_on_both(
    synthetic: tuple[ListwiseData, ...],
) -> None:
    # A running cluster's worker may have several threads (``dask worker`` defaults to one per core): two
    # members at once in one process would share torch's global random generator and thread count.
    from distributed import Client, LocalCluster

    train, valid, test = synthetic
    single = DASALCEnsembleRanker(n_members=2, train=CFG, threads=2).fit(train, valid)
    with (
        LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster,
        Client(cluster) as own,
    ):
        ens = DASALCEnsembleRanker(n_members=2, train=CFG, threads=1).fit(train, valid, client=own)
    assert [m["engine"]["threads"] for m in ens.info_["members"]] == [2, 2]
    np.testing.assert_array_equal(ens.score(test), single.score(test))
