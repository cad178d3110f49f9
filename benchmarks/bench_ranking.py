"""Ranker benchmark: training throughput (lists/s) and inference latency for one list of 100 blocks.

Every model, including the linear baseline, runs in the same process on the same synthetic lists (the
shapes of a world impression: dense features, one categorical id, user and block vectors), so numbers are
comparable with each other. Goal: p50 <= 2 ms for DCN and DASALC scoring 100 blocks on one thread.

    python benchmarks/bench_ranking.py [--lists 2000] [--features 64] [--threads 1] [--models dcn] [--json]

``dasalc-ens-ltr`` is dasalc-ens with the LTR defaults of ``RankingSettings.dasalc`` (rank-Gauss inputs,
``ensemble_size`` members); ``--features 300`` gives the width of the LightGBM example data.

With ``--world DIR`` training throughput is measured on that world's real training days instead (the
point-in-time training set, cached under the world folder): impressions/s = impressions of the training
days x epochs / seconds (impressions without a click carry no listwise signal and are skipped by the torch
models, but they are part of the logs a day of training must get through).

    python benchmarks/bench_ranking.py --world /tmp/w_small_rank --epochs 2 --threads 2 [--json]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ranking.config import RankingSettings, TorchTrainSettings
from ranking.dataset import ListwiseData
from ranking.ensemble import DASALCEnsembleRanker
from ranking.lgbm import LightGBMRanker
from ranking.torch_rankers import DASALCRanker, DCNRanker, LinearRanker, MLPRanker


def synthetic(n_lists: int, list_size: int, n_features: int, seed: int) -> ListwiseData:
    rng = np.random.default_rng(seed)
    n = n_lists * list_size
    dense = rng.normal(size=(n, n_features)).astype(np.float32)
    user = np.repeat(rng.normal(size=(n_lists, 32)), list_size, axis=0).astype(np.float32)
    block = rng.normal(size=(n, 32)).astype(np.float32)
    utility = dense[:, 0] + dense[:, 1] * dense[:, 2] + 0.3 * (user * block).sum(1) + rng.normal(size=n)
    return ListwiseData(
        dense=dense,
        labels=(utility > np.quantile(utility, 0.85)).astype(np.float32),  # clicks
        offsets=np.arange(0, n + 1, list_size),
        feature_names=tuple(f"f{i}" for i in range(n_features)),
        weights=rng.uniform(1.0, 3.0, size=n),  # inverse propensities
        categorical=rng.integers(0, 100, size=(n, 1)),
        cardinalities=(100,),
        vectors={"user": user, "block": block},
    )


def world_throughput(world: str, threads: int, epochs: int, max_lists: int | None) -> dict:
    """Impressions/s of every model trained for ``epochs`` fixed epochs on a world's training days."""
    from ranking.world import WorldSource
    from search.settings import Settings

    settings = Settings()
    ranking = RankingSettings()
    source = WorldSource(world, ranking.world, settings.features)
    train = source.lists(source.split.train).data
    if max_lists is not None and max_lists < train.n_lists:
        train = train.subset(np.arange(max_lists))
    cfg = ranking.world.train.model_copy(update={"max_epochs": epochs, "valid_fraction": 0.0})
    models = {
        "linear": LinearRanker(train=cfg, threads=threads),
        "mlp": MLPRanker(train=cfg, threads=threads),
        "dcn": DCNRanker(train=cfg, threads=threads),
        "dasalc": DASALCRanker(train=cfg, threads=threads),
        "lgbm": LightGBMRanker(n_estimators=100, early_stopping_rounds=None, threads=threads),
    }
    rows = {}
    for name, ranker in models.items():
        started = time.perf_counter()
        ranker.fit(train)
        seconds = time.perf_counter() - started
        passes = 1 if name == "lgbm" else epochs
        rows[name] = {
            "impressions_per_s": round(train.n_lists * passes / seconds, 1),
            "train_seconds": round(seconds, 2),
        }
    return {
        "setup": {
            "world": world,
            "train_days": source.split.to_json()["train"],
            "impressions": train.n_lists,
            "rows": train.n_rows,
            "features": len(train.feature_names),
            "epochs": epochs,
            "lists_per_batch": cfg.lists_per_batch,
            "threads": threads,
        },
        "models": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lists", type=int, default=2000, help="training lists (impressions) of 8 blocks")
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=300, help="timed inference calls per model")
    parser.add_argument("--models", default=None, help="comma-separated subset of the models (default: all)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--world", help="measure training throughput on this world's training days instead")
    parser.add_argument("--epochs", type=int, default=2, help="with --world: fixed epochs per torch model")
    parser.add_argument("--max-lists", type=int, default=None, help="with --world: first N impressions only")
    args = parser.parse_args()
    if args.world:
        report = world_throughput(args.world, args.threads, args.epochs, args.max_lists)
        if args.json:
            print(json.dumps(report, indent=2))
            return
        print(f"setup: {report['setup']} (lgbm: impressions/s over its 100 trees, one pass)")
        print(f"{'model':<12}{'impressions/s':>16}{'train s':>10}")
        for name, r in report["models"].items():
            print(f"{name:<16}{r['impressions_per_s']:>16}{r['train_seconds']:>10}")
        return

    train = synthetic(args.lists, 8, args.features, seed=0)
    one_list = synthetic(1, 100, args.features, seed=1)
    # A fixed number of epochs without early stopping, so throughput measures the same work for every model.
    cfg = TorchTrainSettings(max_epochs=3, valid_fraction=0.0, lists_per_batch=64)
    ltr = RankingSettings()
    models = {
        "linear": LinearRanker(train=cfg, threads=args.threads),
        "mlp": MLPRanker(train=cfg, threads=args.threads),
        "dcn": DCNRanker(train=cfg, threads=args.threads),
        "dasalc": DASALCRanker(train=cfg, threads=args.threads),
        "dasalc-ens": DASALCEnsembleRanker(n_members=5, train=cfg, threads=args.threads),
        "dasalc-ens-ltr": DASALCEnsembleRanker(
            n_members=ltr.ensemble_size, **ltr.dasalc.model_dump(), train=cfg, threads=args.threads
        ),
        "lgbm": LightGBMRanker(n_estimators=100, threads=args.threads),
    }
    if args.models:
        wanted = args.models.split(",")
        unknown = sorted(set(wanted) - set(models))
        if unknown:
            parser.error(f"unknown models {unknown}; choose from {', '.join(models)}")
        models = {name: models[name] for name in wanted}
    rows = {}
    for name, ranker in models.items():
        started = time.perf_counter()
        ranker.fit(train)
        seconds = time.perf_counter() - started
        epochs = 1 if name == "lgbm" else cfg.max_epochs * getattr(ranker, "n_members", 1)
        for _ in range(20):  # warm up allocators and caches
            ranker.score(one_list)
        latencies = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            ranker.score(one_list)
            latencies.append((time.perf_counter() - t) * 1e3)
        rows[name] = {
            "train_lists_per_s": round(train.n_lists * epochs / seconds, 1),
            "train_seconds": round(seconds, 2),
            "score_100_p50_ms": round(float(np.percentile(latencies, 50)), 3),
            "score_100_p99_ms": round(float(np.percentile(latencies, 99)), 3),
        }
    meta = {"lists": args.lists, "list_size": 8, "features": args.features, "threads": args.threads}
    if args.json:
        print(json.dumps({"setup": meta, "models": rows}, indent=2))
        return
    print(f"setup: {meta} (lgbm: lists/s over its 100 trees, one pass)")
    print(f"{'model':<16}{'lists/s':>12}{'train s':>10}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in rows.items():
        print(
            f"{name:<16}{r['train_lists_per_s']:>12}{r['train_seconds']:>10}"
            f"{r['score_100_p50_ms']:>10}{r['score_100_p99_ms']:>10}"
        )


if __name__ == "__main__":
    main()
