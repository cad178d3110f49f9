"""The live feature consumer: events/s, CPU and Redis calls per event. A script, not a test:

    python benchmarks/bench_stream_consumer.py --world worlds/small [--events 20000] [--trickle 2000] [--json]

Real logged events of ``--world`` (impressions and their interactions, in time order, from the first days)
are published on a stream of the benchmark's own namespace through ``FeatureStore.publish``, the path
/search and /events take, and applied by ``features.stream.StreamConsumer``, the process ``smartblock
serve`` runs beside its workers. Two loads:

- **backlog**: every event published first, then ``run(until_idle=True)``: batches of ``stream_batch``, the
  consumer's throughput when it has fallen behind (a restart, a burst);
- **trickle**: one event published, then one ``step``, as under light live traffic (one search at a time):
  the time from publish to applied, per event.

For each: wall time, events/s, the consumer's CPU seconds per event (this process; the trickle's include its
``publish``), the Redis commands per event by command (``INFO commandstats``, the server's own count, which
also counts the commands the apply script runs, so nothing else should use the server meanwhile) and the
Redis CPU per event (``INFO cpu``). Baseline in the same process: the stream's own floor, the backlog's
entries read by a second consumer group and acknowledged with nothing applied (XREADGROUP + XACK), whose
ratio to the backlog says what applying costs over reading.

Uses REDIS_URL, else the Redis on 127.0.0.1:6379 when it answers, else the embedded one; deletes its
namespace afterwards.
"""

from __future__ import annotations

import argparse
import heapq
import json
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import redis
from bench_features import local_settings

from data.contracts import Interaction, SearchImpression
from data.io import iter_records
from data.layout import DataLayout
from features.store import RedisFeatureStore
from features.stream import StreamConsumer

FLOOR_GROUP = "bench-floor"


def logged_events(world: Path, n: int) -> list[SearchImpression | Interaction]:
    """The first ``n`` logged impressions and interactions of ``world``, in time order (a click after its
    impression, as they reach the stream live)."""
    layout = DataLayout(world)

    def kind(name: str, contract: type) -> Iterator[SearchImpression | Interaction]:
        for day in layout.days(name):  # type: ignore[arg-type]
            for path in layout.day_files(name, day):  # type: ignore[arg-type]
                yield from iter_records(path, contract)  # type: ignore[misc]

    merged = heapq.merge(
        kind("impressions", SearchImpression), kind("interactions", Interaction), key=lambda r: r.ts
    )
    out = []
    for record in merged:
        out.append(record)
        if len(out) == n:
            break
    return out


def redis_counters(client: redis.Redis) -> tuple[dict[str, int], float]:
    """(calls per command the server has run, its CPU seconds) so far. Commands a script runs count too:
    the apply script's SET, HSET, EXPIRE... beside the EVALSHA that ran them."""
    stats = client.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    cpu = client.info("cpu")
    return calls, float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def measured(client: redis.Redis, events: int, run: Callable[[], list[float] | None]) -> dict:
    calls, redis_cpu = redis_counters(client)
    cpu, wall = time.process_time(), time.perf_counter()
    latencies = run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    calls2, redis_cpu2 = redis_counters(client)
    per_command = {c: (n - calls.get(c, 0)) / events for c, n in calls2.items() if c != "info"}
    out = {
        "events": events,
        "seconds": round(wall, 3),
        "events_per_s": round(events / wall, 1),
        "consumer_cpu_ms_per_event": round(cpu / events * 1000, 4),
        "redis_calls_per_event": round(sum(per_command.values()), 2),
        "redis_calls_by_command": {c: round(n, 3) for c, n in sorted(per_command.items()) if n},
        "redis_cpu_ms_per_event": round((redis_cpu2 - redis_cpu) / events * 1000, 4),
    }
    if latencies:
        ms = np.array(latencies) * 1000
        out["publish_to_applied_ms"] = {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
        }
    return out


