"""Point-in-time training sets: for each logged impression, its features as of that request's time.

Events are replayed in time order; each impression's features are read before its own events are applied,
from the live state (events strictly before it) and the batch snapshot cut at the start of its day. Labels
(clicks, dwell) are outcomes of the impression and join afterwards.

A list holds the shown blocks and, given a retrieval replay (``retrieval``, e.g.
``retrieval.asof.AsOfRetrieval.search``) and ``candidates`` > 0, the other candidates retrieval returned for
the request's query: the blocks a ranker orders at serve time and the page never showed (``shown`` = 0,
``position`` = 0, ``propensity`` = 0, no click). With a retrieval replay every row carries its ``rel_*``
features as retrieval scored the block then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.days import DAY_MS, Progress, day_start_ms
from data.errors import ConfigError
from data.layout import DataLayout
from data.schemas import TIMESTAMP
from features.batch import Snapshot, batch_snapshot
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.definitions import CATEGORICAL, FEATURES, INDEX, Request, compute_many, plan
from features.keys import hash64
from features.ops import ImpressionEvent
from features.relevance import RetrievalScores, ScoredCandidate
from features.replay import Replayer, in_time_order
from features.served import sample_unshown

if TYPE_CHECKING:
    from features.embeddings.asof import DailyVectors


class RetrievalReplay(Protocol):
    """Fused retrieval as of a past request (``retrieval.asof.AsOfRetrieval`` is one)."""

    @property
    def key(self) -> str:
        """What decides its answers (members, fusion, depth): part of a cached training set's key."""

    def search(self, query: str, ts_ms: int) -> Sequence[ScoredCandidate]:
        """The fused hits for ``query`` as of ``ts_ms``, best first."""

    def warm(self, queries: list[str]) -> None:
        """Retrieve for many queries at once (the members' batched path) before ``search`` asks one by one."""

    def write_text_runs(self, queries: list[str], path: Path) -> None:
        """What ``warm`` computes of the query-only members (text retrieval) for ``queries``, to a file."""

    def preload(self, runs: Sequence[Path]) -> None:
        """Read the query-only members' runs from ``write_text_runs`` files instead of computing them (before
        the first ``warm`` or ``search``)."""


class _Layered:
    """Batch snapshot over live state: where a training row reads its hashes from."""

    def __init__(self, snapshot: Snapshot, replayer: Replayer) -> None:
        self.snapshot, self.replayer = snapshot, replayer

    def fetch(self, items: list[tuple[str, list[str] | None]]) -> list[dict]:
        out = []
        for key, fields in items:
            live = self.replayer.state.fetch(key, fields)
            batch = self.snapshot.get(key)
            if batch and fields is None and not live:
                out.append(batch)  # read only: no copy of a batch-only hash (a query's, the intents')
                continue
            if batch:
                live.update(batch if fields is None else {f: batch[f] for f in fields if f in batch})
            out.append(live)
        return out


def build_training_set(
    layout: DataLayout,
    start: date,
    end: date,
    settings: FeatureStoreSettings,
    *,
    catalog: BlockAttributes | None = None,
    progress: Progress | None = None,
    vectors: DailyVectors | None = None,
    retrieval: RetrievalReplay | None = None,
    candidates: int = 0,
    labels_through: date | None = None,
    sample: float = 1.0,
) -> pa.Table:
    """One row per shown (impression, block) for impressions on days [start, end], plus, with
    ``retrieval`` and ``candidates`` > 0, one per unshown block among the query's top ``candidates``.

    ``sample`` < 1 keeps the rows of that share of the requests (``sampled_requests``: by request id, so
    every build keeps the same ones); the replay still applies every event, so a kept row is the row the
    whole build gives.

    Labels join the interactions logged through ``labels_through`` (default ``end``): a part of a longer
    range (``features.dataset_parts``) labels its rows as the whole range's build would.

    ``vectors`` (``features.embeddings.asof.train_daily_vectors``) gives the M3 features: each day's user
    vectors join that day's batch snapshot, and the models' block vectors join the catalogue. Without it
    every row has ``m3_missing = 1``.
    """
    if end < start:
        raise ConfigError(f"--to {end} is before --from {start}")
    catalog = catalog or BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())
    imps = layout.read_events("impressions", end=end)
    acts = layout.read_events("interactions", end=end)
    labels = acts
    if labels_through is not None and labels_through < end:
        raise ConfigError(f"labels through {labels_through} would miss clicks of days up to {end}")
    if labels_through is not None and labels_through > end:  # only the later days: acts holds the rest
        later = layout.read_events("interactions", start=end + timedelta(days=1), end=labels_through)
        labels = pa.concat_tables([acts, later])
    rows: list[np.ndarray] = []
    meta: list[tuple[ImpressionEvent, tuple[str, ...]]] = []
    blocks_for = _shown_blocks
    if retrieval is not None and candidates > 0:
        blocks_for = _CandidateLists(retrieval, candidates, catalog)
    if not 0 < sample <= 1:
        raise ConfigError(f"a training set keeps a share of requests in (0, 1], not {sample}")
    only = None
    if sample < 1.0:  # the range's requests only: the history before it has no rows to keep
        ts = pc.cast(imps["ts"], pa.int64())
        ranged = pc.and_(pc.greater_equal(ts, day_start_ms(start)), pc.less(ts, day_start_ms(end) + DAY_MS))
        ids = imps.filter(ranged)["request_id"].to_pylist()
        only = {r for r, kept in zip(ids, sampled_requests(ids, sample), strict=True) if kept}
    for event, blocks, features in point_in_time_rows(
        imps,
        acts,
        start,
        end,
        catalog,
        settings,
        blocks_for,
        vectors=vectors,
        progress=progress,
        retrieval=retrieval,
        only=only,
    ):
        # float32 as kept: the table's feature columns are float32 (categoricals small integers, exact), and
        # 3.3 million float64 rows held twice (list, then concatenated) were 5 GB of the small world's peak.
        rows.append(features.astype(np.float32))
        meta.append((event, blocks))
    return _assemble(rows, meta, imps, labels)


