"""Prometheus metrics of one app, in their own registry (several apps in one process must not collide)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

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


class LossCollector(Collector):
    """What the stream's caps cost its reader groups (``features.losses``), read from Redis at scrape time:
    the live consumer usually runs in a process of its own (`features stream`, no /metrics), and the totals
    outlast its restarts. Nothing when Redis cannot answer now."""

    def __init__(self, totals: Callable[[], dict[tuple[str, str], int] | None]) -> None:
        self.totals = totals

    def collect(self) -> Iterator[CounterMetricFamily]:
        events = CounterMetricFamily(
            "smartblock_stream_events_lost",
            "Events a cap removed before a reader group used them (cap: the event stream's, or the dead "
            "letters', whose events were acknowledged)",
            labels=["group", "cap"],
        )
        gaps = CounterMetricFamily(
            "smartblock_stream_cap_gaps",
            "Times the event stream's cap had trimmed past a group's last read (counted: whether Redis could "
            "count their events; Redis 6.2 cannot)",
            labels=["group", "counted"],
        )
        got = self.totals() or {}
        for (group, what), n in sorted(got.items()):
            if what in _CAPS:
                events.add_metric([group, _CAPS[what]], n)
        for group in sorted({group for group, _ in got}):
            uncounted = got.get((group, "uncounted"), 0)
            gaps.add_metric([group, "true"], got.get((group, "gaps"), 0) - uncounted)
            gaps.add_metric([group, "false"], uncounted)
        yield events
        yield gaps


_CAPS = {"trimmed": "stream", "dead_letters_trimmed": "dead_letters"}  # features.losses' fields, by cap


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

    def watch_stream_losses(self, totals: Callable[[], dict[tuple[str, str], int] | None]) -> None:
        self.registry.register(LossCollector(totals))
