"""Training sets in day parts on a real local Dask cluster of 2 worker processes: row for row the
single-process build, each part built in a worker, a rerun builds only the parts that are missing, and a
worker killed mid-part (SIGKILL) costs a retry, not the table."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.engine import EngineSettings, engine_client
from data.errors import ConfigError
from data.layout import DataLayout
from features.config import FeatureStoreSettings
from features.dataset import build_training_set, sampled_requests
from features.dataset_parts import build_training_set_on_engine, plan_parts
from retrieval.query import normalise
from search.jobs.training import LazyReplay
from search.settings import Settings

if TYPE_CHECKING:
    from distributed import Client


def covers(ranges: list[tuple[int, int]], days: int) -> bool:
    flat = [d for first, last in ranges for d in range(first, last + 1)]
    return flat == list(range(days))


def test_parts_are_contiguous_and_balance_rows_against_replay() -> None:
    # Rows only: two equal halves.
    assert plan_parts([10, 10, 10, 10], [0, 0, 0, 0], 2, replay_cost=0.0) == [(0, 1), (2, 3)]
    # Replay counts: a later part replays more history, so it gets fewer days of rows.
    ranges = plan_parts([10] * 6, [100, 200, 300, 400, 500, 600], 2, replay_cost=0.1)
    assert covers(ranges, 6) and ranges[0][1] - ranges[0][0] > ranges[1][1] - ranges[1][0]
    # Never more parts than days, never an empty part; one worker or one day: one part.
    assert plan_parts([5, 7], [5, 12], 8) == [(0, 0), (1, 1)]
    assert plan_parts([5, 7, 9], [5, 12, 21], 1) == [(0, 2)]
    assert plan_parts([], [], 2) == []
    # A part that gains nothing (or next to nothing) is not taken: each one replays the history again.
    assert plan_parts([10, 0, 0, 0], [0, 0, 0, 0], 4, replay_cost=0.0) == [(0, 3)]
    assert plan_parts([1, 1, 1, 1], [10**6] * 4, 4, history_cost=0.0) == [(0, 3)]
    # Each day's rows also scan the history before it (batch snapshot, behavioural refit): with no replay
    # cost at all, the later days still cost more, so the later part gets fewer of them.
    ranges = plan_parts([10] * 6, [100, 200, 300, 400, 500, 600], 2, replay_cost=0.0, history_cost=0.1)
    assert covers(ranges, 6) and ranges == [(0, 3), (4, 5)]


def test_day_counts_and_label_range(build: Build) -> None:
    layout = build.layout
    for kind in ("impressions", "interactions"):
        for day, table in layout.iter_event_days(kind):
            assert layout.day_rows(kind, day) == table.num_rows
    with pytest.raises(ConfigError, match="labels through"):
        build_training_set(layout, build.start, build.end, build.features, labels_through=build.start)


@dataclass(frozen=True)
class Build:
    """The tiny world's days after the first, with BM25 + behavioural retrieval and 6 candidates per list."""

    layout: DataLayout
    start: date
    end: date
    features: FeatureStoreSettings
    replay: LazyReplay

    def on(self, client: Client, folder: Path, sample: float = 1.0) -> pa.Table:
        return build_training_set_on_engine(
            client,
            self.layout,
            self.start,
            self.end,
            self.features,
            folder,
            retrieval=self.replay,
            candidates=6,
            sample=sample,
        )


@pytest.fixture(scope="module")
def build(tiny_world: Path, base_settings: Settings, parts: object) -> Build:
    layout = DataLayout(tiny_world)  # `parts` built the retrieval indexes
    days = layout.days("impressions")
    return Build(layout, days[1], days[-1], base_settings.features, LazyReplay(base_settings, tiny_world))


@pytest.fixture(scope="module")
def single(build: Build) -> pa.Table:
    """The in-process build: what every engine build must equal."""
    table = build_training_set(
        build.layout, build.start, build.end, build.features, retrieval=build.replay, candidates=6
    )
    assert table.num_rows > 0 and (table["position"].to_numpy() == 0).any()
    return table


def requests_of(table: pa.Table, share: float) -> pa.Table:
    """``table``'s rows of the requests a sample of ``share`` keeps."""
    ids = sorted(set(table["request_id"].to_pylist()))
    kept = [r for r, keep in zip(ids, sampled_requests(ids, share), strict=True) if keep]
    assert 0.3 * len(ids) < len(kept) < 0.7 * len(ids)
    return table.filter(pc.is_in(table["request_id"], value_set=pa.array(kept, pa.string())))


def test_a_sample_of_requests_keeps_the_whole_builds_rows_of_them(build: Build, single: pa.Table) -> None:
    """Sampled requests are replayed with every event: their rows (features, candidates, labels) are those
    of the whole build, and only theirs."""
    sampled = build_training_set(
        build.layout, build.start, build.end, build.features, retrieval=build.replay, candidates=6, sample=0.5
    )
    assert sampled.equals(requests_of(single, 0.5))


