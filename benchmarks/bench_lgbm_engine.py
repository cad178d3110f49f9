"""LightGBM LambdaMART in one process against ``lightgbm.dask`` on the engine's workers, on the same lists:

    python benchmarks/bench_lgbm_engine.py [--world DIR | --scale tiny] [--days N] [--trees 200]
        [--rounds 3] [--workers 2] [--json]

The lists are those of bench_ddp_training.py (the world's logged pages of its days after the first, the last
day validating). Runs, alternated ``--rounds`` times: one process on 1 thread, one process on every core,
the engine with 1 worker and the engine with ``--workers`` workers, of 1 thread each (issue 16 compares the
engine's 2 workers with its 1; each cluster is started once and kept warm; their start is reported apart).
Every fit trains exactly ``--trees`` trees (no early stopping: the same work each time). Printed per run: p50
and p99 wall seconds of a fit (the engine's include shipping the lists to the workers), rows/s through
training, validation NDCG@10, the ratios to the 1-thread process and to the 1-worker engine, and LightGBM's
own count of machines in its network (a single-process fallback has none).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time
from typing import Any

import numpy as np
from bench_ddp_training import add_world_arguments, lists_for  # the torch rankers' lists

from data.engine import EngineSettings, engine_client
from data.threads import all_cores
from ranking.dataset import ListwiseData
from ranking.evaluate import evaluate_scores
from ranking.lgbm import LightGBMRanker


def fit(train: ListwiseData, valid: ListwiseData, trees: int, threads: int, client: Any = None) -> dict:
    started = time.perf_counter()
    ranker = LightGBMRanker(n_estimators=trees, threads=threads).fit(train, client=client)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "valid_ndcg@10": evaluate_scores(valid, ranker.score(valid), ks=(10,))["ndcg@10"],
        "machines": (ranker.info_.get("engine") or {}).get("machines"),
    }


def summarise(runs: list[dict], rows: int, reference: float | None) -> dict:
    seconds = [r["seconds"] for r in runs]
    p50 = statistics.median(seconds)
    return {
        "seconds_p50": round(p50, 3),
        "seconds_p99": round(float(np.percentile(seconds, 99)), 3),
        "rows_per_s": round(rows / p50, 1),
        "valid_ndcg@10": sorted({round(r["valid_ndcg@10"], 4) for r in runs}),
        "machines": runs[-1]["machines"],
        "speed_vs_1_thread": round(reference / p50, 2) if reference else 1.0,
    }


def with_ratio_to(report: dict[str, dict], base: str) -> None:
    """Adds each run's speed against the ``base`` run (its p50)."""
    for row in report.values():
        row["speed_vs_engine_1_worker"] = round(report[base]["seconds_p50"] / row["seconds_p50"], 2)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_world_arguments(parser)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    train, valid, build_s = lists_for(args)
    cores = all_cores()
    one, many = "engine, 1 worker x 1 thread", f"engine, {args.workers} workers x 1 thread"
    names = ["1 process, 1 thread", f"1 process, {cores} threads", one, many]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    started = time.perf_counter()
    with (
        engine_client(EngineSettings(workers=1)) as single,
        engine_client(EngineSettings(workers=args.workers)) as client,
    ):
        cluster_s = time.perf_counter() - started
        for warm in (single, client):  # the workers import LightGBM and the ranking code once
            fit(train, valid, 2, 1, warm)
        for _ in range(args.rounds):
            runs[names[0]].append(fit(train, valid, args.trees, 1))
            runs[names[1]].append(fit(train, valid, args.trees, cores))
            runs[names[2]].append(fit(train, valid, args.trees, 1, single))
            runs[names[3]].append(fit(train, valid, args.trees, 1, client))
    reference = statistics.median(r["seconds"] for r in runs[names[0]])
    report = {
        "world": str(args.world or f"generated {args.scale}"),
        "train_lists": train.n_lists,
        "train_rows": train.n_rows,
        "valid_lists": valid.n_lists,
        "lists_build_s": round(build_s, 1),
        "trees": args.trees,
        "rounds": args.rounds,
        "cluster_start_s": round(cluster_s, 2),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "runs": {name: summarise(rs, train.n_rows, reference) for name, rs in runs.items()},
    }
    with_ratio_to(report["runs"], one)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['world']}: {train.n_lists} training lists ({train.n_rows} rows), {valid.n_lists} "
        f"validation lists; {args.trees} trees x {args.rounds} rounds; cluster start {cluster_s:.1f} s; "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"{'run':32s} {'p50 s':>8s} {'p99 s':>8s} {'rows/s':>10s} {'ratio':>6s} {'vs 1w':>6s} "
        f"{'machines':>8s}  NDCG@10"
    )
    for name, row in report["runs"].items():
        print(
            f"{name:32s} {row['seconds_p50']:8.2f} {row['seconds_p99']:8.2f} {row['rows_per_s']:10.0f} "
            f"{row['speed_vs_1_thread']:6.2f} {row['speed_vs_engine_1_worker']:6.2f} "
            f"{row['machines']!s:>8s}  {row['valid_ndcg@10']}"
        )


if __name__ == "__main__":
    main()
