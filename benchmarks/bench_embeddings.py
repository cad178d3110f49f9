"""User-embedding benchmark: M3 training time on the small and large worlds, and bytes per user of one M3
vector against K window vectors, measured in Redis (MEMORY USAGE) and computed from the payload.

    smartblock world generate --scale small --seed 42 --out /tmp/w_small_m3
    smartblock world generate --scale large --seed 42 --out /tmp/w_large_m3 --workers 2
    python benchmarks/bench_embeddings.py --small /tmp/w_small_m3 [--large /tmp/w_large_m3] [--json]

``--steps N`` times N training steps (and nothing else) on each world's real histories, with the item
table dense and sparse (``embeddings.sparse_items``), one after the other in this process: per-step
p50/p99, examples per second, and the ratio of sparse to dense.

The large run is capped by ``--large-seconds`` of training (checked between batches) and scores a sample of
``--large-eval`` held-out clicks against all blocks. Redis: REDIS_URL, else 127.0.0.1:6379 when it answers,
else the embedded server; a throwaway namespace is written and deleted.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import redis
import torch

from data.layout import DataLayout
from features.config import FeatureStoreSettings
from features.embeddings.baselines import _prefix_sums, window_vectors
from features.embeddings.config import EmbeddingSettings
from features.embeddings.encode import latest_user_vectors
from features.embeddings.persist import load_model
from features.embeddings.pipeline import train_user_embeddings, vocabulary
from features.embeddings.sequences import build_sequences
from features.embeddings.store import encode_vector, write_vectors
from features.embeddings.train import NegativeSampler, build_model, optimisers_for, training_step
from features.store import RedisFeatureStore


def train_run(world: Path, settings: EmbeddingSettings) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = train_user_embeddings(DataLayout(world), settings, None, validate_rows=False)
    train = result["train"]
    return {
        "world": str(world),
        "total_seconds": round(time.perf_counter() - t0, 1),
        "train_seconds": train["seconds"],
        "epochs": train["epochs"],
        "best_epoch": train["best_epoch"],
        "stopped": train["stopped"],
        "train_examples": train["examples"],
        "examples_per_second": round(train["examples_seen"] / max(train["seconds"], 1e-9)),
        "metrics": result["metrics"],
        "folder": result["folder"],
    }


def step_times(world: Path, settings: EmbeddingSettings, steps: int) -> dict[str, Any]:
    """``steps`` training steps with a dense and with a sparse item table, on the world's own histories."""
    layout = DataLayout(world)
    seqs = build_sequences(layout, vocabulary(layout, validate_rows=False), validate_rows=False)
    examples = np.flatnonzero(seqs.position() >= 1)
    out: dict[str, Any] = {"world": str(world), "blocks": seqs.n_items - 1, "steps": steps}
    for sparse in (False, True):
        run = EmbeddingSettings.model_validate({**settings.model_dump(), "sparse_items": sparse})
        torch.manual_seed(run.seed)
        model = build_model(seqs.n_items, run)
        optimisers = optimisers_for(model, run)
        negatives = NegativeSampler(seqs, run)
        order = np.random.default_rng(run.seed).permutation(examples)
        seconds = []
        for b in range(steps + 3):  # the first steps warm up allocations: not counted
            idx = order[(b * run.batch_size) % len(order) :][: run.batch_size]
            began = time.perf_counter()
            training_step(model, optimisers, seqs, idx, negatives, run)
            if b >= 3:
                seconds.append(time.perf_counter() - began)
        out["sparse" if sparse else "dense"] = {
            "p50_ms": round(1000 * float(np.percentile(seconds, 50)), 2),
            "p99_ms": round(1000 * float(np.percentile(seconds, 99)), 2),
            "examples_per_s": round(run.batch_size * len(seconds) / sum(seconds)),
        }
    out["sparse_vs_dense"] = round(out["sparse"]["examples_per_s"] / out["dense"]["examples_per_s"], 2)
    return out


def _store() -> RedisFeatureStore:
    url = os.environ.get("REDIS_URL")
    if not url:
        try:
            if redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=0.3).ping():
                url = "redis://127.0.0.1:6379/0"
        except (redis.RedisError, OSError):
            url = None
    settings = FeatureStoreSettings(
        redis_url=url,
        embedded_dir=Path(tempfile.mkdtemp(prefix="bench-redis-")),
        namespace=f"bench{uuid.uuid4().hex[:8]}",
        socket_timeout_s=5.0,
    )
    return RedisFeatureStore.connect(settings)