def sampled_requests(request_ids: Sequence[str], share: float) -> np.ndarray:
    """Which requests a training set sampled down to ``share`` keeps (a bool per id): those whose salted id
    hashes below ``share`` of the range. A pure function of the id, so the in-process build, the engine's
    parts and a rebuild keep the same requests, whatever the order or split they see them in. (Salted: the
    unsampled id seeds the draw of the request's candidates, ``sample_unshown``.)"""
    bound = int(share * 2**64)
    return np.fromiter(
        (hash64(f"request-sample|{r}") < bound for r in request_ids), dtype=bool, count=len(request_ids)
    )


def _shown_blocks(event: ImpressionEvent) -> tuple[str, ...]:
    return tuple(s.block_id for s in event.shown)


class _CandidateLists:
    """The shown blocks, then ``n`` of the request's unshown retrieval candidates drawn uniformly from the
    whole candidate list (seeded by the request id: ``features.served.sample_unshown``, the rule the served
    log samples by too)."""

    def __init__(self, retrieval: RetrievalReplay, n: int, catalog: BlockAttributes) -> None:
        self.retrieval, self.n, self.catalog = retrieval, n, catalog

    def __call__(self, event: ImpressionEvent) -> tuple[str, ...]:
        shown = _shown_blocks(event)
        seen = set(shown)
        hits = self.retrieval.search(event.query, event.ts_ms)
        unshown = [h.id for h in hits if h.id not in seen and h.id in self.catalog.index]
        return shown + tuple(unshown[i] for i in sample_unshown(event.request_id, len(unshown), self.n))


