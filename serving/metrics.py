"""Prometheus metrics of one app, in their own registry (several apps in one process must not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from features.stream import ConsumerStats

# Seconds; dense below 50 ms, where the latency goals sit.
BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class CacheCollector(Collector):
    """Hit rate of each named cache, read at scrape time from objects with ``hits`` and ``misses``."""

    def __init__(self, caches: Callable[[], dict[str, object]]) -> None:
        self.caches = caches

    def collect(self) -> Iterator[GaugeMetricFamily]:
        rate = GaugeMetricFamily("smartblock_cache_hit_ratio", "Hits / lookups since start", labels=["cache"])
        lookups = GaugeMetricFamily("smartblock_cache_lookups", "Lookups since start", labels=["cache"])
        for name, cache in self.caches().items():
            hits, misses = int(getattr(cache, "hits", 0)), int(getattr(cache, "misses", 0))
            total = hits + misses
            rate.add_metric([name], hits / total if total else 0.0)
            lookups.add_metric([name], total)
        yield rate
        yield lookups


class ConsumerCollector(Collector):
    """What this worker's stream consumer counted since it started, read at scrape time: events applied and
    dead-lettered, and those lost to a cap (``trimmed``: the event stream's; ``dead_trimmed``: the dead
    letters'), which an alert can watch instead of the logs."""

    def __init__(self, stats: Callable[[], ConsumerStats | None]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "smartblock_stream_consumer_events",
            "This worker's stream consumer since it started, by outcome (ConsumerStats)",
            labels=["outcome"],
        )
        stats = self.stats()
        if stats is not None:
            for f in fields(stats):
                value = getattr(stats, f.name)
                if isinstance(value, int):
                    family.add_metric([f.name], value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage = Histogram(
            "smartblock_stage_seconds",
            "Latency of each /search stage",
            ["stage"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "smartblock_http_requests",
            "HTTP requests by route and status",
            ["route", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "smartblock_errors", "Errors by kind (exception class)", ["kind"], registry=self.registry
        )
        self.degraded = Counter(
            "smartblock_degraded_searches",
            "Searches answered degraded, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.events = Counter(
            "smartblock_events", "Events received by POST /events", ["outcome"], registry=self.registry
        )
        self.impressions_lost = Counter(
            "smartblock_impressions_unlogged", "Impressions not written (store down)", registry=self.registry
        )
        self.served_lost = Counter(
            "smartblock_served_features_unlogged",
            "Served feature rows not written, by reason (store down; invalid: a non-finite value)",
            ["reason"],
            registry=self.registry,
        )
        self.over_budget = Counter(
            "smartblock_search_over_budget", "Searches slower than the budget", registry=self.registry
        )

    def watch_caches(self, caches: Callable[[], dict[str, object]]) -> None:
        self.registry.register(CacheCollector(caches))

    def watch_consumer(self, stats: Callable[[], ConsumerStats | None]) -> None:
        self.registry.register(ConsumerCollector(stats))