def bytes_per_user(world: Path, folder: Path, n_users: int) -> dict[str, Any]:
    """M3 (one vector per user) against K windows stored as K keys or as one hash of K fields."""
    saved = load_model(folder)
    s = saved.settings
    seqs = build_sequences(DataLayout(world), saved.block_ids, validate_rows=False)
    users = np.arange(min(n_users, len(seqs.user_ids)))
    as_of = int(seqs.ts_ms.max())
    m3_vecs, _ = latest_user_vectors(saved.model, seqs, users, as_of, s.max_history)
    item_vecs = saved.model.item_vectors().detach().numpy()
    win, _ = window_vectors(
        seqs,
        _prefix_sums(seqs, item_vecs),
        users,
        seqs.offsets[users + 1],
        np.full(len(users), as_of),
        s.windows_days,
    )  # (K, n, D)
    k = len(s.windows_days)
    store = _store()
    keys, version = store.keys, saved.version
    ids = seqs.user_ids[users].tolist()
    try:
        write_vectors(store, version, users=dict(zip(ids, m3_vecs, strict=True)))
        pipe = store.client.pipeline(transaction=False)
        for i, u in enumerate(ids):
            tag = keys.user_tag(u)
            for w in range(k):  # K-window as K features, each laid out like the M3 vector
                pipe.hset(keys.key(tag, f"uw{w}"), mapping={"v": encode_vector(win[w, i]), "m": version})
            fields: dict[str, bytes | str] = {f"v{w}": encode_vector(win[w, i]) for w in range(k)}
            pipe.hset(keys.key(tag, "uwk"), mapping={**fields, "m": version})  # K-window as one hash
        pipe.execute()

        def usage(names: list[str]) -> float:
            p = store.client.pipeline(transaction=False)
            for name in names:
                p.memory_usage(name, samples=0)
            return float(np.mean(p.execute()))

        m3 = usage([keys.user_vector(u) for u in ids])
        k_keys = k * usage([keys.key(keys.user_tag(u), f"uw{w}") for u in ids for w in range(k)])
        k_hash = usage([keys.key(keys.user_tag(u), "uwk") for u in ids])
        # A hash value over hash-max-listpack-value (64 bytes by default) turns the hash into a hashtable,
        # which costs about 230 bytes more than a listpack: a 64-dim float16 vector (128 bytes) crosses it.
        encoding = {
            "m3": store.client.object("encoding", keys.user_vector(ids[0])).decode(),
            "k_window_one_hash": store.client.object(
                "encoding", keys.key(keys.user_tag(ids[0]), "uwk")
            ).decode(),
            "hash_max_listpack_value": store.client.config_get("hash-max-listpack-value"),
        }
    finally:
        store.clear()
    payload = s.dim * 2
    return {
        "users": len(ids),
        "dim": s.dim,
        "K": k,
        "windows_days": list(s.windows_days),
        "computed_payload_bytes": {"m3": payload, "k_window": k * payload, "ratio": 1 / k},
        "redis_memory_usage_bytes": {
            "m3_one_key": m3,
            "k_window_k_keys": k_keys,
            "k_window_one_hash": k_hash,
            "ratio_vs_k_keys": round(m3 / k_keys, 3),
            "ratio_vs_one_hash": round(m3 / k_hash, 3),
            "encoding": encoding,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=Path, required=True, help="a small world folder")
    parser.add_argument("--large", type=Path, help="a large world folder (optional)")
    parser.add_argument(
        "--large-seconds", type=float, default=600.0, help="training budget on the large world"
    )
    parser.add_argument(
        "--large-eval", type=int, default=5000, help="held-out clicks scored on the large world"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--users", type=int, default=2000, help="users measured in Redis")
    parser.add_argument("--steps", type=int, default=0, help="only time N steps, dense and sparse")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"threads": args.threads, "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    torch.set_num_threads(args.threads)
    if args.steps:
        worlds = [("small", args.small)] + ([("large", args.large)] if args.large else [])
        out["steps"] = {name: step_times(w, EmbeddingSettings(), args.steps) for name, w in worlds}
        for name, r in out["steps"].items():
            print(
                f"{name} ({r['blocks']:,} blocks), {r['steps']} steps: "
                + ", ".join(
                    f"{kind} p50 {r[kind]['p50_ms']} ms p99 {r[kind]['p99_ms']} ms "
                    f"{r[kind]['examples_per_s']:,} examples/s"
                    for kind in ("dense", "sparse")
                )
                + f"; sparse x{r['sparse_vs_dense']}",
                flush=True,
            )
        if args.json:
            print(json.dumps(out, indent=2))
        return
    with tempfile.TemporaryDirectory() as tmp:
        small = EmbeddingSettings(threads=args.threads, model_dir=Path(tmp) / "small")
        out["small"] = train_run(args.small, small)
        out["bytes_per_user"] = bytes_per_user(args.small, Path(out["small"]["folder"]), args.users)
        if args.large:
            large = EmbeddingSettings(
                threads=args.threads,
                model_dir=Path(tmp) / "large",
                max_train_seconds=args.large_seconds,
                eval_max_events=args.large_eval,
            )
            out["large"] = train_run(args.large, large)
    out["load_avg_after"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name in ("small", "large"):
        if name in out:
            r = out[name]
            print(
                f"{name}: trained {r['train_seconds']} s ({r['epochs']} epochs, {r['stopped']}), "
                f"total {r['total_seconds']} s"
            )
            for method, row in r["metrics"].items():
                print(
                    f"  {method:8s} recall@10 {row['recall@10']:.4f}  mrr {row['mrr']:.4f}  "
                    f"({row['events']} clicks)"
                )
    print(json.dumps(out["bytes_per_user"], indent=2))


if __name__ == "__main__":
    main()
