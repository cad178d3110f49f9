"""Point-in-time training sets (what `train ranker` and quickstart build) in this process and in day parts on
the engine (a local Dask cluster of 1 and of N workers):

    python benchmarks/bench_training_set.py --world worlds/small [--days 0] [--workers 2] [--sample S]
        [--json]

The range is the world's training range as quickstart plans it (the days after warmup; ``--days N``: the last
N of them), with the settings' retrieval replay and candidates (``ranking.world``), as `train ranker` builds
it. Each run builds the table from nothing (no cache) and prints its wall seconds, impressions and rows per
second, the ratio to the in-process run and to the 1-worker engine run (both in this process, one after the
other), the peak resident memory of this process and its children (sampled every 0.2 s), and, for engine
runs, the parts and when the first (earliest days) was done: near the total when ``plan_parts`` balanced
them. Every run's table is checked equal to the in-process one. A batch job has no request latency: its
p50/p99 are the parts'. ``--sample S`` keeps the rows of that share of the requests (what
``ranking.world.max_requests`` does to a longer range): the replay is then a larger share of the work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.compute as pc

from data.engine import EngineSettings, engine_client
from data.layout import DataLayout
from data.threads import all_cores
from features.dataset import build_training_set
from features.dataset_parts import build_training_set_on_engine
from ranking.world import day_split
from search.jobs.training import LazyReplay
from search.settings import load_settings


class PeakMemory:
    """Peak RSS (bytes) of this process and its children while the block runs."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()

    def _sample(self) -> None:
        me = psutil.Process()
        while not self._stop.wait(0.2):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):  # a child that just exited
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def timed(build: Callable[[], pa.Table]) -> tuple[pa.Table, float, int]:
    with PeakMemory() as memory:
        started = time.perf_counter()
        table = build()
        seconds = time.perf_counter() - started
    return table, seconds, memory.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--days", type=int, default=0, help="The last N days of the training range; 0: all.")
    parser.add_argument("--workers", type=int, default=0, help="Workers of the larger cluster; 0: all cores.")
    parser.add_argument("--sample", type=float, default=1.0, help="Share of requests kept.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("distributed").setLevel(logging.ERROR)

    settings = load_settings()
    world = settings.ranking.world
    layout = DataLayout(args.world)
    split = day_split(layout, world)
    days = [d for d in layout.days("impressions") if split.first <= d <= split.last]
    days = days[-args.days :] if args.days else days
    start, end = days[0], days[-1]
    workers = args.workers or all_cores()
    build = {"features": settings.features, "candidates": world.candidates if world.relevance else 0}
    if not 0 < args.sample <= 1:
        raise SystemExit(f"--sample must be in (0, 1], got {args.sample}")

    def replay() -> LazyReplay | None:  # a fresh one per run: each run loads and warms its own
        return LazyReplay(settings, args.world) if world.relevance else None

    runs: dict[str, dict] = {}
    reference, seconds, peak = timed(
        lambda: build_training_set(
            layout,
            start,
            end,
            build["features"],
            retrieval=replay(),
            candidates=build["candidates"],
            sample=args.sample,
        )
    )
    runs["in-process"] = {"seconds": seconds, "peak_rss_gb": peak / 1e9}
    for n in (1, workers):
        parts: list[float] = []
        with tempfile.TemporaryDirectory(prefix="bench-parts-") as folder:

            def on_engine(n: int = n, folder: str = folder, parts: list[float] = parts) -> pa.Table:
                with engine_client(EngineSettings(workers=n)) as client:
                    table = build_training_set_on_engine(
                        client,
                        layout,
                        start,
                        end,
                        build["features"],
                        Path(folder),
                        retrieval=replay(),
                        candidates=build["candidates"],
                        progress=lambda stage, done, total: parts.append(time.perf_counter()),
                        sample=args.sample,
                    )
                return table

            began = time.perf_counter()
            table, seconds, peak = timed(on_engine)
        if not table.equals(reference):
            raise SystemExit(f"engine {n} worker(s): the table differs from the in-process build")
        runs[f"engine {n} worker{'s' if n > 1 else ''}"] = {
            "seconds": seconds,
            "peak_rss_gb": peak / 1e9,
            "parts": len(parts),
            "first_part_done_s": (parts[0] - began) if parts else 0.0,
        }
    impressions = pc.count_distinct(reference["request_id"]).as_py()
    base, one = runs["in-process"]["seconds"], runs["engine 1 worker"]["seconds"]
    report = {
        name: {
            **{k: round(v, 2) if isinstance(v, float) else v for k, v in run.items()},
            "impressions_per_s": round(impressions / run["seconds"], 1),
            "rows_per_s": round(reference.num_rows / run["seconds"], 1),
            "ratio_to_in_process": round(base / run["seconds"], 2),
            "ratio_to_1_worker": round(one / run["seconds"], 2),
        }
        for name, run in runs.items()
    }
    summary = {
        "world": str(args.world),
        "days": f"{start}..{end} ({len(days)})",
        "impressions": impressions,
        "rows": reference.num_rows,
        "candidates": build["candidates"],
        "sample": args.sample,
        "cores": all_cores(),
        "runs": report,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{args.world}: days {summary['days']}, {impressions:,} impressions, {reference.num_rows:,} rows")
    for name, run in report.items():
        print(
            f"  {name:<18} {run['seconds']:8.1f} s  {run['impressions_per_s']:7.1f} imp/s  "
            f"{run['rows_per_s']:9.1f} rows/s  x{run['ratio_to_in_process']:.2f} vs in-process  "
            f"x{run['ratio_to_1_worker']:.2f} vs 1 worker  peak {run['peak_rss_gb']:.1f} GB"
        )


if __name__ == "__main__":
    main()
