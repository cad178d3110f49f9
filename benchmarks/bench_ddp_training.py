"""DCN-V2 training in one process against data-parallel ranks on the engine (one torch.distributed rank per
Dask worker, gloo), or DASALC-ens in one process against a member per worker task, on the same lists and
machine:

    python benchmarks/bench_ddp_training.py [--world DIR | --scale tiny] [--days N] [--epochs 5] [--rounds 3]
        [--ranks 2] [--model dcn|dasalc-ens] [--members 4] [--json]

Without ``--world`` a world of ``--scale`` (default tiny, seed 7) is generated into a temporary folder. The
lists are the world's logged pages (``features.dataset.build_training_set``) of its days after the first
(``--days N``: the first N of those), except the last, which validates; the world's torch settings train
DCN-V2 for exactly ``--epochs`` epochs (patience = epochs: no early stop, every run does the same work).
Runs, alternated ``--rounds`` times: one process on 1 torch thread, one process on every core, and the
engine with ``--ranks`` workers of 1 thread each (the cluster is started once and kept warm; its start is
reported apart). An epoch's time counts its steps and its validation; the engine's overhead is the wall
time of a fit outside its epochs (shipping the lists, rendezvous, returning the weights). Printed: p50 epoch
seconds (median over the rounds of each run's median epoch), lists/s through training, validation NDCG@10,
and the ratio to the 1-thread process; and the load average before and after (the machine may be shared).

With ``--model dasalc-ens`` each of the ``--members`` members trains ``--epochs`` epochs; a run's "epoch"
is then its whole fit's wall time over members x epochs (what the ensemble pays per member-epoch), so the
ratio is the ratio of the fits' wall times, cluster overhead included.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from data.engine import EngineSettings, engine_client
from data.layout import DataLayout
from data.threads import all_cores
from data.world.generate import generate_world
from features.config import FeatureStoreSettings
from features.dataset import build_training_set
from ranking.config import RankingSettings
from ranking.dataset import ListwiseData
from ranking.ensemble import DASALCEnsembleRanker
from ranking.torch_rankers import DCNRanker
from ranking.world import to_listwise


def world_lists(world: Path, days: int) -> tuple[ListwiseData, ListwiseData]:
    """(train, valid): the logged pages of the days after the first (at most ``days`` of them, 0: all) but
    the last, and of the last day."""
    layout = DataLayout(world)
    logged = layout.days("impressions")
    if len(logged) < 3:
        raise SystemExit(f"{world} has {len(logged)} logged days; 3 or more are needed")
    train_days = logged[1:-1][: days or None]
    features = FeatureStoreSettings()
    train = to_listwise(build_training_set(layout, train_days[0], train_days[-1], features)).data
    valid = to_listwise(build_training_set(layout, logged[-1], logged[-1], features)).data
    return train, valid


def candidate_lists(world: Path) -> tuple[ListwiseData, ListwiseData]:
    """(train, valid) as `smartblock train ranker` builds them on ``world`` under the settings (their
    defaults, SMARTBLOCK_* variables and SMARTBLOCK_CONFIG)."""
    from search.jobs.training import world_source
    from search.settings import load_settings

    source = world_source(load_settings(), world)
    return source.lists(source.split.train).data, source.lists(source.split.valid).data


def add_world_arguments(parser: argparse.ArgumentParser) -> None:
    """``--world``, ``--scale``, ``--days``: where ``lists_for`` takes its lists (bench_lgbm_engine too)."""
    parser.add_argument("--world", type=Path, help="World folder (default: --scale generated in a temp dir).")
    parser.add_argument("--scale", default="tiny", help="Scale of the generated world (without --world).")
    parser.add_argument("--days", type=int, default=0, help="Training days (0: every day but first/last).")
    parser.add_argument(
        "--candidates",
        action="store_true",
        help="With --world: the lists `train ranker` trains on (its day split, each shown page with its "
        "unshown retrieval candidates, from the cached training set); --days is then unused.",
    )


def lists_for(args: argparse.Namespace) -> tuple[ListwiseData, ListwiseData, float]:
    """(train, valid, seconds to build them) from ``args.world``, or a world of ``args.scale`` (seed 7)
    generated into a temporary folder."""
    if getattr(args, "candidates", False):
        if args.world is None:
            raise SystemExit("--candidates needs --world (a world with its indexes built)")
        started = time.perf_counter()
        train, valid = candidate_lists(args.world)
        return train, valid, time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="bench-lists-") as scratch:
        world = args.world
        if world is None:
            world = Path(scratch) / args.scale
            generate_world(world, scale=args.scale, seed=7)
        started = time.perf_counter()
        train, valid = world_lists(world, args.days)
        return train, valid, time.perf_counter() - started


def fit(
    train: ListwiseData,
    valid: ListwiseData,
    epochs: int,
    threads: int,
    client: Any = None,
    members: int = 0,
) -> dict:
    """One fit of DCN-V2 (``members`` 0) or of a DASALC ensemble of ``members``, for exactly ``epochs``."""
    cfg = RankingSettings().world.train.model_copy(update={"max_epochs": epochs, "patience": epochs})
    started = time.perf_counter()
    if members:
        ens = DASALCEnsembleRanker(n_members=members, train=cfg, threads=threads)
        ens.fit(train, valid, client=client)
        wall = time.perf_counter() - started
        infos = ens.info_["members"]
        per_member_epoch = wall / (members * epochs)
        busy: dict[str, float] = {}
        for info in infos:
            where = info["engine"]["worker"] if client is not None else "here"
            busy[where] = busy.get(where, 0.0) + info["seconds"]
        return {
            "epoch_s": per_member_epoch,
            "lists_per_s": infos[0]["train_lists"] / per_member_epoch,
            "valid": "; ".join(
                next(f"{k} {v}" for k, v in info.items() if k.startswith("valid_")) for info in infos
            ),
            # Beyond the busiest process's members' own fits (this one's in process).
            "overhead_s": wall - max(busy.values()),
            "allreduce_s": None,
            "engine": {"pids": sorted({i["engine"]["pid"] for i in infos})} if client is not None else None,
        }
    ranker = DCNRanker(train=cfg, threads=threads).fit(train, valid, client=client)
    wall = time.perf_counter() - started
    info = ranker.info_
    return {
        "epoch_s": info["epoch_seconds_p50"],
        "lists_per_s": info["train_lists"] / info["epoch_seconds_p50"],
        # The stopping metric names the key (valid_ndcg@10, valid_pa_ndcg@10, valid_loss: ranking.nn.train).
        "valid": next(f"{k} {v}" for k, v in info.items() if k.startswith("valid_")),
        "overhead_s": wall - info["seconds"],
        "allreduce_s": info.get("allreduce_seconds_per_epoch"),
        "engine": info.get("engine"),
    }


def summarise(runs: list[dict], reference: float | None) -> dict:
    epoch_s = statistics.median(r["epoch_s"] for r in runs)
    return {
        "epoch_s_p50": round(epoch_s, 4),
        "epoch_s_runs": [round(r["epoch_s"], 4) for r in runs],
        "lists_per_s": round(statistics.median(r["lists_per_s"] for r in runs), 1),
        "valid": [r["valid"] for r in runs],
        "overhead_s_p50": round(statistics.median(r["overhead_s"] for r in runs), 3),
        "allreduce_s_per_epoch": [r["allreduce_s"] for r in runs],
        "speed_vs_1_thread": round(reference / epoch_s, 2) if reference else 1.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_world_arguments(parser)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ranks", type=int, default=2, help="Engine workers (ranks for DCN-V2).")
    parser.add_argument("--model", choices=("dcn", "dasalc-ens"), default="dcn")
    parser.add_argument("--members", type=int, default=4, help="With --model dasalc-ens: its members.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.model == "dasalc-ens" and args.members < 1:
        parser.error("--members must be at least 1")
    logging.getLogger("distributed").setLevel(logging.ERROR)
    load_before = os.getloadavg()
    train, valid, build_s = lists_for(args)
    runs: dict[str, list[dict]] = {"1 process, 1 thread": [], f"1 process, {all_cores()} threads": []}
    members = args.members if args.model == "dasalc-ens" else 0
    unit = "workers" if members else "ranks"
    engine_name = f"engine, {args.ranks} {unit} x 1 thread"
    runs[engine_name] = []
    started = time.perf_counter()
    with engine_client(EngineSettings(workers=args.ranks)) as client:
        cluster_s = time.perf_counter() - started
        # Warm-up: the workers import torch and the ranking code once.
        fit(train, valid, 1, 1, client, min(members, args.ranks))
        for _ in range(args.rounds):
            runs["1 process, 1 thread"].append(fit(train, valid, args.epochs, 1, None, members))
            runs[f"1 process, {all_cores()} threads"].append(
                fit(train, valid, args.epochs, all_cores(), None, members)
            )
            runs[engine_name].append(fit(train, valid, args.epochs, 1, client, members))
    reference = statistics.median(r["epoch_s"] for r in runs["1 process, 1 thread"])
    report = {
        "world": str(args.world or f"generated {args.scale}"),
        "model": args.model if not members else f"dasalc-ens of {members}",
        "train_lists": train.n_lists,
        "train_rows": train.n_rows,
        "valid_lists": valid.n_lists,
        "lists_build_s": round(build_s, 1),
        "epochs": args.epochs,
        "rounds": args.rounds,
        "cluster_start_s": round(cluster_s, 2),
        "engine_pids": runs[engine_name][-1]["engine"]["pids"],
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "runs": {name: summarise(rs, reference) for name, rs in runs.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"{report['model']} on {report['world']}: {train.n_lists} training lists ({train.n_rows} rows), "
        f"{valid.n_lists} validation lists; {args.epochs} epochs x {args.rounds} rounds; "
        f"cluster start {cluster_s:.1f} s; "
        f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after"
    )
    print(
        f"{'run':<32} {'epoch s p50':>12} {'lists/s':>9} {'vs 1 thread':>12} {'overhead s':>11} "
        f"{'all_reduce s/epoch':>19}  validation"
    )
    for name, row in report["runs"].items():
        ndcg = "; ".join(row["valid"])
        waited = " ".join(f"{v:.3f}" for v in row["allreduce_s_per_epoch"] if v is not None) or "-"
        print(
            f"{name:<32} {row['epoch_s_p50']:>12.4f} {row['lists_per_s']:>9.0f} "
            f"{row['speed_vs_1_thread']:>12.2f} {row['overhead_s_p50']:>11.2f} {waited:>19}  {ndcg}"
        )


if __name__ == "__main__":
    main()
