"""Closed-loop traffic: the world's click model scores served pages exactly as it scored the logged ones,
and a short run against the real API over HTTP sends clicks that reach the live features."""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from data.errors import ConfigError
from data.layout import DataLayout
from data.world.sessions import draw_sessions, draw_users
from search.cli import simulate
from search.experiments.traffic import (
    ApiUnreachable,
    ClosedLoop,
    TrafficOptions,
    rebuild_world,
    score_page,
)

SEED = 7  # the tiny_world fixture's seed


def _day0(tiny_world: Path) -> tuple[list[dict], dict[str, dict[str, float]], set[tuple[str, str]]]:
    """Day 0's impressions, the truth utility of every shown block, and the logged (request, block) clicks."""
    layout = DataLayout(tiny_world)
    start = date.fromisoformat(layout.read_manifest()["start_date"])
    imps = pq.read_table(layout.day_dir("impressions", start) / "part-0.parquet").to_pylist()
    grades = pq.read_table(layout.truth / "grades" / f"day={start.isoformat()}" / "part-0.parquet")
    truth: dict[str, dict[str, float]] = {}
    for r, b, u in zip(*(grades[c].to_pylist() for c in ("request_id", "block_id", "utility")), strict=True):
        truth.setdefault(r, {})[b] = u
    acts = pq.read_table(layout.day_dir("interactions", start) / "part-0.parquet")
    acts = acts.filter(pc.equal(acts["type"], "click"))
    clicks = set(zip(acts["request_id"].to_pylist(), acts["block_id"].to_pylist(), strict=True))
    return imps, truth, clicks


def test_closed_loop_scores_logged_pages_like_the_day_simulator(tiny_world: Path) -> None:
    """Replay day 0's sessions (same random stream as simulate_day), score each logged page with the closed
    loop's click model and compare with what the day simulator wrote: the same utilities, the documented PBM
    click probabilities, and as many expected clicks as were logged."""
    world = rebuild_world(tiny_world)
    scale = world.scale
    rng = np.random.default_rng([SEED, 0])
    sessions = draw_sessions(world, rng, draw_users(world, rng, math.ceil(scale.impressions_per_day / 2.5)))
    imps, truth, logged_clicks = _day0(tiny_world)
    model = json.loads((DataLayout(tiny_world).truth / "world_model.json").read_text())["click_model"]
    theta = np.array(model["theta"])
    key_of = {s: k for s, k in zip(world.queries.strings, world.queries.string_key, strict=True)}
    block_index = {b: i for i, b in enumerate(world.block_ids)}
    noise = np.random.default_rng(0)
    expected_clicks, observed_clicks = 0.0, 0
    for imp in imps:
        s = int(imp["session_id"].split("-")[1])
        # The session draw is the day simulator's: same user for the same session.
        assert world.user_ids[sessions.user[s]] == imp["user_id"]
        shown = imp["shown"]
        blocks = np.array([block_index[x["block_id"]] for x in shown])
        positions = np.array([x["position"] for x in shown])
        out = score_page(
            world,
            sessions.facet_taste[s],
            sessions.genre_taste[s],
            key_of[imp["query"]],
            blocks,
            positions,
            noise,
        )
        want = np.array([truth[imp["request_id"]][x["block_id"]] for x in shown])
        np.testing.assert_allclose(out.utility, want, rtol=1e-12, atol=1e-12)
        pbm = theta[positions - 1] / (1 + np.exp(-model["slope"] * (out.realized - model["midpoint"])))
        np.testing.assert_allclose(out.p_click, pbm, rtol=1e-12)
        assert np.all(np.abs(out.realized - out.utility) < 8 * model["noise_sd"])
        # Expected clicks under the same noise distribution (a fresh draw: the logged noise is not stored).
        expected_clicks += float(out.p_click.sum())
        observed_clicks += sum((imp["request_id"], x["block_id"]) in logged_clicks for x in shown)
    assert observed_clicks > 500
    # Sums of ~10k Bernoullis: 5 standard deviations of slack.
    assert abs(expected_clicks - observed_clicks) < 5 * math.sqrt(observed_clicks)


def test_bad_inputs_are_clean_errors(tiny_world: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"world\.json"):
        rebuild_world(tmp_path)
    world = rebuild_world(tiny_world)
    with pytest.raises(ConfigError, match="--users"):
        ClosedLoop(world, TrafficOptions(url="http://127.0.0.1:9", users=world.population.n_users + 1))
    with pytest.raises(ConfigError, match="--page-size"):
        ClosedLoop(world, TrafficOptions(url="http://127.0.0.1:9", users=3, page_size=50))
    loop = ClosedLoop(world, TrafficOptions(url="http://127.0.0.1:9", users=3, minutes=0.05))
    with pytest.raises(ApiUnreachable, match="does not answer"):
        loop.run()


def _cli() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:  # a group, so 'simulate traffic' parses as in the smartblock app
        pass

    simulate.register(root)
    return root


@pytest.fixture
def isolated_api(
    tiny_world: Path,
    base_settings: object,
    app_factory: Callable,
    live_server: Callable,
) -> Iterator[tuple[str, object]]:
    """The real API on uvicorn over a feature namespace of its own, so hundreds of simulated clicks do not
    leak into the other tests' features."""
    from features.build import build_online_features
    from features.store import RedisFeatureStore

    features = base_settings.features.model_copy(update={"namespace": f"tl{uuid.uuid4().hex[:8]}"})
    settings = base_settings.model_copy(update={"features": features})
    store = RedisFeatureStore.connect(features)
    build_online_features(DataLayout(tiny_world), store)
    try:
        with live_server(app_factory(settings)) as live:
            yield live.url, store
    finally:
        store.clear()


def _query_clicks(store: object, queries: list[str]) -> float:
    """Clicks the live features hold per query, summed (the query-level counter of each query's hash)."""
    from features.ops import QUERY_FIELD

    got = store.fetch([(store.keys.query_blocks(q), [QUERY_FIELD]) for q in queries])
    return float(sum(np.frombuffer(h[QUERY_FIELD], dtype="<f8")[1] for h in got if QUERY_FIELD in h))


def test_short_closed_loop_over_http_reaches_the_live_features(
    tiny_world: Path, isolated_api: tuple[str, object]
) -> None:
    url, store = isolated_api
    strings = rebuild_world(tiny_world).queries.strings
    before = _query_clicks(store, strings)
    args = [
        "simulate",
        "traffic",
        "--url",
        url,
        "--world",
        str(tiny_world),
        "--users",
        "4",
        "--minutes",
        "0.2",
    ]
    result = CliRunner().invoke(_cli(), [*args, "--concurrency", "2", "--seed", "3", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["searches"] > 0 and out["clicks"] > 0 and out["sessions"] > 0
    assert out["errors"] == 0 and out["unknown_blocks"] == 0 and out["unknown_queries"] == 0
    assert out["events_sent"] == 2 * out["clicks"]  # a click and a dwell each
    assert out["search_latency_ms"]["p50"] > 0 and out["searches_per_s"] > 0
    (arm,) = out["variants"]
    assert (arm["experiment"], arm["variant"], arm["searches"]) == ("default", "control", out["searches"])
    assert arm["ctr"] > 0 and 0 < arm["utility@8"] < 2
    # Every click went through /events and the server's stream consumer into the live features.
    deadline = time.monotonic() + 20
    while (gained := _query_clicks(store, strings) - before) < out["clicks"] and time.monotonic() < deadline:
        time.sleep(0.25)
    assert gained == out["clicks"]
