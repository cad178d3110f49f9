"""The served-feature log over real HTTP (uvicorn, real Redis, real indexes and model): /search logs the rows
its ranker scored beside the impression, `events export` archives them, and the served training-set builder
turns them and the clicks posted to /events into the training table, with the values that were served.
Clients cannot write that log through /events."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from data.layout import DataLayout
from features.archive import StreamArchiver
from features.dataset import build_training_set
from features.definitions import NAMES
from features.served import FEATURE_SET, sample_unshown, unpack_rows
from features.served_dataset import build_served_training_set
from features.store import RedisFeatureStore
from search.cli import features as features_cli
from search.settings import Settings
from serving.config import ServingSettings
from serving.runtime import Parts

from .helpers import impression_of, served_of

API_KEY = "test-admin-key-0123456789"
QUERY = "jeju island"
UNSHOWN = 5  # serving.log_unshown_features of the server under test (the default is 8)
K = 6


@pytest.fixture(scope="module")
def api(app_factory: Callable[..., FastAPI], live_server: Callable) -> Iterator[httpx.Client]:
    serving = ServingSettings(
        api_key=API_KEY, redis_deadline_ms=1000, model_poll_s=0.5, log_unshown_features=UNSHOWN
    )
    with live_server(app_factory(serving=serving)) as live, httpx.Client(base_url=live.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def user(api: httpx.Client) -> str:
    return api.get("/users", params={"limit": 5}).json()["users"][1]


def _search(api: httpx.Client, query: str, user: str, k: int = K) -> dict[str, Any]:
    res = api.post("/search", json={"query": query, "user_id": user, "k": k, "explain": True})
    assert res.status_code == 200, res.text
    return res.json()


def _explained(body: dict[str, Any]) -> np.ndarray:
    """The page's feature rows as /search explained them, as the float32 the log and training tables hold."""
    return np.array([[b["features"][n] for n in NAMES] for b in body["blocks"]], dtype=np.float32)


def test_the_served_rows_are_the_explained_page_and_a_uniform_sample_of_the_rest(
    api: httpx.Client, user: str, feature_store: RedisFeatureStore, parts: Parts, base_settings: Settings
) -> None:
    body = _search(api, QUERY, user)
    page = [b["block_id"] for b in body["blocks"]]
    served = served_of(feature_store, body["request_id"])
    assert served is not None
    assert served.feature_set == FEATURE_SET and served.width == len(NAMES)
    assert served.ts == impression_of(feature_store, body["request_id"]).ts

    shown = [r for r in served.rows if r.position]
    assert [r.block_id for r in shown] == page and [r.position for r in shown] == list(range(1, K + 1))
    assert [r.score for r in shown] == [b["score"] for b in body["blocks"]]
    assert np.array_equal(unpack_rows([r.values for r in shown]), _explained(body))

    # The unshown: exactly the configured number, drawn from the candidates the ranker scored (retrieval's
    # best known blocks), by the request id's own draw; a deterministic page ranked them below the page.
    unshown = [r for r in served.rows if not r.position]
    assert len(unshown) == UNSHOWN
    hits = parts.retriever.search(QUERY, base_settings.retrieval.candidates)
    candidates = [h.id for h in hits if h.id in parts.catalog.blocks][: body["n_candidates"]]
    rest = [c for c in candidates if c not in page]
    expected = [rest[i] for i in sample_unshown(body["request_id"], len(rest), UNSHOWN)]
    assert [r.block_id for r in unshown] == expected and not set(expected) & set(page)
    assert all(r.score is not None and r.score <= shown[-1].score for r in unshown)
    assert np.isfinite(unpack_rows([r.values for r in unshown])).all()


