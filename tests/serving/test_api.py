"""Route-level tests of the API against the ASGI app (lifespan run, real Redis, real indexes and model)."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from features.definitions import NAMES
from features.store import RedisFeatureStore
from serving.config import ServingSettings

from .helpers import impression_of

API_KEY = "test-admin-key-0123456789"
QUERY = "jeju island"


@pytest.fixture(scope="module")
def client(app_factory: Callable[..., FastAPI]) -> Iterator[TestClient]:
    with TestClient(app_factory()) as c:
        yield c


@pytest.fixture(scope="module")
def user(client: TestClient) -> str:
    return client.get("/users", params={"limit": 5}).json()["users"][0]


def test_search_ranks_with_the_promoted_model_and_logs_the_impression(
    client: TestClient, user: str, feature_store: RedisFeatureStore, trained_versions: list[str]
) -> None:
    res = client.post("/search", json={"query": QUERY, "user_id": user, "k": 5})
    assert res.status_code == 200, res.text
    body = res.json()
    assert body["degraded"] is False and "degraded_reason" not in body
    assert body["ranker_version"] == trained_versions[0]
    assert (body["experiment"], body["variant"]) == ("default", "control")
    blocks = body["blocks"]
    assert len(blocks) == 5 and body["n_candidates"] >= 5
    scores = [b["score"] for b in blocks]
    assert scores == sorted(scores, reverse=True)
    assert all(b["docs"] and {"doc_id", "title", "genre"} <= set(b["docs"][0]) for b in blocks)
    assert "features" not in blocks[0] and "latency_ms" not in body

    imp = impression_of(feature_store, body["request_id"])
    assert [s.block_id for s in imp.shown] == [b["block_id"] for b in blocks]
    assert [s.position for s in imp.shown] == [1, 2, 3, 4, 5]
    assert all(s.propensity == 1.0 for s in imp.shown)
    assert (imp.user_id, imp.query, imp.ranker_version) == (user, QUERY, trained_versions[0])
    assert imp.n_candidates == body["n_candidates"]


def test_get_search_and_explain(client: TestClient, user: str) -> None:
    res = client.get("/search", params={"q": "Jeju  Island", "user_id": user, "k": 3, "explain": "true"})
    assert res.status_code == 200, res.text
    body = res.json()
    assert len(body["blocks"]) == 3
    assert set(body["blocks"][0]["features"]) == set(NAMES)
    assert {"retrieval", "features", "ranking", "log", "total"} <= set(body["latency_ms"])


def test_every_search_answer_carries_its_stage_times_in_server_timing(client: TestClient, user: str) -> None:
    """Without explain too: the body stays lean and the header (W3C Server-Timing) still says where the time
    went, stage by stage, as the pipeline measured it."""
    res = client.get("/search", params={"q": QUERY, "user_id": user, "k": 3})
    assert res.status_code == 200, res.text
    assert res.headers["content-type"] == "application/json"
    stages = {}
    for part in res.headers["server-timing"].split(", "):
        name, _, duration = part.partition(";dur=")
        stages[name] = float(duration)
    assert {"retrieval", "features", "ranking", "log", "total"} <= set(stages)
    assert 0 < stages["total"] >= max(v for k, v in stages.items() if k != "total")
    assert "latency_ms" not in res.json()

    explained = client.post("/search", json={"query": QUERY, "user_id": user, "k": 3, "explain": True})
    timing = explained.headers["server-timing"]
    assert [p.partition(";")[0] for p in timing.split(", ")] == list(explained.json()["latency_ms"])


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"query": "x", "user_id": "u1", "k": 0}, "k"),
        ({"query": "x", "user_id": "u1", "k": 51}, "k"),  # over serving.max_k, under the schema's bound
        ({"query": "x" * 300, "user_id": "u1"}, "query"),
        ({"query": "", "user_id": "u1"}, "query"),
        ({"query": "x", "user_id": "bad id with spaces"}, "user_id"),
        ({"query": "x", "user_id": "u1", "surprise": 1}, "surprise"),
        ({"user_id": "u1"}, "query"),
    ],
)
def test_bad_search_input_is_422_naming_the_field(client: TestClient, payload: dict, field: str) -> None:
    res = client.post("/search", json=payload)
    assert res.status_code == 422, res.text
    assert any(err["loc"][-1] == field for err in res.json()["detail"])


def test_refused_query_is_422_without_a_stack_trace(client: TestClient) -> None:
    res = client.post("/search", json={"query": "제주도 맛집", "user_id": "u1"})
    assert res.status_code == 422
    body = res.json()
    assert body["kind"] == "QueryError" and "unsupported language" in body["error"]
    assert "Traceback" not in res.text


def test_body_over_the_limit_is_413(client: TestClient) -> None:
    body = b'{"events": [' + b" " * 70_000 + b"]}"
    res = client.post("/events", content=body, headers={"content-type": "application/json"})
    assert res.status_code == 413


def test_events_accept_valid_and_reject_invalid_with_reasons(client: TestClient, user: str) -> None:
    search = client.post("/search", json={"query": QUERY, "user_id": user, "k": 3}).json()
    block = search["blocks"][0]
    good = {"request_id": search["request_id"], "user_id": user, "block_id": block["block_id"], "position": 1}
    res = client.post(
        "/events",
        json={
            "events": [
                {**good, "type": "click", "doc_id": block["docs"][0]["doc_id"]},
                {**good, "type": "dwell"},  # a dwell needs dwell_ms
                {**good, "type": "click", "position": 0},
                {**good, "type": "dwell", "dwell_ms": 1200},
            ]
        },
    )
    assert res.status_code == 202, res.text
    body = res.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    reasons = {r["index"]: r["reason"] for r in body["rejections"]}
    assert "dwell_ms" in reasons[1] and "position" in reasons[2]


def test_event_batch_over_the_limit_is_422(client: TestClient) -> None:
    res = client.post("/events", json={"events": [{"x": 1}] * 101})
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "events"]


def test_clicks_reach_the_live_features(client: TestClient, user: str) -> None:
    """A click posted to /events goes through the stream consumer into Redis and shows in the next search."""
    first = client.post("/search", json={"query": QUERY, "user_id": user, "k": 10, "explain": True}).json()
    target = first["blocks"][-1]
    before = target["features"]["qb_clicks_log"]
    click = {
        "request_id": first["request_id"],
        "user_id": user,
        "block_id": target["block_id"],
        "position": len(first["blocks"]),
        "type": "click",
    }
    assert client.post("/events", json={"events": [click]}).json()["accepted"] == 1
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        payload = {"query": QUERY, "user_id": user, "k": 50, "explain": True}
        again = client.post("/search", json=payload).json()
        now = {b["block_id"]: b["features"]["qb_clicks_log"] for b in again["blocks"]}
        if now.get(target["block_id"], before) > before:
            return
        time.sleep(0.2)
    raise AssertionError("the click never reached the features")


def test_a_sessions_click_reaches_its_own_session_features_only(client: TestClient, user: str) -> None:
    """/search passes its session_id to the features: a click in session A shows in A's next search as
    session interest in the clicked block's intent, and not in a search of session B."""
    session_a, session_b = f"sess-a-{user}-{time.monotonic_ns()}", f"sess-b-{user}-{time.monotonic_ns()}"
    first = client.post("/search", json={"query": QUERY, "user_id": user, "k": 10, "session_id": session_a})
    target = first.json()["blocks"][0]
    click = {
        "request_id": first.json()["request_id"],
        "user_id": user,
        "block_id": target["block_id"],
        "position": 1,
        "type": "click",
    }
    assert client.post("/events", json={"events": [click]}).json()["accepted"] == 1

    def session_click(session: str) -> float:
        payload = {"query": QUERY, "user_id": user, "k": 50, "explain": True, "session_id": session}
        blocks = client.post("/search", json=payload).json()["blocks"]
        mine = [b for b in blocks if b["block_id"] == target["block_id"]]
        return mine[0]["features"]["session_intent_click"]

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and session_click(session_a) == 0:
        time.sleep(0.2)
    assert session_click(session_a) > 0.9  # one click, seconds old (half-life 30 min)
    assert session_click(session_b) == 0.0