def point_in_time_rows(
    imps: pa.Table,
    acts: pa.Table,
    start: date,
    end: date,
    catalog: BlockAttributes,
    settings: FeatureStoreSettings,
    blocks_for: Callable[[ImpressionEvent], tuple[str, ...] | None],
    *,
    vectors: DailyVectors | None = None,
    progress: Progress | None = None,
    retrieval: RetrievalReplay | None = None,
    only: set[str] | None = None,
) -> Iterator[tuple[ImpressionEvent, tuple[str, ...], np.ndarray]]:
    """The replay behind every point-in-time table: each impression on days [start, end] for which
    ``blocks_for`` names blocks (None: skipped), with those blocks' feature rows (``FEATURES`` order) as of
    the request's time. Training sets take the shown blocks; offline estimates take the blocks another
    policy would have shown. With ``retrieval``, each request also carries what retrieval scored its
    blocks as of the request (the ``rel_*`` features). ``only``: the request ids to give rows for (None:
    every one); the others are replayed all the same.
    """
    report = progress or (lambda stage, done, total: None)
    if vectors is not None:  # a copy: the caller's catalogue keeps its own vectors
        catalog = replace(catalog, vectors={**catalog.vectors, **vectors.blocks})
    replayer = Replayer(settings)
    snapshots: dict[date, Snapshot] = {}
    lo, hi = day_start_ms(start), day_start_ms(end) + DAY_MS
    if retrieval is not None:  # the queries of days [start, end], batched: not those of the whole history
        ts = pc.cast(imps["ts"], pa.int64())
        days = pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi))
        if only is not None:
            days = pc.and_(days, pc.is_in(imps["request_id"], value_set=pa.array(list(only), pa.string())))
        retrieval.warm(pc.unique(imps.filter(days)["query"]).to_pylist())
    total = imps.num_rows + acts.num_rows
    pending: list[tuple[ImpressionEvent, Request, list[dict]]] = []
    for i, event in enumerate(in_time_order(imps, acts)):
        if (
            isinstance(event, ImpressionEvent)
            and lo <= event.ts_ms < hi
            and (only is None or event.request_id in only)
        ):
            blocks = blocks_for(event)
            if blocks is not None:
                day = datetime.fromtimestamp(event.ts_ms / 1000, tz=UTC).date()
                if day not in snapshots:
                    snapshots.clear()  # one day's snapshot at a time: memory stays flat
                    snapshots[day] = _snapshot_before(
                        imps, acts, day_start_ms(day), catalog, replayer, settings
                    )
                    if vectors is not None:  # M3 user vectors as of the day's start: batch state
                        for key, fields in vectors.user_hashes(day, replayer.keys).items():
                            snapshots[day].user.setdefault(key, {}).update(fields)
                scores = None
                if retrieval is not None:
                    scores = RetrievalScores.align(retrieval.search(event.query, event.ts_ms), blocks)
                req = Request(
                    event.request_id,
                    event.ts_ms,
                    event.user_id,
                    event.query,
                    blocks,
                    scores,
                    event.session_id,
                )
                # Read before the event is applied: the request never sees its own outcome. What is read
                # is immutable (packed values), so the rows can be computed later, many requests at once.
                pending.append(
                    (event, req, _Layered(snapshots[day], replayer).fetch(plan(replayer.keys, req)))
                )
                if len(pending) >= COMPUTE_CHUNK:
                    yield from _computed(pending, catalog, settings)
        replayer.apply(event)
        if i % 20_000 == 0:
            report("replay", i, total)
    yield from _computed(pending, catalog, settings)
    report("replay", total, total)


# Requests whose rows are computed together (``compute_many``): enough to spread numpy's per-call cost, few
# enough that their fetched hashes stay small.
COMPUTE_CHUNK = 512


def _computed(
    pending: list[tuple[ImpressionEvent, Request, list[dict]]],
    catalog: BlockAttributes,
    settings: FeatureStoreSettings,
) -> Iterator[tuple[ImpressionEvent, tuple[str, ...], np.ndarray]]:
    """The rows of the pending requests, one request at a time; empties ``pending``."""
    if not pending:
        return
    rows = compute_many([req for _, req, _ in pending], [f for _, _, f in pending], catalog, settings)
    start = 0
    for event, req, _ in pending:
        end = start + len(req.block_ids)
        yield event, req.block_ids, rows[start:end]
        start = end
    pending.clear()


def _snapshot_before(
    imps: pa.Table, acts: pa.Table, cutoff_ms: int, catalog: BlockAttributes, replayer: Replayer, settings
) -> Snapshot:
    cutoff = pa.scalar(cutoff_ms, pa.int64()).cast(TIMESTAMP)
    return batch_snapshot(
        imps.filter(pc.less(imps["ts"], cutoff)),
        acts.filter(pc.less(acts["ts"], cutoff)),
        catalog,
        replayer.keys,
        settings,
    )


