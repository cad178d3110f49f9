"""Index encoding on the engine: a real local Dask cluster of 2 worker processes encodes the tiny world's
passages in shards, exactly as this process does, and the shards really ran in both workers."""

from __future__ import annotations

import os

import numpy as np
import pytest

from data.engine import EngineSettings, engine_client
from retrieval.base import Passage
from retrieval.config import DenseSettings, RetrievalSettings, SpladeSettings
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.sharded import encode_on_engine
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