def test_rows_computed_many_requests_at_once_equal_rows_computed_alone(
    build: Build, single: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The replay computes its requests' rows in chunks (``compute_many``); one request per chunk, as
    serving computes them, gives the same table, bit for bit."""
    import features.dataset

    monkeypatch.setattr(features.dataset, "COMPUTE_CHUNK", 1)
    alone = build_training_set(
        build.layout, build.start, build.end, build.features, retrieval=build.replay, candidates=6
    )
    assert alone.equals(single)


def test_text_runs_read_from_files_answer_as_searched(build: Build, tmp_path: Path) -> None:
    """A replay that reads the text members' runs from a file answers as one that searched them, without
    loading their indexes; a query with no run on file loads the members and is searched."""
    settings, world = build.replay.settings, build.replay.world
    imps = build.layout.read_events("impressions", validate_rows=False)
    queries = sorted(set(imps["query"].to_pylist()))
    ts = imps["ts"].cast(pa.int64()).to_pylist()[-1]
    half, rest = queries[::2], queries[1::2]
    path = tmp_path / "runs.parquet"
    LazyReplay(settings, world).write_text_runs(half, path)
    searched = LazyReplay(settings, world)
    reading = LazyReplay(settings, world)
    reading.preload([path])
    reading.warm(half)
    text = [m for name, m in reading._loaded().fused.members.items() if name != "behavioural"]
    assert text and not any(m.is_built for m in text)  # nothing loaded: every run came from the file
    for q in half[:20]:
        assert reading.search(q, ts) == searched.search(q, ts)
    reading.warm(rest[:5])
    assert all(m.is_built for m in text)
    for q in rest[:5]:
        assert reading.search(q, ts) == searched.search(q, ts)


def test_two_workers_build_the_single_process_table(build: Build, single: pa.Table, tmp_path: Path) -> None:
    from distributed import get_task_stream

    folder = tmp_path / "parts"
    with engine_client(EngineSettings(workers=2)) as client:
        with get_task_stream(client) as stream:
            built = build.on(client, folder)
        # Each part ran in its own worker process: a single-process fallback would show one or none. (The
        # text runs before them run on both workers too: only the parts' tasks count here.)
        parts = [task for task in stream.data if _is_part(task["key"])]
        assert len(parts) == 2 and len({task["worker"] for task in parts}) == 2
        assert built.equals(single)
        files = sorted(folder.glob("part_*.parquet"))
        assert len(files) == 2

        # A lost part (a killed worker, a deleted file) is all a rerun builds: the other stays as it was.
        kept, lost = files
        stamp = kept.stat().st_mtime_ns
        lost.unlink()
        again = build.on(client, folder)
        assert again.equals(single)
        assert kept.stat().st_mtime_ns == stamp and lost.is_file()

        # A sample of the requests, in two parts: their rows, and the text runs of their queries only.
        sampled = tmp_path / "sampled"
        wanted = requests_of(single, 0.5)
        assert build.on(client, sampled, sample=0.5).equals(wanted)
        assert len(list(sampled.glob("part_*_sample0.5.parquet"))) == 2
        runs = pa.concat_tables([pq.read_table(p) for p in sampled.glob("text-runs-*_sample0.5.parquet")])
        assert set(runs["query"].to_pylist()) == {normalise(q) for q in wanted["query"].to_pylist()}


def test_a_worker_killed_mid_part_is_retried(build: Build, single: pa.Table, tmp_path: Path) -> None:
    with engine_client(EngineSettings(workers=2)) as client:
        pids = client.run(os.getpid)
        out: dict[str, object] = {}

        def run() -> None:
            out["table"] = build.on(client, tmp_path / "parts")

        job = threading.Thread(target=run)
        job.start()
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy and time.monotonic() < deadline:  # a part, not the text runs before the parts
            busy = [w for w, keys in client.processing().items() if any(_is_part(k) for k in keys)]
            time.sleep(0.05)
        assert busy, "no part started within 120 s"
        time.sleep(0.5)  # into the part: loading its logs and retrieval
        assert any(_is_part(k) for k in client.processing()[busy[0]]), "the part finished before the kill"
        os.kill(pids[busy[0]], signal.SIGKILL)
        job.join(timeout=300)
        assert not job.is_alive()
        assert pids[busy[0]] not in client.run(os.getpid).values()  # the nanny started a new worker
        assert out["table"].equals(single)  # type: ignore[union-attr]
        assert len(list((tmp_path / "parts").glob("part_*.parquet"))) == 2


def _is_part(key: object) -> bool:
    return str(key).startswith("_build_part")
