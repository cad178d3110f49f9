"""What POST /events may write, over HTTP to a real server, applied by the real stream consumer to Redis.

The server runs without its own consumer, so each test applies the stream when it chooses (the consumer of
``smartblock features stream``, run until idle): what is counted is then exact, not raced.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI

from features.ops import CLICKS
from features.store import RedisFeatureStore
from features.stream import StreamConsumer
from serving.config import ServingSettings
from serving.runtime import Parts

QUERY = "jeju island"
WRITE_KEY = "test-write-key-0123456789"


@pytest.fixture(scope="module")
def api(app_factory: Callable[..., FastAPI], live_server: Callable) -> Iterator[httpx.Client]:
    with (
        live_server(app_factory(serving=ServingSettings(consume_events=False))) as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
    ):
        yield client


def apply_stream(store: RedisFeatureStore) -> None:
    StreamConsumer(store, store.settings).run(until_idle=True)


def served(api: httpx.Client, store: RedisFeatureStore, user: str, k: int = 3) -> dict[str, Any]:
    """A search whose impression the consumer has applied: its request context is stored."""
    page = api.post("/search", json={"query": QUERY, "user_id": user, "k": k}).json()
    apply_stream(store)
    assert page["request_id"] in store.contexts([page["request_id"]])
    return page


def clicks(store: RedisFeatureStore, request_id: str, block_id: str) -> float:
    """The click counter of (the request's query, block) as the consumer keeps it."""
    query = store.contexts([request_id])[request_id].query
    (got,) = store.fetch([(store.keys.query_blocks(query), [block_id])])
    blob = got.get(block_id)
    return float(np.frombuffer(blob, "<f8")[CLICKS]) if blob else 0.0


@pytest.fixture(scope="module")
def user(api: httpx.Client) -> str:
    return api.get("/users", params={"limit": 5}).json()["users"][0]


def test_a_retried_event_id_is_acknowledged_and_counted_once(
    api: httpx.Client, feature_store: RedisFeatureStore, user: str
) -> None:
    page = served(api, feature_store, user)
    block = page["blocks"][1]["block_id"]
    before = clicks(feature_store, page["request_id"], block)
    click = {
        "request_id": page["request_id"],
        "user_id": user,
        "block_id": block,
        "position": 2,
        "type": "click",
        "event_id": "click-7f3a",
    }
    # A client retry: the same click three times, no ts (the server stamps three different receive times).
    for _ in range(3):
        res = api.post("/events", json={"events": [click]})
        assert res.status_code == 202 and res.json()["accepted"] == 1, res.text
    apply_stream(feature_store)
    assert clicks(feature_store, page["request_id"], block) == before + 1
    # Another id is another event.
    api.post("/events", json={"events": [{**click, "event_id": "click-7f3b"}]})
    apply_stream(feature_store)
    assert clicks(feature_store, page["request_id"], block) == before + 2


def test_each_out_of_bounds_field_is_rejected_and_the_valid_event_accepted(
    api: httpx.Client, feature_store: RedisFeatureStore, parts: Parts, user: str
) -> None:
    page = served(api, feature_store, user)
    shown = [b["block_id"] for b in page["blocks"]]
    elsewhere = next(b for b in parts.catalog.blocks if b not in shown)  # known, but not on this page
    good = {"request_id": page["request_id"], "user_id": user, "block_id": shown[0], "position": 1}
    bad: list[tuple[dict[str, Any], str]] = [
        ({"block_id": "no-such-block"}, "block_id"),
        ({"block_id": "b" * 20_000}, "block_id"),
        ({"type": "dwell", "dwell_ms": 10**18}, "dwell_ms"),
        (
            {"type": "dwell", "dwell_ms": 7_200_000},
            "dwell_ms",
        ),  # 2 h: under the schema's cap, over the setting
        ({"position": 10**9}, "position"),
        ({"position": 51}, "position"),  # over serving.max_k
        ({"ts": "2099-01-01T00:00:00Z"}, "ts"),
        ({"ts": "2020-01-01T00:00:00Z"}, "ts"),
        ({"user_id": "u\u0000x"}, "user_id"),
        ({"event_id": "id\nwith a newline"}, "event_id"),
        ({"block_id": elsewhere}, "block_id"),  # a real block this request did not show there
        ({"position": 3}, "block_id"),  # position 3 shows another block
        ({"position": 4}, "position"),  # the page had 3 blocks
        ({"user_id": "someone-else"}, "user_id"),  # the request was served to another user
    ]
    events = [{**good, "type": "click"}] + [{**good, "type": "click", **change} for change, _ in bad]
    res = api.post("/events", json={"events": events})
    assert res.status_code == 202, res.text
    body = res.json()
    assert (body["accepted"], body["rejected"]) == (1, len(bad))
    got = {r["index"]: r for r in body["rejections"]}
    for i, (_, field) in enumerate(bad, 1):
        assert got[i]["field"] == field, (i, got[i])
        assert got[i]["reason"].startswith(f"{field}: ")
    assert "b" * 100 not in res.text  # the junk is named, not echoed


def test_an_event_ahead_of_its_impression_is_checked_by_the_consumer(
    api: httpx.Client, feature_store: RedisFeatureStore, parts: Parts, user: str
) -> None:
    """Posted before the consumer applied its impression, the API cannot check the block against the page;
    the consumer does, and dead-letters it before it writes anything."""
    apply_stream(feature_store)
    page = api.post("/search", json={"query": QUERY, "user_id": user, "k": 3}).json()
    shown = [b["block_id"] for b in page["blocks"]]
    elsewhere = next(b for b in parts.catalog.blocks if b not in shown)
    click = {"request_id": page["request_id"], "user_id": user, "block_id": elsewhere, "position": 2}
    assert api.post("/events", json={"events": [{**click, "type": "click"}]}).json()["accepted"] == 1
    before = clicks_of_query(feature_store, elsewhere)
    dead_before = feature_store.client.xlen(feature_store.keys.dead_letters)
    apply_stream(feature_store)
    assert clicks_of_query(feature_store, elsewhere) == before
    dead = feature_store.client.xrevrange(feature_store.keys.dead_letters, count=1)
    assert feature_store.client.xlen(feature_store.keys.dead_letters) == dead_before + 1
    assert dead[0][1][b"reason"].startswith(b"block_id: ")


def clicks_of_query(store: RedisFeatureStore, block_id: str) -> bytes | None:
    (got,) = store.fetch([(store.keys.query_blocks(QUERY), [block_id])])
    return got.get(block_id)


def test_every_key_an_event_writes_expires(
    api: httpx.Client, feature_store: RedisFeatureStore, user: str
) -> None:
    page = served(api, feature_store, user)
    block = page["blocks"][0]["block_id"]
    event = {"request_id": page["request_id"], "user_id": user, "block_id": block, "position": 1}
    events = [{**event, "type": "click"}, {**event, "type": "dwell", "dwell_ms": 1200}]
    assert api.post("/events", json={"events": events}).json()["accepted"] == 2
    apply_stream(feature_store)
    k = feature_store.keys
    query = feature_store.contexts([page["request_id"]])[page["request_id"]].query
    written = [
        k.query_blocks(query),
        k.block_stats(block),
        k.user(user),
        k.request_context(page["request_id"]),
    ]
    ttl = {key: feature_store.client.ttl(key) for key in written}
    assert all(t > 0 for t in ttl.values()), ttl
    live_s = feature_store.settings.live_ttl_days * 86_400
    assert 0 < ttl[k.query_blocks(query)] <= live_s


def test_the_write_key_guards_events_when_set(
    app_factory: Callable[..., FastAPI], live_server: Callable, feature_store: RedisFeatureStore
) -> None:
    serving = ServingSettings(consume_events=False, write_key=WRITE_KEY)
    with live_server(app_factory(serving=serving)) as live, httpx.Client(base_url=live.url) as client:
        batch = {"events": [{"x": 1}]}
        assert client.post("/events", json=batch).status_code == 401
        wrong = client.post("/events", json=batch, headers={"X-Write-Key": "wrong-key-0123456789"})
        assert wrong.status_code == 403
        right = client.post("/events", json=batch, headers={"X-Write-Key": WRITE_KEY})
        assert right.status_code == 202 and right.json()["rejected"] == 1
        assert client.get("/healthz").status_code == 200  # the key guards /events only
