"""Retrieval latency and index-build throughput. A script, not a test:
``python benchmarks/bench_retrieval.py [--world DIR] [--sizes 10000,200000]``.

What is measured, on one thread (torch and Lucene), in one process:

- index build: SPLADE and dense encoding of every real block of ``--world`` (blocks/s), Lucene impact
  indexing and FAISS adds (blocks/s);
- per query, p50/p99 in ms for each stage: SPLADE and dense query encoding (cold: cache cleared; warm: the
  LRU cache hit), sparse search, dense search, behavioural lookup, fusion, and the whole fused retrieval of
  100 candidates; plus BM25 (Anserini) as the baseline, with every stage's ratio to it.

Catalogue sizes above the world's real block count (``--sizes``) are reached by tiling the real encoded
blocks under new ids: encoding 200k blocks on this machine's shared cores would take ~30 minutes, and search
cost depends on the index size and posting/vector counts, which tiling reproduces. The report says so.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.layout import DataLayout
from retrieval.base import Passage
from retrieval.behavioural import BehaviouralRetriever
from retrieval.config import FusionSettings, RetrievalSettings
from retrieval.corpus import block_passages
from retrieval.dense import DenseRetriever
from retrieval.encoders.dense import DenseEncoder
from retrieval.encoders.splade import SpladeEncoder
from retrieval.fusion import fuse
from retrieval.java import index_collection
from retrieval.lucene import Bm25Retriever, SpladeRetriever, _write_jsonl

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p99_ms": round(float(np.percentile(a, 99)), 3)}


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=Path("/tmp/w_small_r"))
    parser.add_argument("--sizes", default="10000,200000", help="Catalogue sizes to search.")
    parser.add_argument("--queries", type=int, default=300, help="Distinct logged queries to time.")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument(
        "--max-blocks", type=int, default=None, help="Encode only the first N real blocks (then tile them)."
    )
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON report here.")
    args = parser.parse_args()

    settings = RetrievalSettings()
    layout = DataLayout(args.world)
    passages = block_passages(layout)[: args.max_blocks]
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    rng = np.random.default_rng(0)
    logged = sorted(set(imps["query"].to_pylist()))
    queries = [logged[i] for i in rng.choice(len(logged), size=min(args.queries, len(logged)), replace=False)]
    report: dict = {
        "world": str(args.world),
        "real_blocks": len(passages),
        "queries": len(queries),
        "k": args.k,
    }

    splade_enc = SpladeEncoder(settings.splade, cache_size=settings.cache_size, threads=1).load()
    dense_enc = DenseEncoder(settings.dense, cache_size=settings.cache_size, threads=1).load()
    texts = [p.text for p in passages]
    t = time.perf_counter()
    sparse_vecs = splade_enc.encode_documents(texts)
    splade_s = time.perf_counter() - t
    t = time.perf_counter()
    dense_vecs = dense_enc.encode_documents(texts)
    dense_s = time.perf_counter() - t
    report["build"] = {
        "splade_encode_blocks_per_s": round(len(texts) / splade_s, 1),
        "dense_encode_blocks_per_s": round(len(texts) / dense_s, 1),
    }
    behavioural = BehaviouralRetriever(settings.behavioural).fit(imps, acts)

    # Encoding: cold (cache cleared before each query) and warm (the same query again).
    names = ("splade_encode_cold", "splade_encode_warm", "dense_encode_cold", "dense_encode_warm")
    stages: dict[str, list[float]] = {n: [] for n in names}
    for q in queries:
        splade_enc.cache.clear()
        dense_enc.cache.clear()
        stages["splade_encode_cold"].append(timed(lambda q=q: splade_enc.encode_query(q)))
        stages["splade_encode_warm"].append(timed(lambda q=q: splade_enc.encode_query(q)))
        stages["dense_encode_cold"].append(timed(lambda q=q: dense_enc.encode_query(q)))
        stages["dense_encode_warm"].append(timed(lambda q=q: dense_enc.encode_query(q)))
    report["encode"] = {n: percentiles(v) for n, v in stages.items()}
    report["behavioural"] = percentiles([timed(lambda q=q: behavioural.search(q, args.k)) for q in queries])

    work = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            encoded = Encoded(passages, sparse_vecs, dense_vecs, splade_enc, dense_enc)
            report[f"blocks={size}"] = bench_size(size, encoded, queries, behavioural, settings, work, args.k)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


@dataclass
class Encoded:
    """The real blocks and their encodings, computed once and tiled to each catalogue size."""

    passages: list[Passage]
    sparse: list[dict[str, int]]
    dense: np.ndarray
    splade_encoder: SpladeEncoder
    dense_encoder: DenseEncoder


def bench_size(
    size: int,
    enc: Encoded,
    queries: list[str],
    behavioural: BehaviouralRetriever,
    settings: RetrievalSettings,
    work: Path,
    k: int,
) -> dict:
    passages, splade_enc, dense_enc = enc.passages, enc.splade_encoder, enc.dense_encoder
    n_real = len(passages)
    rows = [i % n_real for i in range(size)]
    ids = [passages[r].id if i < n_real else f"{passages[r].id}~{i // n_real}" for i, r in enumerate(rows)]
    out: dict = {"tiled": size > n_real}
    folder = work / f"n{size}"

    # Sparse: the impact index from the real SPLADE vectors (tiled).
    coll = folder / "collection"
    _write_jsonl(coll, [{"id": ids[i], "contents": "", "vector": enc.sparse[r]} for i, r in enumerate(rows)])
    t = time.perf_counter()
    splade_args = ["-collection", "JsonVectorCollection", "-impact", "-pretokenized", "-threads", "1"]
    index_collection(*splade_args, "-input", str(coll), "-index", str(folder / "splade" / "lucene"))
    out["splade_index_blocks_per_s"] = round(size / (time.perf_counter() - t), 1)
    (folder / "splade" / "fingerprint.json").write_text("{}")
    splade = SpladeRetriever(folder / "splade", splade_enc).load()

    bm25_coll = folder / "bm25coll"
    _write_jsonl(bm25_coll, [{"id": ids[i], "contents": passages[r].text} for i, r in enumerate(rows)])
    bm25_args = [
        "-collection",
        "JsonCollection",
        "-generator",
        "DefaultLuceneDocumentGenerator",
        "-threads",
        "1",
    ]
    index_collection(*bm25_args, "-input", str(bm25_coll), "-index", str(folder / "bm25" / "lucene"))
    (folder / "bm25" / "fingerprint.json").write_text("{}")
    bm25 = Bm25Retriever(folder / "bm25").load()

    vectors = enc.dense[rows]
    t = time.perf_counter()
    dense = DenseRetriever(None, dense_enc, settings.dense).from_vectors(ids, vectors)
    out["dense_index_type"] = dense.index_type
    out["dense_index_blocks_per_s"] = round(size / (time.perf_counter() - t), 1)

    fusion = FusionSettings()
    depth = max(k, fusion.depth)
    stages: dict[str, list[float]] = {
        n: [] for n in ("bm25", "sparse", "dense", "fuse", "fused_cold", "fused_warm")
    }
    for q in queries:  # warm the encoders' caches: search-only stages exclude encoding
        splade_enc.encode_query(q)
        dense_enc.encode_query(q)
    for q in queries:
        stages["bm25"].append(timed(lambda q=q: bm25.search(q, k)))
        t = time.perf_counter()
        sparse_hits = splade.search(q, depth)
        stages["sparse"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        dense_hits = dense.search(q, depth)
        stages["dense"].append((time.perf_counter() - t) * 1000)
        runs = {"splade": sparse_hits, "dense": dense_hits, "behavioural": behavioural.search(q, depth)}
        t = time.perf_counter()
        fuse(runs, fusion, k)
        stages["fuse"].append((time.perf_counter() - t) * 1000)

    def fused(q: str) -> None:
        runs = {
            "splade": splade.search(q, depth),
            "dense": dense.search(q, depth),
            "behavioural": behavioural.search(q, depth),
        }
        fuse(runs, fusion, k)

    for q in queries:
        # Cold first (nothing cached), then the same query again: a repeated head query.
        splade_enc.cache.clear()
        dense_enc.cache.clear()
        stages["fused_cold"].append(timed(lambda q=q: fused(q)))
        stages["fused_warm"].append(timed(lambda q=q: fused(q)))
    base = float(np.percentile(stages["bm25"], 50))
    out["latency"] = {
        n: {**percentiles(v), "p50_vs_bm25": round(float(np.percentile(v, 50)) / base, 2)}
        for n, v in stages.items()
    }
    total_s = sum(stages["fused_warm"]) / 1000
    out["fused_warm_queries_per_s"] = round(len(queries) / total_s, 1)
    shutil.rmtree(folder, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