def _assemble(
    rows: list[np.ndarray],
    meta: list[tuple[ImpressionEvent, tuple[str, ...]]],
    imps: pa.Table,
    acts: pa.Table,
) -> pa.Table:
    """The training table: request columns repeated over each request's rows by Arrow (no Python object per
    row for them), positions from each impression's page, propensities, sessions and candidate counts from
    the logged impressions (the last of a request id logged twice), labels joined from the interactions."""
    features = np.concatenate(rows) if rows else np.zeros((0, len(FEATURES)), np.float32)
    rows.clear()  # the per-impression arrays are copied: free them before the columns are built
    logged = imps["request_id"].to_pylist()
    index = {r: i for i, r in enumerate(logged)}
    propensity = {
        r: {s["block_id"]: s["propensity"] for s in items}
        for r, items in zip(logged, imps["shown"].to_pylist(), strict=True)
    }
    at = pa.array([index[event.request_id] for event, _ in meta], pa.int64())
    owner = np.repeat(np.arange(len(meta), dtype=np.int64), [len(b) for _, b in meta])
    per_request = {
        "request_id": pa.array([event.request_id for event, _ in meta], pa.string()),
        "ts": pa.array([event.ts_ms for event, _ in meta], pa.int64()),
        "user_id": pa.array([event.user_id for event, _ in meta], pa.string()),
        "session_id": imps["session_id"].take(at),
        "query": pa.array([event.query for event, _ in meta], pa.string()),
        "n_candidates": imps["n_candidates"].take(at),
    }
    cols: dict[str, pa.ChunkedArray | list] = {k: _repeated(v, owner) for k, v in per_request.items()}
    clicked, dwell = outcome_labels(acts)
    per_row: dict[str, list] = {k: [] for k in ("block_id", "position", "propensity", "click", "dwell_ms")}
    for event, blocks in meta:
        position = {s.block_id: s.position for s in event.shown}
        shown = propensity[event.request_id]
        for block in blocks:
            key = (event.request_id, block)
            per_row["block_id"].append(block)
            per_row["position"].append(position.get(block, 0))  # 0: a candidate the page did not show
            per_row["propensity"].append(shown.get(block, 0.0))
            per_row["click"].append(1 if key in clicked else 0)
            per_row["dwell_ms"].append(dwell.get(key, 0))
    cols.update(per_row)
    return training_table(cols, features)


def _repeated(values: pa.Array | pa.ChunkedArray, owner: np.ndarray, rows: int = 1 << 20) -> pa.ChunkedArray:
    """``values[owner]`` in chunks of ``rows``: one string array of millions of rows could pass the 2 GB its
    32-bit offsets address."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    chunks = [values.take(pa.array(owner[i : i + rows])) for i in range(0, len(owner), rows)]
    return pa.chunked_array(chunks, type=values.type)


# A training table's columns before the features (one per ``FEATURES`` name, ``feature_arrays``).
ROW_COLUMNS: dict[str, pa.DataType] = {
    "request_id": pa.string(),
    "ts": pa.int64(),  # ms since the epoch, stored as a UTC timestamp
    "user_id": pa.string(),
    "session_id": pa.string(),
    "query": pa.string(),
    "block_id": pa.string(),
    "position": pa.int64(),  # 0: a candidate the page did not show
    "propensity": pa.float64(),  # of the shown block at its position; 0 for an unshown candidate
    "n_candidates": pa.int64(),
    "click": pa.int8(),
    "dwell_ms": pa.int64(),
}


def outcome_labels(acts: pa.Table) -> tuple[set[tuple[str, str]], dict[tuple[str, str], int]]:
    """The (request, block) pairs clicked, and each pair's summed dwell (ms), from interactions."""
    clicked: set[tuple[str, str]] = set()
    dwell: dict[tuple[str, str], int] = {}
    for r, b, t, d in zip(
        acts["request_id"].to_pylist(),
        acts["block_id"].to_pylist(),
        acts["type"].to_pylist(),
        acts["dwell_ms"].to_pylist(),
        strict=True,
    ):
        if t == "click":
            clicked.add((r, b))
        elif d is not None:
            dwell[(r, b)] = dwell.get((r, b), 0) + d
    return clicked, dwell


def training_table(cols: Mapping[str, list | pa.Array | pa.ChunkedArray], features: np.ndarray) -> pa.Table:
    """The training table of ``ROW_COLUMNS`` (lists or Arrow arrays) and their feature rows (``FEATURES``
    order): the one shape every builder writes (point in time here, served logs in
    ``features.served_dataset``)."""
    arrays = {k: _column(cols[k], t) for k, t in ROW_COLUMNS.items()}
    arrays["ts"] = arrays["ts"].cast(TIMESTAMP)
    return pa.table({**arrays, **feature_arrays(features)})


def _column(values: list | pa.Array | pa.ChunkedArray, kind: pa.DataType) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values.cast(kind)
    return pa.array(values, kind)


def empty_training_table() -> pa.Table:
    """A training table without rows: what a range without impressions gives."""
    return training_table({k: [] for k in ROW_COLUMNS}, np.zeros((0, len(FEATURES)), np.float32))


def feature_arrays(features: np.ndarray) -> dict[str, pa.Array]:
    """Feature rows (``FEATURES`` order) as the training-set columns: int64 categoricals, float32 others."""
    out = {}
    for f in FEATURES:
        values = features[:, INDEX[f.name]]
        out[f.name] = pa.array(values.astype(np.int64 if f.name in CATEGORICAL else np.float32))
    return out
