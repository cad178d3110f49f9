"""Feature-store benchmark: request assembly latency, rows of many requests at once (``compute_many``) against
one at a time, batch build throughput, the small world's users' memory.

    python benchmarks/bench_features.py --world worlds/small [--large-world worlds/large --large-days 2]

Uses REDIS_URL, else the Redis on 127.0.0.1:6379 when it answers, else the embedded one; writes under its own
namespace and deletes it afterwards. Baselines run in the same process: one PING round trip, and the same
pipelined reads without the feature computation. Every user and block gets a 64-d M3 vector (random, one
model version) before the assembly runs, so the M3 features are computed for every candidate; the one-time
load of the block vectors into memory is reported apart (``m3_block_vectors_load_s``). Memory per user with
every per-user field full is benchmarks/bench_user_memory.py.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import redis

from data.layout import DataLayout
from features.block_attributes import BlockAttributes
from features.build import build_online_features
from features.config import FeatureStoreSettings
from features.dataset import COMPUTE_CHUNK
from features.definitions import Request, compute, compute_many, plan
from features.embeddings.store import write_vectors
from features.replay import Replayer, in_time_order
from features.store import RedisFeatureStore


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.array(samples_s) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "per_s": round(len(ms) / (ms.sum() / 1000), 1),
    }


def local_settings(namespace: str) -> FeatureStoreSettings:
    if os.environ.get("REDIS_URL"):
        return FeatureStoreSettings(
            redis_url=os.environ["REDIS_URL"], namespace=namespace, socket_timeout_s=5
        )
    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=0.3).ping()
        return FeatureStoreSettings(
            redis_url="redis://127.0.0.1:6379/0", namespace=namespace, socket_timeout_s=5
        )
    except (redis.RedisError, OSError):
        return FeatureStoreSettings(namespace=namespace, socket_timeout_s=5)


def bench_assembly(
    store: RedisFeatureStore, layout: DataLayout, catalog: BlockAttributes, n: int, k: int
) -> dict:
    imps = layout.read_events("impressions", start=layout.days("impressions")[-1], validate_rows=False)
    rng = random.Random(0)
    rows = imps.to_pylist()
    requests = []
    for r in rng.sample(rows, min(n, len(rows))):
        shown = [s["block_id"] for s in r["shown"]]
        others = rng.sample(catalog.ids, k)
        blocks = tuple(dict.fromkeys(shown + others))[:k]
        requests.append(
            Request(
                r["request_id"] + "-bench", int(r["ts"].timestamp() * 1000), r["user_id"], r["query"], blocks
            )
        )
    t0 = time.perf_counter()
    store.assemble(requests[0], catalog)  # the first request loads the block vectors of its user's model
    load_s = time.perf_counter() - t0
    for req in requests[:50]:
        store.assemble(req, catalog)  # warm connections and script caches
    ping, fetch, full, local = [], [], [], []
    for req in requests:
        t0 = time.perf_counter()
        store.client.ping()
        t1 = time.perf_counter()
        fetched = store.fetch(plan(store.keys, req))
        t2 = time.perf_counter()
        compute(req, fetched, catalog, store.settings)
        t3 = time.perf_counter()
        store.assemble(req, catalog)
        t4 = time.perf_counter()
        ping.append(t1 - t0)
        fetch.append(t2 - t1)
        local.append(t3 - t2)
        full.append(t4 - t3)
    out = {
        "ping (baseline)": percentiles(ping),
        "fetch only": percentiles(fetch),
        "compute only": percentiles(local),
        "assemble": percentiles(full),
        "m3_block_vectors_load_s": round(load_s, 3),
    }
    out["ratio_assemble_to_ping_p50"] = round(out["assemble"]["p50_ms"] / out["ping (baseline)"]["p50_ms"], 1)
    out["blocks_per_request"] = k
    out["compute_many"] = bench_compute_many(store, catalog, requests)
    return out


def bench_compute_many(
    store: RedisFeatureStore, catalog: BlockAttributes, requests: list[Request], chunk: int = COMPUTE_CHUNK
) -> dict:
    """The same fetched hashes computed one request at a time (the baseline, as /search does) and ``chunk``
    requests at once (as the training-set replay does); the rows must be the same."""
    fetched = [store.fetch(plan(store.keys, req)) for req in requests]
    t0 = time.perf_counter()
    alone = [compute(req, f, catalog, store.settings) for req, f in zip(requests, fetched, strict=True)]
    t1 = time.perf_counter()
    together = [
        compute_many(requests[i : i + chunk], fetched[i : i + chunk], catalog, store.settings)
        for i in range(0, len(requests), chunk)
    ]
    t2 = time.perf_counter()
    if not np.array_equal(np.concatenate(alone), np.concatenate(together)):
        raise SystemExit("compute_many gave other rows than compute one request at a time")
    return {
        "chunk": chunk,
        "one_at_a_time_us_per_request": round((t1 - t0) / len(requests) * 1e6, 1),
        "many_at_once_us_per_request": round((t2 - t1) / len(requests) * 1e6, 1),
        "many_at_once_requests_per_s": round(len(requests) / (t2 - t1)),
        "ratio_many_to_one": round((t1 - t0) / (t2 - t1), 2),
    }


def bench_large_replay(world: Path, days: int) -> dict:
    layout = DataLayout(world)
    first = layout.days("impressions")[0]
    last = first + timedelta(days=days - 1)
    t0 = time.perf_counter()
    imps = layout.read_events("impressions", end=last, validate_rows=False)
    acts = layout.read_events("interactions", end=last, validate_rows=False)
    t1 = time.perf_counter()
    replayer = Replayer(FeatureStoreSettings(namespace="bench"))
    for event in in_time_order(imps, acts):
        replayer.apply(event)
    t2 = time.perf_counter()
    events = imps.num_rows + acts.num_rows
    return {
        "days": days,
        "events": events,
        "read_s": round(t1 - t0, 1),
        "replay_s": round(t2 - t1, 1),
        "replay_events_per_s": round(events / (t2 - t1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--blocks", type=int, default=100)
    parser.add_argument("--large-world", type=Path)
    parser.add_argument("--large-days", type=int, default=2)
    args = parser.parse_args()

    settings = local_settings("bench")
    store = RedisFeatureStore.connect(settings)
    store.clear()
    layout = DataLayout(args.world)
    report: dict = {"redis": settings.redis_url or "embedded"}
    try:
        build = build_online_features(layout, store)
        report["build_small"] = {
            k: build[k] for k in ("events", "seconds", "replay_events_per_s", "build_events_per_s")
        }
        catalog = BlockAttributes.from_tables(
            layout.read_blocks(validate_rows=False), layout.read_docs(validate_rows=False)
        )
        users = layout.read_events("impressions", validate_rows=False)["user_id"].unique().to_pylist()
        rng = np.random.default_rng(0)
        write_vectors(
            store,
            "m3-bench",
            users={u: rng.standard_normal(64).astype(np.float32) for u in users},
            blocks={b: rng.standard_normal(64).astype(np.float32) for b in catalog.ids},
        )
        report["assembly"] = bench_assembly(store, layout, catalog, args.requests, args.blocks)
        users = [k for k in store.client.scan_iter(match=f"{store.keys.prefix}:{{u:*}}:u", count=1000)]
        report["memory_small_world_users"] = {
            "users": len(users),
            "bytes_per_user_memory_usage": round(
                float(np.mean([store.client.memory_usage(k) for k in users[:2000]])), 1
            ),
        }
        if args.large_world:
            report["large_replay"] = bench_large_replay(args.large_world, args.large_days)
    finally:
        store.clear()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
