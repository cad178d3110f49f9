"""Point-in-time training sets on the engine: contiguous day ranges built by worker processes.

In: a world's layout, a day range, the feature settings (and the catalogue, M3 vectors and retrieval replay
``features.dataset.build_training_set`` takes), a Dask client. Out: the table the single-process build gives
for the whole range, row for row.

A part is a contiguous run of days. Its worker replays every event before the part's last day ends (the live
state is the whole history, so no part can start from nothing) and computes rows for its own days only; its
labels read the interactions through the range's last day, as the whole build's do. Rows cost far more than
the replay of one event, so a few parts balanced by ``plan_parts`` cut the wall time nearly by the number of
workers while the earlier parts replay less. Each part is written to its own Parquet file under ``folder``
and a rerun (a lost worker, a killed job) builds only the parts that are missing.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.days import Progress
from data.errors import ConfigError
from data.io import write_parquet_atomic
from data.layout import DataLayout, EventKind
from features.block_attributes import BlockAttributes
from features.config import FeatureStoreSettings
from features.dataset import RetrievalReplay, build_training_set, empty_training_table, sampled_requests

if TYPE_CHECKING:
    from distributed import Client

    from features.embeddings.asof import DailyVectors

# What replaying one event costs beside building one impression's rows (shown page and candidates), and what
# each day of rows costs per event logged before it (its batch snapshot and the behavioural retriever are
# refitted on the whole history), measured on the small world's last day (benchmarks/bench_training_set.py):
# 362k events replayed in 13.5 s with their records, 2.3 s per day for the history, 0.65 ms per impression.
REPLAY_COST = 0.055
HISTORY_COST = 0.01
MIN_PART_GAIN = 0.05  # an extra part must cut the costliest part by this share
# Resident memory a part's worker reached on the small world (logs, replay state, retrieval with its JVM,
# rows): 11 GB for two workers. A local cluster runs no more parts at once than the free memory holds.
PART_MEMORY_BYTES = 6 * 10**9


def plan_parts(
    impressions: Sequence[int],
    events: Sequence[int],
    parts: int,
    replay_cost: float = REPLAY_COST,
    history_cost: float = HISTORY_COST,
    before: int = 0,
) -> list[tuple[int, int]]:
    """Contiguous day ranges (first, last index, inclusive) that minimise the costliest part.

    ``impressions[d]`` are the range's d-th day's impressions, ``events[d]`` every event logged up to the end
    of that day (what a part ending on it replays), ``before`` the events logged before the range. A part
    costs ``replay_cost * events[last] + sum(impressions) + history_cost * sum(history)``, where a day's
    history is what was logged up to the end of the range's day before it (a day without impressions in
    between is counted with the day after it).
    """
    days = len(impressions)
    if days == 0:
        return []
    parts = max(1, min(parts, days))
    prefix = [0.0]
    for d, n in enumerate(impressions):
        prefix.append(prefix[-1] + n + history_cost * (events[d - 1] if d else before))

    def cost(first: int, last: int) -> float:
        return replay_cost * events[last] + prefix[last + 1] - prefix[first]

    # best[k][j]: the smallest costliest part over days [0, j) cut into k parts; a plain DP (days are few).
    inf = float("inf")
    best = [[inf] * (days + 1) for _ in range(parts + 1)]
    cut = [[0] * (days + 1) for _ in range(parts + 1)]
    best[0][0] = 0.0
    for k in range(1, parts + 1):
        for j in range(k, days + 1):
            for i in range(k - 1, j):
                worst = max(best[k - 1][i], cost(i, j - 1))
                if worst < best[k][j]:
                    best[k][j], cut[k][j] = worst, i
    # Another part replays the history again and loads retrieval again: taken only for a real gain.
    k = 1
    while k < parts and best[k + 1][days] < (1 - MIN_PART_GAIN) * best[k][days]:
        k += 1
    ranges, j = [], days
    while k > 0:
        i = cut[k][j]
        ranges.append((i, j - 1))
        j, k = i, k - 1
    return ranges[::-1]


def build_training_set_on_engine(
    client: Client,
    layout: DataLayout,
    start: date,
    end: date,
    settings: FeatureStoreSettings,
    folder: Path,
    *,
    catalog: BlockAttributes | None = None,
    vectors: DailyVectors | None = None,
    retrieval: RetrievalReplay | None = None,
    candidates: int = 0,
    progress: Progress | None = None,
    max_parts: int | None = None,
    sample: float = 1.0,
) -> pa.Table:
    """``build_training_set`` over [start, end], one task per part on ``client``'s workers (at most
    ``max_parts`` parts); the parts' files stay in ``folder`` for a rerun (the caller removes it once the
    whole table is kept). ``sample``: the share of the requests whose rows are kept, as in
    ``build_training_set``."""
    from distributed import as_completed

    report = progress or (lambda stage, done, total: None)
    catalog = catalog or BlockAttributes.from_tables(layout.read_blocks(), layout.read_docs())
    days = [d for d in layout.days("impressions") if start <= d <= end]
    if not days:
        return empty_training_table()
    imps = _daily_counts(layout, "impressions", end)
    acts = _daily_counts(layout, "interactions", end)
    logged, through = 0, {}
    for d in sorted(set(imps) | set(acts)):
        logged += imps.get(d, 0) + acts.get(d, 0)
        through[d] = logged
    events = [through[d] for d in days]
    before = events[0] - imps.get(days[0], 0) - acts.get(days[0], 0)
    workers = max(1, len(client.scheduler_info()["workers"]))
    ranges = plan_parts(
        [imps.get(d, 0) * sample for d in days], events, min(workers, max_parts or workers), before=before
    )
    folder = folder.resolve()  # a remote worker resolves a relative path against its own directory
    folder.mkdir(parents=True, exist_ok=True)
    root = str(layout.root.resolve())
    runs: list[str] = []
    if retrieval is not None and len(ranges) > 1:
        # Parts share many queries: their text runs are computed once, split over the workers, and every
        # part reads them from files (it then loads no index or encoder of its own).
        runs = _shared_text_runs(client, layout, days[0], days[-1], retrieval, folder, workers, sample)
        report("training-set text runs", len(runs), len(runs))
    # Sent once, not pickled into every task: the catalogue and every day's M3 vectors are large.
    shared = client.scatter([catalog, vectors], broadcast=True, hash=False)
    futures = [
        client.submit(
            _build_part,
            root,
            days[first],
            days[last],
            end,
            settings,
            *shared,
            retrieval,
            runs,
            candidates,
            sample,
            str(folder / f"part_{days[first]}_{days[last]}{_sampled(sample)}.parquet"),
            pure=False,
        )
        for first, last in ranges
    ]
    try:
        for done, future in enumerate(as_completed(futures), start=1):
            future.result()  # a failed part fails the build now, not after the parts before it
            report("training-set parts", done, len(futures))
        paths = [future.result() for future in futures]
    finally:
        client.cancel(futures)  # on a failure, the other parts stop too (a rerun keeps what was written)
    for path in paths:
        if not os.path.isfile(path):
            raise ConfigError(
                f"the engine's workers wrote the training-set part {path} where this process cannot see it: "
                f"{folder} must be a folder the cluster's workers share at the same path"
            )
    return pa.concat_tables([pq.read_table(p) for p in paths])


def _shared_text_runs(
    client: Client,
    layout: DataLayout,
    start: date,
    end: date,
    retrieval: RetrievalReplay,
    folder: Path,
    shards: int,
    sample: float,
) -> list[str]:
    """The text runs of the range's (sampled) requests' queries, one file per worker's share (a file a rerun
    finds is kept)."""
    from distributed import wait

    imps = layout.read_events("impressions", start=start, end=end, validate_rows=False)
    if sample < 1.0:
        imps = imps.filter(sampled_requests(imps["request_id"].to_pylist(), sample))
    queries = sorted(pc.unique(imps["query"]).to_pylist())
    shards = max(1, min(shards, len(queries)))
    paths = [str(folder / f"text-runs-{i}-of-{shards}{_sampled(sample)}.parquet") for i in range(shards)]
    futures = [
        client.submit(_write_text_runs, retrieval, queries[i::shards], path, pure=False)
        for i, path in enumerate(paths)
    ]
    try:
        wait(futures)
        for future in futures:
            future.result()  # a failed share fails the build
    finally:
        client.cancel(futures)
    return paths


def _write_text_runs(retrieval: RetrievalReplay, queries: list[str], path: str) -> str:
    if not os.path.isfile(path):
        retrieval.write_text_runs(queries, Path(path))
    return path


def _sampled(sample: float) -> str:
    """A file name's mark of a sampled build: a rerun in the same folder with another share keeps none."""
    return "" if sample == 1.0 else f"_sample{sample!r}"


def _daily_counts(layout: DataLayout, kind: EventKind, end: date) -> dict[date, int]:
    return {d: layout.day_rows(kind, d) for d in layout.days(kind) if d <= end}


def _build_part(
    root: str,
    first: date,
    last: date,
    labels_through: date,
    settings: FeatureStoreSettings,
    catalog: BlockAttributes,
    vectors: DailyVectors | None,
    retrieval: RetrievalReplay | None,
    runs: list[str],
    candidates: int,
    sample: float,
    path: str,
) -> str:
    """One part's rows written to ``path`` (kept when a rerun finds it: parts are pure functions of the
    world and the settings, which name the folder)."""
    if os.path.isfile(path):
        return path
    if retrieval is not None and runs:
        retrieval.preload([Path(r) for r in runs])
    table = build_training_set(
        DataLayout(Path(root)),
        first,
        last,
        settings,
        catalog=catalog,
        vectors=vectors,
        retrieval=retrieval,
        candidates=candidates,
        labels_through=labels_through,
        sample=sample,
    )
    write_parquet_atomic(table, path)  # a part is whole or absent
    return path
