"""Index encoding on the engine: a real local Dask cluster of 2 worker processes encodes the tiny world's
passages in shards, exactly as this process does, and the shards really ran in both workers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data.engine import EngineSettings, engine_client
from retrieval.base import Passage
from retrieval.config import DenseSettings, RetrievalSettings, SpladeSettings
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.sharded import SHARD_SIZE, default_shard_size, encode_on_engine
from retrieval.encoders.splade import SpladeEncoder
from retrieval.system import _engine_is_faster

PASSAGES = 48  # enough for 6 shards of 8: both workers take some


@pytest.mark.slow
def test_two_worker_processes_encode_like_one_process(tiny_passages: list[Passage]) -> None:
    texts = [p.text for p in tiny_passages[:PASSAGES]]
    splade = SpladeEncoder(SpladeSettings()).load()
    dense = DenseEncoder(DenseSettings()).load()
    with engine_client(EngineSettings(workers=2)) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        sparse = encode_on_engine(client, splade, texts, shard_size=8)
        # The same cluster through its address: what --cluster / engine.address does.
        with engine_client(EngineSettings(address=client.scheduler.address)) as remote:
            vectors = encode_on_engine(remote, dense, texts, shard_size=8)
    assert sparse.rows == splade.encode_documents(texts)  # SPLADE term weights equal, term by term
    np.testing.assert_allclose(vectors.rows, dense.encode_documents(texts), atol=1e-6)
    for run in (sparse, vectors):
        assert len(run.pids) == PASSAGES // 8
        assert len(set(run.pids)) == 2 and os.getpid() not in run.pids  # no single-process fallback


def test_the_engine_is_used_when_it_pays() -> None:
    settings = RetrievalSettings(engine_min_passages=1000)
    assert not _engine_is_faster(EngineSettings(workers=2), settings, 999)
    assert _engine_is_faster(EngineSettings(workers=2), settings, 1000)
    assert not _engine_is_faster(EngineSettings(workers=1), settings, 10**6)  # the single-process reference
    assert _engine_is_faster(EngineSettings(address="tcp://scheduler:8786", workers=1), settings, 1)


def test_index_build_sends_stale_indexes_to_the_cluster_option(tiny_world: Path, tmp_path: Path) -> None:
    # A fresh index folder is stale, so `--cluster` must be dialled before anything is encoded.
    with socket.socket() as s:  # an address where no scheduler listens
        s.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "SMARTBLOCK_RETRIEVAL__INDEX_DIR": str(tmp_path / "index"),
        "SMARTBLOCK_ENGINE__CONNECT_TIMEOUT_S": "1",
    }
    args = ["index", "build", "--world", str(tiny_world), "--cluster", address, "--json"]
    run = subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, timeout=120, env=env
    )
    assert run.returncode == 2 and f"no Dask scheduler answers at {address}" in run.stderr


def test_shards_are_small_enough_for_every_worker_to_take_a_few() -> None:
    assert default_shard_size(6048, 2) == SHARD_SIZE  # many passages: full shards
    assert default_shard_size(600, 2) == 75  # 8 shards, 4 per worker
    assert default_shard_size(40, 2) == 16  # never tinier than MIN_SHARD
