"""Load benchmark of the search API over real HTTP on loopback (not a timed test).

Starts ``smartblock serve`` (uvicorn workers and a stream consumer) in a subprocess for a prepared world
(indexes built, features in Redis, a promoted ranker: what ``smartblock quickstart`` leaves behind), warms
the query caches with one pass over the queries per worker, then drives GET /search with an asyncio + httpx
client at concurrency 1, 8 and 32 and reports p50 / p99 latency, throughput and errors. GET /healthz measured
the same way is the baseline: what HTTP, uvicorn and the client cost without any search work.

    python benchmarks/bench_serving.py --world worlds/small [--requests 2000] [--seconds 20] [--json]

``--workers 1 2`` compares worker counts in one run: one server per count, all started before measuring, and
each level measured on them in turn (``--rounds`` interleaved slices, A B A B ...), so the background load of
a shared machine falls on each alike; it prints both rows per level and the ratios against the first count.
The load generator runs on the same cores as the servers: on two cores, two workers cannot double anything.

    python benchmarks/bench_serving.py --world worlds/small --workers 1 2 --concurrency 1 8 --seconds 12

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
        "latencies_ms": ms,
        "wall_s": wall,
    }


async def warm(url: str, search: list[tuple[str, dict]], workers: int) -> dict:
    """Every query through every worker's query caches (each worker has its own caches, encoders and Redis
    connections): one pass with one worker; with several, 4 passes per worker over fresh connections, which
    the kernel hands to a worker at random, so a query misses a given worker with probability ~e^-4."""
    passes = 1 if workers == 1 else 4 * workers
    limits = httpx.Limits(max_connections=8, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
        done = await drive(client, search, 8, len(search) * passes, 600)
    return {k: v for k, v in done.items() if k not in ("latencies_ms", "wall_s")}


async def run(urls: dict[int, str], queries: list[str], users: list[str], args: argparse.Namespace) -> dict:
    """Each (endpoint, concurrency) level is measured on every server in turn, ``--rounds`` times over
    (A B A B ...), so background load on the shared cores falls on all of them alike; each slice gets
    ``requests / rounds`` requests or ``seconds / rounds`` seconds, and its own keep-alive client (a
    fresh set of connections, spread over the server's workers as the kernel hands them out)."""
    search = [("/search", {"q": q, "user_id": users[i % len(users)], "k": 10}) for i, q in enumerate(queries)]
    out: dict = {str(w): {"warmup": await warm(url, search, w)} for w, url in urls.items()}
    levels = [
        (name, paths, c)
        for c in args.concurrency
        for name, paths in (("healthz", [("/healthz", {})]), ("search", search))
    ]
    per_slice_requests = max(1, args.requests // args.rounds)
    per_slice_seconds = args.seconds / args.rounds
    for name, paths, c in levels:
        slices: dict[int, list[dict]] = {w: [] for w in urls}
        for _ in range(args.rounds):
            for w, url in urls.items():
                limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
                async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                    slices[w].append(await drive(client, paths, c, per_slice_requests, per_slice_seconds))
        for w in urls:
            out[str(w)].setdefault(name, []).append(merge(slices[w], c))
    for w, url in urls.items():
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            info = (await client.get("/search", params={"q": queries[0], "user_id": users[0]})).json()
        out[str(w)].update({k: info[k] for k in ("ranker_version", "n_candidates", "degraded")})
    return out


def merge(slices: list[dict], concurrency: int) -> dict:
    """One level's slices together: percentiles over all latencies, req/s over the summed wall time."""
    ms = np.concatenate([s["latencies_ms"] for s in slices]) if slices else np.array([])
    errors: Counter[str] = Counter()
    for s in slices:
        errors.update(s["errors"])
    wall = sum(s["wall_s"] for s in slices)
    return {
        "concurrency": concurrency,
        "requests": int(ms.size),
        "errors": dict(errors),
        "p50_ms": round(float(np.percentile(ms, 50)), 2) if ms.size else None,
        "p99_ms": round(float(np.percentile(ms, 99)), 2) if ms.size else None,
        "rps": round(ms.size / wall, 1) if wall else None,
    }


def start_server(world: Path, workers: int) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {
        **os.environ,
        "SMARTBLOCK_SERVE_WORLD": str(world.resolve()),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }
    # The real command, so the benchmark measures the deployed layout (API workers + one stream consumer).
    cmd = [sys.executable, "-m", "search.cli", "serve", "--world", str(world), "--port", str(port)]
    cmd += ["--workers", str(workers), "--log-level", "warning"]
    return subprocess.Popen(cmd, env=env), f"http://127.0.0.1:{port}"


def wait_ready(server: subprocess.Popen, url: str) -> None:
    deadline = time.monotonic() + 600
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code in (200, 503):
                return
        except httpx.HTTPError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the server did not start")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=2000, help="Most requests per level and server.")
    parser.add_argument("--seconds", type=float, default=20.0, help="Most seconds per level and server.")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--queries", type=int, default=300, help="Distinct head queries in the workload.")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="uvicorn worker processes; several values (e.g. 1 2) start one server each and compare them.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="Interleaved slices per level (default: 1 for one server, 4 when comparing).",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workers = list(dict.fromkeys(args.workers))
    args.rounds = args.rounds or (1 if len(workers) == 1 else 4)

    queries, users = workload(args.world, args.queries, 200)
    loads = [[round(x, 2) for x in os.getloadavg()]]  # before our servers start: the machine's own load
    servers: dict[int, tuple[subprocess.Popen, str]] = {}
    try:
        # One at a time: both load the JVM and the indexes, and the second must find the embedded Redis up.
        for w in workers:
            servers[w] = start_server(args.world, w)
            wait_ready(*servers[w])
        result = asyncio.run(run({w: url for w, (_, url) in servers.items()}, queries, users, args))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(timeout=30)
    result = {
        "world": str(args.world),
        "rounds": args.rounds,
        "cpus": os.cpu_count(),
        "load_before": loads[0],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "servers": result,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print_table(result, workers)


def print_table(result: dict, workers: list[int]) -> None:
    servers = result["servers"]
    first = servers[str(workers[0])]
    print(
        f"world {result['world']}, {first['n_candidates']} candidates, ranker {first['ranker_version']}, "
        f"degraded={first['degraded']}, {result['rounds']} interleaved round(s) per level"
    )
    print(
        f"{result['cpus']} CPUs; load average (1, 5, 15 min) before {result['load_before']}, after "
        f"{result['load_after']}: the load generator and any other job share these cores"
    )
    head = f"{'workers':>7} {'endpoint':<9}{'conc':>5}{'requests':>10}{'p50 ms':>9}{'p99 ms':>9}{'req/s':>9}"
    print(f"{head}  errors")
    for name in ("healthz", "search"):
        for i in range(len(first[name])):
            for w in workers:
                r = servers[str(w)][name][i]
                print(
                    f"{w:>7} {name:<9}{r['concurrency']:>5}{r['requests']:>10}{r['p50_ms']:>9}"
                    f"{r['p99_ms']:>9}{r['rps']:>9}  {r['errors'] or '-'}"
                )
    if len(workers) < 2:
        return
    base = workers[0]
    print(f"\nratios against {base} worker(s): p50, p99 (lower is better), req/s (higher is better)")
    for name in ("healthz", "search"):
        for i in range(len(first[name])):
            b = servers[str(base)][name][i]
            for w in workers[1:]:
                r = servers[str(w)][name][i]
                print(
                    f"{w:>3} vs {base} {name:<9}c={r['concurrency']:<4} p50 x{r['p50_ms'] / b['p50_ms']:.2f}"
                    f"  p99 x{r['p99_ms'] / b['p99_ms']:.2f}  req/s x{r['rps'] / b['rps']:.2f}"
                )


if __name__ == "__main__":
    main()