def test_health_ready_users_metrics(client: TestClient, trained_versions: list[str]) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "worker": os.getpid()}
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["ranker_version"] == trained_versions[0]
    users = client.get("/users", params={"limit": 3}).json()
    assert len(users["users"]) == 3 and users["total"] >= 3
    client.get("/search", params={"q": QUERY, "user_id": "u-metrics"})
    text = client.get("/metrics").text
    assert 'smartblock_stage_seconds_bucket{le="0.005",stage="retrieval"}' in text
    assert 'smartblock_cache_hit_ratio{cache="retrieval"}' in text
    assert 'smartblock_http_requests_total{route="/search",status="200"}' in text
    assert ready.json()["consumer"]["behind_cap"] is False


def test_metrics_show_what_the_stream_caps_cost_from_redis(
    client: TestClient, feature_store: RedisFeatureStore
) -> None:
    """The live consumer runs in a process of its own under `serve`: what the caps cost its readers is kept
    in Redis (features.losses), and every API worker's /metrics reads it there, for an alert to watch."""
    from features import losses

    stream = feature_store.keys.events_stream
    losses.record(feature_store.client, stream, "elsewhere", trimmed=3, gaps=2, uncounted=1)
    losses.record(feature_store.client, stream, "elsewhere", dead_letters_trimmed=5)
    try:
        text = client.get("/metrics").text
    finally:
        feature_store.client.delete(losses.losses_key(stream))
    assert 'smartblock_stream_events_lost_total{cap="stream",group="elsewhere"} 3.0' in text
    assert 'smartblock_stream_events_lost_total{cap="dead_letters",group="elsewhere"} 5.0' in text
    assert 'smartblock_stream_cap_gaps_total{counted="true",group="elsewhere"} 1.0' in text
    assert 'smartblock_stream_cap_gaps_total{counted="false",group="elsewhere"} 1.0' in text


