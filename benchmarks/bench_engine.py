"""Index encoding on the engine (a local Dask cluster of 1 and of N workers) against the in-process path:

    python benchmarks/bench_engine.py --world worlds/small [--limit 1500] [--workers 2] [--json]

Both encoders (SPLADE, dense; the default ONNX int8) encode the first ``--limit`` passages of the world's
blocks three ways: on a local cluster of 1 worker process, on one of N (``--workers``, default every core),
and in this process on every core (``index_threads``, the path `index build` took before the engine). For each
it prints the passages/s of encoding alone (workers warm: encoders loaded) and end to end (cluster start,
the workers' encoder loading, both encoders), each with its ratio to the 1-worker run; and, while encoding,
the cores it got (CPU seconds of this process and its workers / wall seconds) and its CPU ms per passage.
Both clusters stay up and the three runs alternate ``--rounds`` times, so background load on a shared
machine falls on them alike; the cores column shows how much of the machine each run really had.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from contextlib import ExitStack
from pathlib import Path

import psutil
from distributed import Client

from data.engine import EngineSettings, engine_client
from data.layout import DataLayout
from data.threads import all_cores
from retrieval.config import RetrievalSettings
from retrieval.corpus import block_passages
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.sharded import EncoderSpec, encode_on_engine, worker_encoder
from retrieval.encoders.splade import SpladeEncoder


def _load(spec: EncoderSpec) -> int:
    worker_encoder(spec)
    return os.getpid()


def _start(workers: int, encoders: dict, stack: ExitStack) -> tuple[Client, dict[str, float]]:
    """A warm local cluster of ``workers`` processes (each has loaded both encoders), and what that took."""
    started = time.perf_counter()
    client = stack.enter_context(engine_client(EngineSettings(workers=workers)))
    up = time.perf_counter()
    for encoder in encoders.values():
        client.run(_load, EncoderSpec.of(encoder))
    return client, {"start_s": up - started, "load_s": time.perf_counter() - up}


def _tree_cpu() -> float:
    """CPU seconds (user + system) of this process and its children: the driver, scheduler and workers."""
    me = psutil.Process()
    total = 0.0
    for proc in [me, *me.children(recursive=True)]:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def _encode(client: Client | None, encoders: dict, texts: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) to encode ``texts`` with every encoder."""
    started, cpu = time.perf_counter(), _tree_cpu()
    for encoder in encoders.values():
        if client is None:
            encoder.encode_documents(texts)
        else:
            encode_on_engine(client, encoder, texts)
    return time.perf_counter() - started, _tree_cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=1500, help="Passages encoded (the first N blocks).")
    parser.add_argument("--workers", type=int, default=0, help="Workers of the larger cluster; 0: all cores.")
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds of the three runs.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.getLogger("distributed").setLevel(logging.ERROR)

    settings = RetrievalSettings()
    cores = all_cores()
    workers = args.workers or cores
    texts = [p.text for p in block_passages(DataLayout(args.world))][: args.limit]
    encoders = {
        "splade": SpladeEncoder(settings.splade, index_threads=cores).load(),
        "dense": DenseEncoder(settings.dense, index_threads=cores).load(),
    }
    for encoder in encoders.values():
        encoder.encode_documents(texts[:16])  # warm-up: first-call allocations
    names = ("engine 1 worker", f"engine {workers} workers", f"in-process {cores} threads")
    load_before = os.getloadavg()[0]
    with ExitStack() as stack:
        one, one_cost = _start(1, encoders, stack)
        many, many_cost = _start(workers, encoders, stack)
        costs = dict(zip(names, (one_cost, many_cost, {"start_s": 0.0, "load_s": 0.0}), strict=True))
        encode_s, cpu_s = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
        for _ in range(args.rounds):  # interleaved: background load falls on the three runs alike
            for name, client in zip(names, (one, many, None), strict=True):
                wall, cpu = _encode(client, encoders, texts)
                encode_s[name] += wall / args.rounds
                cpu_s[name] += cpu / args.rounds
    runs = {
        name: {
            **costs[name],
            "encode_s": encode_s[name],
            "total_s": sum(costs[name].values()) + encode_s[name],
            "encode_cpu_s": cpu_s[name],
        }
        for name in names
    }
    work = len(texts) * len(encoders)  # passages encoded, both encoders
    base = runs[names[0]]
    report = {
        name: {
            **{k: round(v, 2) for k, v in run.items()},
            "encode_per_s": round(work / run["encode_s"], 1),
            "end_to_end_per_s": round(work / run["total_s"], 1),
            "encode_ratio": round(base["encode_s"] / run["encode_s"], 2),
            "end_to_end_ratio": round(base["total_s"] / run["total_s"], 2),
            "cores_used": round(run["encode_cpu_s"] / run["encode_s"], 2),
            "cpu_ms_per_passage": round(1000 * run["encode_cpu_s"] / work, 1),
        }
        for name, run in runs.items()
    }
    if args.json:
        print(
            json.dumps(
                {"cores": cores, "passages": len(texts), "rounds": args.rounds, "runs": report}, indent=2
            )
        )
        return
    print(
        f"{cores} cores, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}; {len(texts)} passages "
        f"of {args.world} x {len(encoders)} encoders (passages/s count both), {args.rounds} rounds"
    )
    head = ("run", "start s", "load s", "encode/s", "ratio", "end-to-end/s", "ratio", "cores", "CPU ms/p")
    widths = (22, 8, 7, 9, 6, 13, 6, 6, 9)
    print(
        " ".join(
            f"{h:{w}s}" if n == 0 else f"{h:>{w}s}" for n, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    )
    for name, row in report.items():
        cells = (
            row["start_s"], row["load_s"], row["encode_per_s"], row["encode_ratio"], row["end_to_end_per_s"],
            row["end_to_end_ratio"], row["cores_used"], row["cpu_ms_per_passage"],
        )  # fmt: skip
        formats = (".1f", ".1f", ".1f", ".2f", ".1f", ".2f", ".2f", ".1f")
        print(
            f"{name:22s} "
            + " ".join(f"{c:{w}{f}}" for c, w, f in zip(cells, widths[1:], formats, strict=True))
        )


if __name__ == "__main__":
    main()
