"""Encoder backends side by side: sentence-transformers, our torch path, ONNX fp32 and int8. A script:

    python benchmarks/bench_encoders.py --world worlds/small [--passages 600] [--queries 200] [--rounds 2]
                                        [--threads 0] [--onnx-cache DIR] [--json]

Block encoding: every backend of an encoder encodes the same passages of the world's blocks with the same
number of threads (``--threads``, 0 = every core: what ``retrieval.index_threads`` gives an index build),
alternately, ``--rounds`` times each, so background load falls on all alike. Prints passages/s and the ratio
to the baseline measured in the same process: sentence-transformers' ``encode`` (``SentenceTransformer`` for
dense, ``SparseEncoder`` for SPLADE) when it is importable, else our torch backend (the report says which).
Our encoders' ``encode_documents`` includes tokenising, length sorting and, for SPLADE, pruning each passage
to its top terms; the ONNX timings include creating the batch session (an index build pays it once).

Queries: distinct logged queries of the world, one at a time on one thread, with the query cache off; p50 and
p99 ms per backend. ONNX exports are made (or found) in the cache before timing; export time is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from data.layout import DataLayout
from data.threads import all_cores
from retrieval.config import PLAIN_INT8, RetrievalSettings
from retrieval.corpus import block_passages
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.splade import SpladeEncoder

os.environ.setdefault("HF_HUB_OFFLINE", "1")

Encode = Callable[[Sequence[str]], object]
# The dense default until the smoothing (bench_encoder_quality.py compares the same variants).
LAYER0_FP32 = {**PLAIN_INT8, "fp32_layers": (0,)}


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2)}


def sentence_transformers_model(name: str, path: str, max_length: int) -> Any | None:
    """The sentence-transformers model of the same checkpoint, or None when the package is not importable."""
    try:
        import sentence_transformers as st
    except ImportError:
        return None
    model = (st.SparseEncoder if name == "splade" else st.SentenceTransformer)(path, device="cpu")
    model.max_seq_length = max_length
    return model


def our_encoders(
    name: str, settings: RetrievalSettings, threads: int, cache: Path | None
) -> dict[str, SpladeEncoder | DenseEncoder]:
    """torch, onnx-fp32, onnx-int8 of one encoder; queries on one thread, batches on ``threads``.

    When the settings refine int8 (fp32 parts, smoothing), ``onnx-int8-all`` quantises every product
    unsmoothed and ``onnx-int8-layer0`` keeps the first layer fp32 (the dense default before the smoothing),
    for the cost and the fidelity.
    """
    make = SpladeEncoder if name == "splade" else DenseEncoder
    base = settings.splade if name == "splade" else settings.dense
    variants = {
        "torch": {"backend": "torch", "int8": False},
        "onnx-fp32": {"backend": "onnx", "int8": False},
        "onnx-int8": {"backend": "onnx", "int8": True},
    }
    if any(base.model_dump()[k] != v for k, v in PLAIN_INT8.items()):
        variants["onnx-int8-all"] = PLAIN_INT8
        variants["onnx-int8-layer0"] = LAYER0_FP32
    return {
        label: make(base.model_copy(update=v), threads=1, index_threads=threads, onnx_cache_dir=cache)  # type: ignore[arg-type]
        for label, v in variants.items()
    }


def bench_encoder(
    name: str, texts: list[str], queries: list[str], args: argparse.Namespace, threads: int
) -> dict[str, Any]:
    import torch

    settings = RetrievalSettings()
    ours = our_encoders(name, settings, threads, args.onnx_cache)
    load_s = {}
    for label, encoder in ours.items():
        started = time.perf_counter()
        encoder.load()
        load_s[label] = round(time.perf_counter() - started, 2)
    batch_size = (settings.splade if name == "splade" else settings.dense).batch_size
    st_model = sentence_transformers_model(
        name, ours["torch"].name_or_path, ours["torch"].settings.max_length
    )
    blocks: dict[str, Encode] = {}
    if st_model is not None:
        blocks["sentence-transformers"] = lambda t: st_model.encode(list(t), batch_size=batch_size)
    for label, encoder in ours.items():
        blocks[label] = encoder.encode_documents
    baseline = next(iter(blocks))

    torch.set_num_threads(threads)  # sentence-transformers runs on the process's torch threads
    for encode in blocks.values():
        encode(texts[:16])  # warm-up: first-call allocations
    seconds = dict.fromkeys(blocks, 0.0)
    for _ in range(args.rounds):
        for label, encode in blocks.items():
            started = time.perf_counter()
            encode(texts)
            seconds[label] += time.perf_counter() - started
    rate = {label: args.rounds * len(texts) / s for label, s in seconds.items()}
    block_rows = {
        label: {"passages_per_s": round(r, 1), "ratio": round(r / rate[baseline], 2)}
        for label, r in rate.items()
    }

    torch.set_num_threads(1)  # a query: one thread, as a serving worker runs it
    single: dict[str, Callable[[str], object]] = {}
    if st_model is not None:
        single["sentence-transformers"] = lambda q: st_model.encode([q])
    for label, encoder in ours.items():
        single[label] = encoder.encode_query  # cache_size=0: every call encodes
    for encode_one in single.values():
        for q in queries[:10]:
            encode_one(q)
    timings: dict[str, list[float]] = {label: [] for label in single}
    for q in queries:  # interleaved per query, so load spikes hit every backend
        for label, encode_one in single.items():
            started = time.perf_counter()
            encode_one(q)
            timings[label].append((time.perf_counter() - started) * 1000)
    query_rows = {label: percentiles(ms) for label, ms in timings.items()}
    return {"baseline": baseline, "load_s": load_s, "blocks": block_rows, "queries": query_rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--passages", type=int, default=600)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="Block-encoding threads; 0: every core.")
    parser.add_argument("--encoders", default="dense,splade")
    parser.add_argument(
        "--onnx-cache", type=Path, default=None, help="ONNX export cache (default: the user's)."
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    layout = DataLayout(args.world)
    texts = [p.text for p in block_passages(layout)][: args.passages]
    logged = sorted(set(layout.read_events("impressions", validate_rows=False)["query"].to_pylist()))
    rng = np.random.default_rng(0)
    queries = [logged[i] for i in rng.choice(len(logged), size=min(args.queries, len(logged)), replace=False)]
    threads = args.threads or all_cores()
    report = {name: bench_encoder(name, texts, queries, args, threads) for name in args.encoders.split(",")}
    if args.json:
        print(
            json.dumps(
                {"threads": threads, "passages": len(texts), "queries": len(queries), **report}, indent=2
            )
        )
        return
    print(
        f"{len(texts)} passages of {args.world} on {threads} thread(s), {args.rounds} interleaved round(s); "
        f"{len(queries)} distinct queries on 1 thread"
    )
    for name, row in report.items():
        if row["baseline"] != "sentence-transformers":
            print("sentence-transformers is not importable: the torch backend is the baseline")
        print(f"\n{name}  (baseline: {row['baseline']}; load/export s: {row['load_s']})")
        print(f"{'backend':22s} {'passages/s':>11s} {'ratio':>6s} {'query p50':>10s} {'p99 ms':>7s}")
        for label, block in row["blocks"].items():
            q = row["queries"][label]
            print(
                f"{label:22s} {block['passages_per_s']:11.1f} {block['ratio']:6.2f} "
                f"{q['p50_ms']:10.2f} {q['p99_ms']:7.2f}"
            )


if __name__ == "__main__":
    main()
