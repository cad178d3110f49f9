"""World generation on the engine: a real local Dask cluster of 2 worker processes simulates and writes the
tiny world's days, both workers take some, and every file is the one the single-process generation wrote."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from data.engine import EngineSettings, engine_client
from data.world.generate import _engine_settings, days_written, generate_world
from data.world.scales import SCALES


def _digest(root: Path) -> dict[str, str]:
    """The world's own files; not the caches other tests derive into the session's world (``.cache/``), which
    exist or not depending on which tests ran before this one in its process."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).parts[0].startswith(".")
    }


@pytest.mark.slow
def test_two_worker_processes_write_the_same_world_as_one(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    with engine_client(EngineSettings(workers=2)) as client:
        # Through the cluster's address, as `--cluster` / engine.address sends it: `workers` is then unused.
        generate_world(
            out, scale="tiny", seed=7, workers=1, engine=EngineSettings(address=client.scheduler.address)
        )
        pids = client.run(os.getpid)  # worker address -> pid
        days = client.run(days_written)  # worker address -> the days it wrote
    assert len(pids) == 2 and len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    # Every day was written in the cluster's worker processes, none in this one: no single-process fallback.
    # Which worker takes which day is the scheduler's choice: one worker took all four tiny days once in CI
    # (the catalogue and truth tables are tasks too, and the days are short).
    assert sorted(d for ds in days.values() for d in ds) == list(range(SCALES["tiny"].days)), days
    assert _digest(out) == _digest(tiny_world)  # tiny_world: generated with workers=1, in this process


@pytest.mark.slow
def test_a_worker_killed_as_the_world_is_sent_out_loses_nothing(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "engine"
    killed: list[int] = []
    with engine_client(EngineSettings(workers=2)) as client:
        victim = min(client.run(os.getpid).values())

        def kill_once(stage: str, done: int, total: int) -> None:
            # Reported right after the world was scattered to both workers, before any task is sent.
            if stage == "catalogue" and done == 0 and not killed:
                os.kill(victim, signal.SIGKILL)
                killed.append(victim)

        generate_world(
            out,
            scale="tiny",
            seed=7,
            engine=EngineSettings(address=client.scheduler.address),
            progress=kill_once,
        )
        survivors = client.run(os.getpid)
    assert killed == [victim] and victim not in survivors.values()
    assert _digest(out) == _digest(tiny_world)  # every file, as one process writes them


def test_where_the_days_run() -> None:
    assert _engine_settings(None, 1) is None  # in this process: no cluster
    assert _engine_settings(EngineSettings(workers=0), 1) is None
    assert _engine_settings(None, 2) == EngineSettings(workers=2)  # a local cluster of `workers` processes
    tuned = EngineSettings(workers=8, connect_timeout_s=3.0)
    assert _engine_settings(tuned, 3) == EngineSettings(workers=3, connect_timeout_s=3.0)
    remote = EngineSettings(address="tcp://scheduler:8786")
    assert _engine_settings(remote, 1) is remote  # a running cluster whatever `workers` says


def test_generate_dials_the_cluster_option_before_writing(tmp_path: Path) -> None:
    with socket.socket() as s:  # an address where no scheduler listens
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    out = tmp_path / "world"
    env = {**os.environ, "SMARTBLOCK_ENGINE__CONNECT_TIMEOUT_S": "1"}
    args = ["world", "generate", "--scale", "tiny", "--out", str(out), "--cluster", address, "--json"]
    run = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 2 and f"no Dask scheduler answers at {address}" in run.stderr
    assert not out.exists()  # nothing written: a rerun with the right address needs no --overwrite
