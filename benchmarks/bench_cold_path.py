"""First-seen queries end to end: what /search costs when no cache has seen the query (not a timed test).

Retrieval results and query encodings are cached per query text, so a warm head hides the path most of a
portal's distinct (rare) queries take. This starts ``smartblock serve`` (one worker by default) once per
variant, sends every query of a set of distinct logged queries once (cold: the server process has never seen
it), then the same queries again (warm), one request at a time (c=1; ``--concurrency N``: N at a time). The
server's own stage timings (retrieval, features, ranking, log, total) come from each answer's
``Server-Timing`` header. A variant sets the server's environment (``KEY=VALUE``) and may add request
parameters (``?NAME=VALUE``: ``?explain=true`` asks for every block's features in the body, as this benchmark
did for the timings before the header existed). Variants run side by side, query by query (A B A B
...; N queries each at a time), so background load falls on them alike; each variant's server is cold for
its own process.

    python benchmarks/bench_cold_path.py --world worlds/small --queries 300
    B=SMARTBLOCK_RETRIEVAL; python benchmarks/bench_cold_path.py --world worlds/small \\
        --variant torch:${B}__SPLADE__BACKEND=torch,${B}__DENSE__BACKEND=torch \\
        --variant onnx:${B}__SPLADE__BACKEND=onnx,${B}__DENSE__BACKEND=onnx
    python benchmarks/bench_cold_path.py --world worlds/small --variant lean: --variant full:?explain=true

Prints per variant and pass p50 / p90 / p99 of the client-side latency and of each server stage, req/s, and
the ratios of every variant against the first. The per-retriever breakdown (each encoder, each index
search, fusion) is ``benchmarks/bench_retrieval.py``'s.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from bench_serving import start_server, wait_ready

from data.layout import DataLayout

STAGES = ("retrieval", "features", "ranking", "log", "total")


def distinct_queries(world: Path, n: int, seed: int) -> tuple[list[str], list[str]]:
    """``n`` distinct logged queries in random order (mostly the tail, as real traffic's distinct queries
    are) and the most active users to send them as."""
    imps = DataLayout(world).read_events("impressions", validate_rows=False)
    counts = Counter(imps["query"].to_pylist())
    queries = sorted(counts)
    random.Random(seed).shuffle(queries)
    users = [u for u, _ in Counter(imps["user_id"].to_pylist()).most_common(200)]
    return queries[:n], users


def parse_variant(text: str) -> tuple[str, dict[str, str], dict[str, str]]:
    """``NAME:KEY=VALUE,?PARAM=VALUE,...`` -> (name, server environment, request parameters)."""
    name, _, assignments = text.partition(":")
    env, params = {}, {}
    for item in filter(None, assignments.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--variant {text!r}: {item!r} is not KEY=VALUE or ?PARAM=VALUE")
        if key.startswith("?"):
            params[key[1:]] = value
        else:
            env[key] = value
    return name, env, params


def summary(values: list[float]) -> dict[str, float | None]:
    a = np.asarray(values, dtype=float)
    if not a.size:
        return {"p50": None, "p90": None, "p99": None}
    return {p: round(float(np.percentile(a, q)), 2) for p, q in (("p50", 50), ("p90", 90), ("p99", 99))}


def stage_times(res: httpx.Response) -> dict[str, float]:
    """``{"retrieval": 8.01, ...}`` from a ``Server-Timing: retrieval;dur=8.01, ...`` header. A server from
    before the header gives them only in an ``explain=true`` body (``?explain=true`` in its variant)."""
    if "server-timing" not in res.headers:
        return {k: float(v) for k, v in (res.json().get("latency_ms") or {}).items()}
    out = {}
    for part in res.headers["server-timing"].split(","):
        name, _, duration = part.strip().partition(";dur=")
        if name and duration:
            out[name] = float(duration)
    return out


def measure(
    urls: dict[str, str],
    queries: list[str],
    users: list[str],
    concurrency: int = 1,
    params: dict[str, dict[str, str]] | None = None,
) -> dict:
    """Each query once per variant and pass, ``concurrency`` at a time: the variants take turns a batch of
    ``concurrency`` queries each (A B A B ...). ``params``: extra request parameters per variant."""
    out: dict = {}
    clients = {name: httpx.Client(base_url=url, timeout=30) for name, url in urls.items()}

    def send(client: httpx.Client, extra: dict[str, str], i: int, q: str) -> tuple[float, httpx.Response]:
        request = {"q": q, "user_id": users[i % len(users)], "k": 10, **extra}
        started = time.perf_counter()
        res = client.get("/search", params=request)
        return time.perf_counter() - started, res

    try:
        with ThreadPoolExecutor(concurrency, thread_name_prefix="client") as senders:
            for phase in ("cold", "warm"):
                client_ms: dict[str, list[float]] = {n: [] for n in urls}
                stage_ms: dict[str, dict[str, list[float]]] = {n: {s: [] for s in STAGES} for n in urls}
                errors: dict[str, Counter[str]] = {n: Counter() for n in urls}
                walls = dict.fromkeys(urls, 0.0)
                numbered = list(enumerate(queries))
                for first in range(0, len(queries), concurrency):
                    batch = numbered[first : first + concurrency]
                    for name, client in clients.items():
                        began = time.perf_counter()
                        extra = (params or {}).get(name, {})
                        answers = list(senders.map(lambda iq, c=client, e=extra: send(c, e, *iq), batch))
                        walls[name] += time.perf_counter() - began
                        for elapsed, res in answers:
                            if res.status_code != 200:
                                errors[name][str(res.status_code)] += 1
                                continue
                            client_ms[name].append(elapsed * 1000)
                            for stage, ms in stage_times(res).items():
                                if stage in stage_ms[name]:
                                    stage_ms[name][stage].append(float(ms))
                for name in urls:
                    out.setdefault(name, {})[phase] = {
                        "requests": len(client_ms[name]),
                        "errors": dict(errors[name]),
                        "rps": round(len(client_ms[name]) / max(walls[name], 1e-9), 1),
                        "client_ms": summary(client_ms[name]),
                        "stages_ms": {s: summary(v) for s, v in stage_ms[name].items()},
                    }
    finally:
        for client in clients.values():
            client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, required=True)
    parser.add_argument(
        "--queries", type=int, default=300, help="Distinct logged queries, each sent once cold."
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="NAME:KEY=VALUE,?PARAM=VALUE,... (server environment; ?: request parameters)",
    )
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--concurrency", type=int, default=1, help="Requests in flight at once (c); each query still once."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    variants = [parse_variant(v) for v in args.variant] or [("default", {}, {})]
    queries, users = distinct_queries(args.world, args.queries, args.seed)
    load_before = [round(x, 2) for x in os.getloadavg()]
    servers = {}
    saved = dict(os.environ)
    try:
        for name, env, _ in variants:
            os.environ.clear()
            os.environ.update({**saved, **env})
            servers[name] = start_server(args.world, args.workers)
            wait_ready(*servers[name])
        os.environ.clear()
        os.environ.update(saved)
        urls = {n: url for n, (_, url) in servers.items()}
        result = measure(urls, queries, users, args.concurrency, {n: p for n, _, p in variants})
    finally:
        os.environ.clear()
        os.environ.update(saved)
        for proc, _ in servers.values():
            proc.terminate()
        for proc, _ in servers.values():
            proc.wait(timeout=30)
    report = {
        "world": str(args.world),
        "queries": len(queries),
        "workers": args.workers,
        "concurrency": args.concurrency,
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": [round(x, 2) for x in os.getloadavg()],
        "variants": {name: {"env": env, "params": params, **result[name]} for name, env, params in variants},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print_report(report)


def print_report(report: dict) -> None:
    print(
        f"world {report['world']}: {report['queries']} distinct logged queries, once cold then once warm, "
        f"c={report['concurrency']}, {report['workers']} worker(s); {report['cpus']} CPUs, load average "
        f"before {report['load_before']}, after {report['load_after']}"
    )
    head = f"{'variant':<12}{'pass':<6}{'what':<11}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"
    print(head)
    variants = report["variants"]
    for name, v in variants.items():
        for phase in ("cold", "warm"):
            r = v[phase]
            rows = [("client", r["client_ms"])] + [(s, r["stages_ms"][s]) for s in STAGES]
            for what, p in rows:
                print(f"{name:<12}{phase:<6}{what:<11}{p['p50']!s:>9}{p['p90']!s:>9}{p['p99']!s:>9}")
            print(f"{name:<12}{phase:<6}{'req/s':<11}{r['rps']:>9}   errors {r['errors'] or '-'}")
    names = list(variants)
    if len(names) < 2:
        return
    base = variants[names[0]]
    print(f"\nratios against {names[0]} (lower is better)")
    for name in names[1:]:
        for phase in ("cold", "warm"):
            for what in ("client", "retrieval"):
                a = base[phase]["client_ms" if what == "client" else "stages_ms"]
                b = variants[name][phase]["client_ms" if what == "client" else "stages_ms"]
                a, b = (a if what == "client" else a[what]), (b if what == "client" else b[what])
                if None in (a["p50"], b["p50"]):  # a server without Server-Timing, asked without explain
                    print(f"{name} vs {names[0]} {phase} {what}: no stage times on one side")
                    continue
                print(
                    f"{name} vs {names[0]} {phase} {what}: p50 x{b['p50'] / a['p50']:.2f}, "
                    f"p99 x{b['p99'] / a['p99']:.2f}"
                )


if __name__ == "__main__":
    main()
