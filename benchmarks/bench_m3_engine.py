"""M3 training in this process against data-parallel on the engine (a local Dask cluster of N workers: one
torch.distributed rank per host on every worker's thread, the default, or one rank per worker), on a world's
real histories, for a fixed number of epochs:

    python benchmarks/bench_m3_engine.py --world worlds/small [--epochs 2] [--workers 2] [--sparse] [--json]

Each run prints its seconds per epoch, training examples per second, its ratios to the in-process run with
``embeddings.threads`` torch threads (as `train user-embeddings` runs without an engine) and to the engine's
1-worker run, the seconds the ranks spent summing gradients, and the validation recall@10 of the last epoch
(the same recipe should land close). All run in this process, one after the other; the in-process run on
every core too (an engine worker has one thread). Per-epoch p50/p99 are over the epochs.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from data.days import split_days
from data.engine import EngineSettings, engine_client
from data.layout import DataLayout
from data.threads import all_cores, torch_threads
from data.torch_ranks import RankPlacement
from features.embeddings.config import EmbeddingSettings
from features.embeddings.ddp import fit_on_engine
from features.embeddings.evaluate import held_out_targets
from features.embeddings.pipeline import vocabulary
from features.embeddings.sequences import build_sequences
from features.embeddings.train import TrainReport, fit


def _summary(report: TrainReport, seconds: float, extra: dict) -> dict:
    per_epoch = [seconds / max(report.epochs, 1)] * report.epochs
    return {
        "seconds": round(seconds, 2),
        "epochs": report.epochs,
        "p50_epoch_s": round(float(np.percentile(per_epoch, 50)), 2),
        "p99_epoch_s": round(float(np.percentile(per_epoch, 99)), 2),
        "examples_per_s": round(report.examples_seen / max(seconds, 1e-9)),
        "valid_recall@10": round(report.history[-1]["recall@10"], 4),
        **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=0, help="Workers of the larger cluster; 0: all cores.")
    parser.add_argument("--sparse", action="store_true", help="Train the item table sparsely (SparseAdam).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    settings = EmbeddingSettings(epochs=args.epochs, patience=args.epochs, sparse_items=args.sparse)
    layout = DataLayout(args.world)
    full = build_sequences(layout, vocabulary(layout, validate_rows=False), validate_rows=False)
    days = layout.days("impressions")
    split = split_days(days, valid_days=settings.valid_days, test_days=settings.test_days)
    train, valid = full.before(split.valid_start_ms), full.before(split.test_start_ms)
    targets = held_out_targets(
        valid, split.valid_start_ms, split.test_start_ms, settings.eval_max_events, settings.seed
    )
    runs: dict[str, dict] = {}
    # In process with the threads `train user-embeddings` gives it (embeddings.threads), and with every core.
    for threads in sorted({settings.threads, all_cores()}):
        with torch_threads(threads):
            began = time.perf_counter()
            _, report = fit(train, valid, targets, settings)
        name = "in-process" if threads == settings.threads else f"in-process {threads} threads"
        runs[name] = _summary(report, time.perf_counter() - began, {})
    for n in sorted({1, args.workers or all_cores()}):
        # One worker: both placements are the same single rank. More: one rank per host (the default) and
        # one per worker (gloo between the workers).
        placements: tuple[RankPlacement, ...] = ("host", "worker") if n > 1 else ("host",)
        with engine_client(EngineSettings(workers=n)) as client:
            for placement in placements:
                placed = settings.model_copy(update={"engine_ranks": placement})
                began = time.perf_counter()
                _, report, run = fit_on_engine(client, train, valid, targets, placed)
                seconds = time.perf_counter() - began
                name = f"engine {n} worker{'s' if n > 1 else ''}" + (f", per {placement}" if n > 1 else "")
                runs[name] = _summary(
                    report, seconds, {"ranks": run["ranks"], "sum_gradients_s": run["sum_gradients_seconds"]}
                )
    base, one_worker = runs["in-process"]["seconds"], runs["engine 1 worker"]["seconds"]
    for run in runs.values():
        run["ratio_to_in_process"] = round(base / run["seconds"], 2)
        run["ratio_to_1_worker"] = round(one_worker / run["seconds"], 2)
    out = {
        "world": str(args.world),
        "blocks": train.n_items - 1,
        "train_examples": int(np.sum(train.position() >= 1)),
        "sparse": args.sparse,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return
    print(f"{args.world}: {out['blocks']:,} blocks, {out['train_examples']:,} training examples")
    for name, r in runs.items():
        print(
            f"  {name:<30} {r['seconds']:8.1f} s  {r['p50_epoch_s']:6.1f} s/epoch  "
            f"{r['examples_per_s']:>7,} examples/s  x{r['ratio_to_in_process']:.2f} of in-process  "
            f"x{r['ratio_to_1_worker']:.2f} of 1 worker  "
            f"recall@10 {r['valid_recall@10']:.4f}  sums {r.get('sum_gradients_s', '-')}"
        )


if __name__ == "__main__":
    main()
