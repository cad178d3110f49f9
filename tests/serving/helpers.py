"""Helpers shared by the serving tests."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import httpx

from data.contracts import SearchImpression, ServedFeatures
from features.store import RedisFeatureStore


def impression_of(store: RedisFeatureStore, request_id: str) -> SearchImpression:
    """The impression the server logged for a request, read back from the event stream."""
    for _, fields in store.client.xrevrange(store.keys.events_stream, count=2000):
        if fields[b"kind"] == b"impression":
            imp = SearchImpression.model_validate_json(fields[b"data"])
            if imp.request_id == request_id:
                return imp
    raise AssertionError(f"no impression {request_id} on the stream")


def served_of(store: RedisFeatureStore, request_id: str) -> ServedFeatures | None:
    """The served feature rows the server logged for a request (stream kind "served"), None if none."""
    for _, fields in store.client.xrevrange(store.keys.events_stream, count=2000):
        if fields[b"kind"] == b"served":
            served = ServedFeatures.model_validate_json(fields[b"data"])
            if served.request_id == request_id:
                return served
    return None


QUERIES = ["jeju island", "jeju island restaurants", "seoul", "iphone 16", "galbi jjim"]


@dataclass
class Answer:
    at: float
    status: int
    degraded: bool
    seconds: float


class Traffic:
    """Two client threads searching continuously, recording every answer (fault tests read them after)."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(2)]

    def _run(self, n: int) -> None:
        with httpx.Client(base_url=self.url, timeout=self.timeout_s) as client:
            i = n
            while not self._stop.is_set():
                started = time.monotonic()
                res = client.get("/search", params={"q": QUERIES[i % len(QUERIES)], "user_id": f"u{i % 7}"})
                took = time.monotonic() - started
                degraded = res.status_code == 200 and res.json()["degraded"]
                self.answers.append(Answer(started, res.status_code, degraded, took))
                i += 1

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def since(self, t: float) -> list[Answer]:
        return [a for a in self.answers if a.at >= t]

    def between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at < end]

    def wait_for(self, degraded: bool, after: float, timeout: float = 10.0) -> float:
        """The time of the first answer after ``after`` with this degraded flag."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = next((a for a in self.since(after) if a.degraded == degraded), None)
            if hit is not None:
                return hit.at
            time.sleep(0.05)
        raise AssertionError(f"no answer with degraded={degraded} within {timeout} s")