def backlog(store: RedisFeatureStore, events: list) -> dict:
    store.publish(events)
    consumer = StreamConsumer(store, store.settings, consumer="bench")

    def drain() -> None:
        consumer.run(until_idle=True)

    out = measured(store.client, len(events), drain)
    out["applied"] = consumer.stats.applied
    out["dead"] = consumer.stats.dead
    return out


def floor(store: RedisFeatureStore, n: int) -> dict:
    """The same entries read by another group and acknowledged, nothing applied."""
    client, stream = store.client, store.keys.events_stream
    client.xgroup_create(stream, FLOOR_GROUP, id="0")
    batch = store.settings.stream_batch

    def read_all() -> None:
        while True:
            got = client.xreadgroup(FLOOR_GROUP, "floor", {stream: ">"}, count=batch)
            ids = [i for _, items in got for i, _ in items] if got else []
            if not ids:
                return
            client.xack(stream, FLOOR_GROUP, *ids)

    return measured(client, n, read_all)


def trickle(store: RedisFeatureStore, events: list) -> dict:
    consumer = StreamConsumer(store, store.settings, consumer="bench-trickle")
    consumer.ensure_group()
    consumer.run(until_idle=True)  # whatever the backlog left

    def one_by_one() -> list[float]:
        latencies = []
        for record in events:
            began = time.perf_counter()
            done = consumer.stats.acked + consumer.stats.dead + consumer.stats.waiting
            store.publish([record])
            # Until this entry is acknowledged, sent to the dead letters or left waiting (an older one that
            # a step handles first does not end the wait).
            while consumer.stats.acked + consumer.stats.dead + consumer.stats.waiting == done:
                consumer.step()
            latencies.append(time.perf_counter() - began)
        return latencies

    out = measured(store.client, len(events), one_by_one)
    out["applied"] = consumer.stats.applied
    out["dead"] = consumer.stats.dead
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world", type=Path, default=Path("worlds/small"))
    parser.add_argument("--events", type=int, default=20_000, help="Events of the backlog load.")
    parser.add_argument("--trickle", type=int, default=2_000, help="Events of the trickle load (after).")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    events = logged_events(args.world, args.events + args.trickle)
    store = RedisFeatureStore.connect(local_settings(f"bstream{uuid.uuid4().hex[:8]}"))
    try:
        report = {
            "redis": store.settings.redis_url or "embedded",
            "world": str(args.world),
            "stream_batch": store.settings.stream_batch,
            "backlog": backlog(store, events[: args.events]),
        }
        report["floor"] = floor(store, report["backlog"]["events"])
        if len(events) > args.events:
            report["trickle"] = trickle(store, events[args.events :])
    finally:
        store.clear()
    report["backlog"]["events_per_s_vs_floor"] = round(
        report["backlog"]["events_per_s"] / report["floor"]["events_per_s"], 4
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(f"{args.world}: {args.events} events backlog, {args.trickle} trickle; Redis {report['redis']}")
    head = ("events/s", "CPU ms/ev", "Redis calls/ev", "Redis ms/ev", "p50/p99 ms")
    print(f"{'load':8} {head[0]:>10} {head[1]:>10} {head[2]:>15} {head[3]:>12} {head[4]:>14}")
    loads = [load for load in ("floor", "backlog", "trickle") if load in report]
    for load in loads:
        r = report[load]
        lat = r.get("publish_to_applied_ms")
        lat_s = f"{lat['p50']}/{lat['p99']}" if lat else "-"
        print(
            f"{load:8} {r['events_per_s']:>10} {r['consumer_cpu_ms_per_event']:>10} "
            f"{r['redis_calls_per_event']:>15} {r['redis_cpu_ms_per_event']:>12} {lat_s:>14}"
        )
    print(f"backlog: events/s x{report['backlog']['events_per_s_vs_floor']} of the floor")
    for load in loads[1:]:
        r = report[load]
        by_command = sorted(r["redis_calls_by_command"].items(), key=lambda x: -x[1])
        top = ", ".join(f"{c} {n}" for c, n in by_command)
        print(f"{load}: Redis commands per event, a script's own included: {top}")


if __name__ == "__main__":
    main()
