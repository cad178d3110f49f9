"""Rows of many requests at once are each request's rows alone, bit for bit in float64: the training-set
replay computes 512 requests together (``compute_many``) and /search one (``compute``)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from data.layout import DataLayout
from features.batch import batch_snapshot
from features.block_attributes import BlockAttributes, BlockVectors
from features.config import FeatureStoreSettings
from features.dataset import _Layered
from features.definitions import INDEX, VECTOR_FIELD, VERSION_FIELD, Request, compute, compute_many, plan
from features.ops import ImpressionEvent
from features.packing import split_blob
from features.relevance import RetrievalScores
from features.replay import Replayer, in_time_order
from retrieval.base import Hit


def test_a_batch_gives_each_request_its_own_rows(tiny_world: Path, tiny_catalog: BlockAttributes) -> None:
    layout = DataLayout(tiny_world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    settings = FeatureStoreSettings(namespace="batch-test")
    replayer = Replayer(settings)
    events = list(in_time_order(imps, acts))
    searches = [i for i, e in enumerate(events) if isinstance(e, ImpressionEvent)]
    for event in events[: searches[-200]]:  # live state well filled: tallies, counters, sessions
        replayer.apply(event)
    logged = [events[i] for i in searches[-200:-140]]  # the next searches, many in sessions begun before
    snapshot = batch_snapshot(
        imps, acts, tiny_catalog, replayer.keys, settings
    )  # profiles, lifts, co-queries
    # M3: a vector for every block, and for half of the users (one of them of a model not loaded).
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((len(tiny_catalog.ids), 16)).astype(np.float32)
    catalog = replace(
        tiny_catalog,
        vectors={"m3-a": BlockVectors.from_rows("m3-a", matrix, np.ones(len(matrix), dtype=bool))},
    )
    for n, event in enumerate(logged[::2]):
        user = snapshot.user.setdefault(replayer.keys.user(event.user_id), {})
        vector = rng.standard_normal(16).astype(np.float16).tobytes()
        user.update({**split_blob(VECTOR_FIELD, vector), VERSION_FIELD: b"m3-b" if n == 0 else b"m3-a"})

    reqs = []
    for n, event in enumerate(logged):
        blocks = tuple(s.block_id for s in event.shown) + tuple(
            rng.choice(catalog.ids, size=n % 7, replace=False).tolist()
        )
        blocks = tuple(dict.fromkeys(blocks))
        hits = [Hit(b, float(rng.random()), {"bm25": float(rng.random() * 10)}) for b in blocks[::2]]
        reqs.append(
            Request(
                event.request_id,
                event.ts_ms,
                event.user_id if n % 5 else f"unknown-user-{n}",  # some users with no state at all
                event.query,
                blocks if n % 11 else (),  # some requests with no candidate
                RetrievalScores.align(hits, blocks) if n % 3 and n % 11 else None,  # some without retrieval
                event.session_id if n % 4 else "",  # some naming no session
            )
        )
    fetched = [_Layered(snapshot, replayer).fetch(plan(replayer.keys, req)) for req in reqs]

    together = compute_many(reqs, fetched, catalog, settings)
    alone = np.concatenate([compute(r, f, catalog, settings) for r, f in zip(reqs, fetched, strict=True)])
    assert together.dtype == np.float64 and together.shape == alone.shape
    np.testing.assert_array_equal(together, alone)
    # The mix was there: rows with and without a session, M3, retrieval, and a request with no rows.
    assert {0.0, 1.0} <= set(together[:, INDEX["session_missing"]])
    assert {0.0, 1.0} <= set(together[:, INDEX["m3_missing"]])
    assert {0.0, 1.0} <= set(together[:, INDEX["rel_missing"]])
    assert {0.0, 1.0} <= set(together[:, INDEX["user_missing"]])
    assert any(len(r.block_ids) == 0 for r in reqs)


def test_retrieval_scores_of_another_length_are_refused(tiny_catalog: BlockAttributes) -> None:
    ids = tuple(tiny_catalog.ids[:3])
    scores = RetrievalScores.align([Hit(ids[0], 1.0, {})], ids[:2])  # scored for two blocks, three asked
    req = Request("r", 1_767_600_000_000, "u", "q", ids, scores)
    with pytest.raises(ValueError, match="2 candidates"):
        compute(req, [{}, {}, {}, {}], tiny_catalog, FeatureStoreSettings(namespace="t"))
