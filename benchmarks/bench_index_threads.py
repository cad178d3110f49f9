"""Index-time encoding on one thread against every core (``retrieval.index_threads``). A script, not a test:

    python benchmarks/bench_index_threads.py --world worlds/small [--passages 600] [--rounds 2] [--json]

Both encoders (SPLADE, dense) encode the same passages of the world's blocks, in the order
``encode_documents`` uses (longest first, in batches), alternately with 1 thread and with N (every core this
process may use), ``--rounds`` times each, so background load falls on both alike. Prints passages/s per
setting and the ratio N / 1. Query encoding keeps ``retrieval.torch_threads`` (see bench_retrieval.py).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from data.layout import DataLayout
from data.threads import all_cores
from retrieval.config import RetrievalSettings
from retrieval.corpus import block_passages
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.splade import SpladeEncoder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--passages", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    settings = RetrievalSettings()
    texts = [p.text for p in block_passages(DataLayout(args.world))][: args.passages]
    cores = all_cores()
    encoders = {
        "splade": lambda n: SpladeEncoder(settings.splade, index_threads=n),
        "dense": lambda n: DenseEncoder(settings.dense, index_threads=n),
    }
    report: dict[str, dict[str, float]] = {}
    for name, make in encoders.items():
        loaded = {n: make(n).load() for n in (1, cores)}
        loaded[1].encode_documents(texts[:32])  # warm-up: first-call allocations
        seconds = {1: 0.0, cores: 0.0}
        for _ in range(args.rounds):
            for n, encoder in loaded.items():
                started = time.perf_counter()
                encoder.encode_documents(texts)
                seconds[n] += time.perf_counter() - started
        rate = {n: args.rounds * len(texts) / s for n, s in seconds.items()}
        report[name] = {
            "passages": len(texts),
            "threads_1_per_s": round(rate[1], 1),
            f"threads_{cores}_per_s": round(rate[cores], 1),
            "ratio": round(rate[cores] / rate[1], 2),
        }
    if args.json:
        print(json.dumps({"cores": cores, "encoders": report}, indent=2))
        return
    print(f"{cores} cores; {len(texts)} passages of {args.world}, {args.rounds} interleaved round(s) each")
    print(f"{'encoder':8s} {'1 thread/s':>11s} {f'{cores} threads/s':>12s} {'ratio':>6s}")
    for name, row in report.items():
        one, many = row["threads_1_per_s"], row[f"threads_{cores}_per_s"]
        print(f"{name:8s} {one:11.1f} {many:12.1f} {row['ratio']:6.2f}")


if __name__ == "__main__":
    main()
