"""What running experiments costs a search request (not a timed test).

Micro: assigning a user under the example config (two layers and a holdback), a team-draft interleaving of
two 100-candidate rankings, and an exploration draw; baseline: one dict lookup of the user, the cheapest
conceivable "assignment".

With ``--world`` (a world prepared by ``smartblock quickstart``, plus the rankers the config names), the whole
in-process search pipeline is timed on the world's head queries, first without experiments (baseline), then
with the config: retrieval, features, ranking (two models on interleaved pages) and logging.

    python benchmarks/bench_experiments.py [--config experiments/example.yaml] [--world worlds/small] [--json]
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from serving.experiments.assignment import Assigner
from serving.experiments.config import load_config
from serving.experiments.interleaving import team_draft


def timed(fn: Callable[[int], object], n: int) -> dict[str, float]:
    lat = np.empty(n)
    started = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        lat[i] = time.perf_counter() - t
    total = time.perf_counter() - started
    return {
        "p50_us": round(float(np.percentile(lat, 50)) * 1e6, 2),
        "p99_us": round(float(np.percentile(lat, 99)) * 1e6, 2),
        "per_s": round(n / total, 1),
    }


def micro(config_path: Path, n: int) -> dict[str, dict[str, float]]:
    config, _ = load_config(config_path)
    assigner = Assigner(config, "bench")
    users = [f"user-{i}" for i in range(n)]
    table = {u: i for i, u in enumerate(users)}
    rng = np.random.default_rng(0)
    a = list(range(100))
    b = list(rng.permutation(100))
    out = {
        "baseline_dict_lookup": timed(lambda i: table[users[i]], n),
        "assign": timed(lambda i: assigner.assign(users[i]), n),
        "team_draft_k10_of_100": timed(lambda i: team_draft(a, b, 10, rng), n),
    }
    out["assign"]["x_baseline_p50"] = round(
        out["assign"]["p50_us"] / out["baseline_dict_lookup"]["p50_us"], 1
    )
    return out


def pipeline_run(world: Path, config_path: Path, requests: int) -> dict[str, dict[str, float]]:
    from data.layout import DataLayout
    from search.settings import get_settings
    from serving.config import ServingSettings
    from serving.runtime import Runtime, load_parts

    settings = get_settings()
    parts = load_parts(settings, world)
    imps = DataLayout(world).read_events("impressions", validate_rows=False)
    queries = [q for q, _ in Counter(imps["query"].to_pylist()).most_common(200)]
    users = [u for u, _ in Counter(imps["user_id"].to_pylist()).most_common(500)]
    rows: dict[str, dict[str, float]] = {}
    for name, path in (("no_experiments", None), ("with_config", config_path)):
        serving = ServingSettings(experiments_file=path, consume_events=False, model_poll_s=3600)
        runtime = Runtime.start(settings, serving, parts)
        try:
            pipe = runtime.pipeline
            for q in queries:  # warm the retrieval and encoder caches: the comparison is the ranking path
                pipe.search(q, users[0], 10)
            rows[name] = timed(
                lambda i, p=pipe: p.search(queries[i % len(queries)], users[i % len(users)], 10), requests
            )
        finally:
            runtime.stop()
    rows["with_config"]["x_baseline_p50"] = round(
        rows["with_config"]["p50_us"] / rows["no_experiments"]["p50_us"], 2
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("experiments/example.yaml"))
    parser.add_argument("--n", type=int, default=20_000, help="micro-benchmark calls")
    parser.add_argument("--world", type=Path, help="also time the in-process search pipeline on this world")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report: dict[str, object] = {"micro": micro(args.config, args.n)}
    if args.world:
        report["pipeline"] = pipeline_run(args.world, args.config, args.requests)
    if args.json:
        print(json.dumps(report, indent=2))
        return
    for section, rows in report.items():
        print(f"== {section}")
        for name, row in rows.items():  # type: ignore[union-attr]
            print(f"{name:28s} " + "  ".join(f"{k}={v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