def test_a_served_training_set_holds_the_served_values_and_the_posted_clicks(
    api: httpx.Client,
    user: str,
    feature_store: RedisFeatureStore,
    tiny_world: Path,
    base_settings: Settings,
    tmp_path: Path,
) -> None:
    pages = [_search(api, q, user, k=4) for q in ("seoul", "galbi jjim", QUERY)]
    clicks = [
        {
            "request_id": p["request_id"],
            "user_id": user,
            "block_id": p["blocks"][1]["block_id"],
            "position": 2,
            "type": "click",
        }
        for p in pages
    ]
    res = api.post("/events", json={"events": clicks})
    assert res.status_code == 202 and res.json()["accepted"] == len(clicks), res.text

    out = tmp_path / "archive"
    archiver = StreamArchiver(
        feature_store.client, feature_store.keys.events_stream, out, group=f"archive-{uuid.uuid4().hex[:6]}"
    )
    stats = archiver.run()
    assert stats.served >= len(pages) and (out / "events" / "served").is_dir()
    built = build_served_training_set(DataLayout(out))
    table = built.table
    for p in pages:
        rows = table.filter(pc.equal(table["request_id"], p["request_id"]))
        shown = rows.filter(pc.greater(rows["position"], 0))
        assert shown["block_id"].to_pylist() == [b["block_id"] for b in p["blocks"]]
        served = np.column_stack([shown[n].to_numpy().astype(np.float32) for n in NAMES])
        assert np.array_equal(served, _explained(p))
        assert shown["click"].to_pylist() == [0, 1, 0, 0]  # the posted click, on position 2
        assert shown["propensity"].to_pylist() == [1.0] * 4  # deterministic pages
        unshown = rows.filter(pc.equal(rows["position"], 0))
        assert unshown.num_rows == UNSHOWN
        assert set(unshown["click"].to_pylist()) == {0} and set(unshown["propensity"].to_pylist()) == {0.0}

    # The same columns, in the same order and types, as the point-in-time builder writes.
    layout = DataLayout(tiny_world)
    day = layout.days("impressions")[0]
    reference = build_training_set(layout, day, day, base_settings.features)
    assert table.schema == reference.schema

    # `smartblock features dataset --served` writes that table.
    root = typer.Typer()
    features_cli.register(root)
    target = tmp_path / "served.parquet"
    args = ["features", "dataset", "--served", "--world", str(out), "--out", str(target), "--json"]
    result = CliRunner().invoke(root, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == table.num_rows
    assert pq.read_table(target).equals(table)


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"type": "served"}, "type"),
        ({"type": "impression"}, "type"),
        ({"type": "click", "kind": "served"}, "kind"),
    ],
)
def test_clients_cannot_post_what_only_the_server_logs(
    api: httpx.Client, user: str, feature_store: RedisFeatureStore, extra: dict, field: str
) -> None:
    page = _search(api, QUERY, user, k=3)
    click = {"request_id": page["request_id"], "user_id": user, "block_id": page["blocks"][0]["block_id"]}
    fine = {**click, "position": 1, "type": "click"}
    before = feature_store.client.xlen(feature_store.keys.events_stream)
    res = api.post("/events", json={"events": [fine, {**click, "position": 1, **extra}]})
    assert res.status_code == 422, res.text
    (err,) = res.json()["detail"]
    assert err["loc"] == ["body", "events", 1, field] and "written by the server only" in err["msg"]
    # Refused whole: not even the valid click of the batch reached the stream.
    assert feature_store.client.xlen(feature_store.keys.events_stream) == before


def test_the_log_can_be_off_or_kept_to_the_page(
    app_factory: Callable[..., FastAPI], feature_store: RedisFeatureStore
) -> None:
    quiet = {"consume_events": False, "require_consumer": False}
    off = ServingSettings(log_served_features=False, **quiet)
    with TestClient(app_factory(serving=off)) as client:
        body = client.post("/search", json={"query": QUERY, "user_id": "u-no-log", "k": 3}).json()
    assert impression_of(feature_store, body["request_id"]).request_id == body["request_id"]
    assert served_of(feature_store, body["request_id"]) is None

    page_only = ServingSettings(log_unshown_features=0, **quiet)
    with TestClient(app_factory(serving=page_only)) as client:
        body = client.post("/search", json={"query": QUERY, "user_id": "u-page-log", "k": 3}).json()
    served = served_of(feature_store, body["request_id"])
    assert served is not None and [r.position for r in served.rows] == [1, 2, 3]


def test_a_log_lost_with_redis_is_counted_and_the_search_answers(
    app_factory: Callable[..., FastAPI], base_settings: Settings, free_port: Callable[[], int]
) -> None:
    """No Redis to write to (a port nothing listens on): the search answers, degraded, and the lost log is
    counted like the impression, not raised."""
    features = base_settings.features.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    settings = base_settings.model_copy(update={"features": features})
    serving = ServingSettings(consume_events=False, require_consumer=False, redis_deadline_ms=200)
    with TestClient(app_factory(settings, serving=serving)) as client:
        body = client.post("/search", json={"query": QUERY, "user_id": "u-away", "k": 3}).json()
        metrics = client.get("/metrics").text
    assert body["degraded"] and len(body["blocks"]) == 3
    assert "smartblock_impressions_unlogged_total 1.0" in metrics
    assert 'smartblock_served_features_unlogged_total{reason="store"} 1.0' in metrics