def test_admin_needs_the_key(client: TestClient) -> None:
    assert client.get("/admin/models").status_code == 401
    assert client.get("/admin/models", headers={"X-API-Key": "wrong-key-0123456789"}).status_code == 403
    assert client.get("/admin/models", headers={"X-API-Key": API_KEY}).status_code == 200


def test_admin_without_a_configured_key_refuses(app_factory: Callable[..., FastAPI]) -> None:
    with TestClient(app_factory(serving=ServingSettings())) as c:
        assert c.get("/admin/models", headers={"X-API-Key": API_KEY}).status_code == 403


def test_promote_and_rollback_swap_the_model_without_dropping_requests(
    client: TestClient, user: str, trained_versions: list[str]
) -> None:
    first, second = trained_versions
    key = {"X-API-Key": API_KEY}
    listed = client.get("/admin/models", headers=key).json()
    assert listed["served"] == first and {v["version"] for v in listed["versions"]} == {first, second}

    failures: list[str] = []
    seen: set[str] = set()
    stop = threading.Event()

    def traffic() -> None:
        while not stop.is_set():
            res = client.post("/search", json={"query": QUERY, "user_id": user, "k": 5})
            if res.status_code != 200:
                failures.append(res.text)
            else:
                seen.add(res.json()["ranker_version"])

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(3):
            res = client.post("/admin/models/promote", headers=key, json={"version": second, "force": True})
            assert res.status_code == 200, res.text
            assert res.json()["served"] == second
            time.sleep(0.1)
            res = client.post("/admin/models/rollback", headers=key)
            assert res.status_code == 200 and res.json()["served"] == first
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert seen == {first, second}
    # An unvalidated version is refused without force, with the registry's reason.
    refused = client.post("/admin/models/promote", headers=key, json={"version": second})
    assert refused.status_code == 409 and "validate" in refused.json()["error"]
    assert client.post("/admin/models/promote", headers=key, json={"version": "v9999"}).status_code == 409


def test_experiment_config_reloads(app_factory: Callable[..., FastAPI], tmp_path: Path) -> None:
    config = tmp_path / "experiment.yaml"
    one = (
        "layers: [{name: l, salt: s1, experiments: "
        "[{name: rerank-2026, traffic: 100, variants: [{name: %s, weight: 100}]}]}]\n"
    )
    config.write_text(one % "control")
    serving = ServingSettings(api_key=API_KEY, experiments_file=config, consume_events=False, model_poll_s=60)
    with TestClient(app_factory(serving=serving)) as c:
        body = c.get("/search", params={"q": QUERY, "user_id": "u1"}).json()
        assert (body["experiment"], body["variant"]) == ("rerank-2026", "control")
        config.write_text(one % "treatment")
        res = c.post("/admin/experiments/reload", headers={"X-API-Key": API_KEY})
        assert res.status_code == 200 and res.json()["experiments"] == ["rerank-2026"]
        assert c.get("/search", params={"q": QUERY, "user_id": "u1"}).json()["variant"] == "treatment"
        config.write_text("layers: [unclosed\n")
        bad = c.post("/admin/experiments/reload", headers={"X-API-Key": API_KEY})
        assert bad.status_code == 400 and "Traceback" not in bad.text and "experiment.yaml" in bad.text
        # The loaded config stays in service.
        assert c.get("/search", params={"q": QUERY, "user_id": "u1"}).json()["variant"] == "treatment"
