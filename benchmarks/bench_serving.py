"""Load benchmark of the search API over real HTTP on loopback (not a timed test).

Starts ``smartblock serve`` (uvicorn workers and a stream consumer) in a subprocess for a prepared world
(indexes built, features in Redis, a promoted ranker: what ``smartblock quickstart`` leaves behind), warms
the query caches with one pass over the queries, then drives GET /search with an asyncio + httpx client at
concurrency 1, 8 and 32 and reports p50 / p99 latency, throughput and errors. GET /healthz measured the same
way is the baseline: what HTTP, uvicorn and the client cost without any search work.

    python benchmarks/bench_serving.py --world worlds/small [--requests 2000] [--seconds 20] [--json]

Settings come from the usual sources (SMARTBLOCK_* variables, SMARTBLOCK_CONFIG), which the server inherits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from data.layout import DataLayout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workload(world: Path, n_queries: int, n_users: int) -> tuple[list[str], list[str]]:
    """The most frequent logged queries and the most active users: a realistic, cacheable head."""
    imps = DataLayout(world).read_events("impressions", validate_rows=False)
    queries = [q for q, _ in Counter(imps["query"].to_pylist()).most_common(n_queries)]
    users = [u for u, _ in Counter(imps["user_id"].to_pylist()).most_common(n_users)]
    return queries, users


async def drive(
    client: httpx.AsyncClient,
    paths: list[tuple[str, dict]],
    concurrency: int,
    max_requests: int,
    seconds: float,
) -> dict:
    """Send requests from ``paths`` (cycled) with ``concurrency`` in flight, until either bound is reached."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    sent = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal sent
        while sent < max_requests and time.perf_counter() < deadline:
            path, params = paths[sent % len(paths)]
            sent += 1
            started = time.perf_counter()
            try:
                res = await client.get(path, params=params)
                if res.status_code != 200:
                    errors[str(res.status_code)] += 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                continue
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": dict(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else None,
        "rps": round(len(latencies) / wall, 1),
    }


async def run(url: str, queries: list[str], users: list[str], args: argparse.Namespace) -> dict:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        search = [
            ("/search", {"q": q, "user_id": users[i % len(users)], "k": 10}) for i, q in enumerate(queries)
        ]
        # Warm-up: every query once (retrieval cache, encoder caches, Redis connections, lazy imports).
        warm = await drive(client, search, 4, len(search), 600)
        out: dict = {"warmup": warm, "baseline_healthz": [], "search": []}
        for c in args.concurrency:
            out["baseline_healthz"].append(
                await drive(client, [("/healthz", {})], c, args.requests, args.seconds)
            )
            out["search"].append(await drive(client, search, c, args.requests, args.seconds))
        info = (await client.get("/search", params={"q": queries[0], "user_id": users[0]})).json()
        out["ranker_version"], out["n_candidates"] = info["ranker_version"], info["n_candidates"]
        out["degraded"] = info["degraded"]
        return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000, help="Most requests per level.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Most seconds per level.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=300, help="Distinct head queries in the workload.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes.")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    queries, users = workload(args.world, args.queries, 200)
    port = free_port()
    env = {
        **os.environ,
        "SMARTBLOCK_SERVE_WORLD": str(args.world.resolve()),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    # The real command, so the benchmark measures the deployed layout (API workers + one stream consumer).
    cmd = [sys.executable, "-m", "search.cli", "serve", "--world", str(args.world), "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--log-level", "warning"]
    server = subprocess.Popen(cmd, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code in (200, 503):
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("the server did not start")
            time.sleep(0.5)
        result = asyncio.run(run(url, queries, users, args))
    finally:
        server.terminate()
        server.wait(timeout=30)
    result["world"] = str(args.world)
    result["workers"] = args.workers
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"world {args.world}, {result['n_candidates']} candidates, ranker {result['ranker_version']}, "
        f"{args.workers} worker(s), degraded={result['degraded']}"
    )
    print(f"{'endpoint':<10}{'conc':>5}{'requests':>10}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}  errors")
    for name, rows in (("healthz", result["baseline_healthz"]), ("search", result["search"])):
        for r in rows:
            print(
                f"{name:<10}{r['concurrency']:>5}{r['requests']:>10}{r['p50_ms']:>9}{r['p99_ms']:>9}"
                f"{r['rps']:>9}  {r['errors'] or '-'}"
            )


if __name__ == "__main__":
    main()
