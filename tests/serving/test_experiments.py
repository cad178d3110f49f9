"""Experiments in the server: assignment, per-variant rankers and settings, interleaving, exploration
propensities, and hot reload of the config file (real app, real Redis, real models)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from data.errors import ConfigError
from features.definitions import FEATURES, INDEX
from features.groups import PERSONAL_GROUPS, group_of
from features.served import unpack_rows
from features.store import RedisFeatureStore
from serving.config import ServingSettings
from serving.experiments.assignment import Assigner
from serving.experiments.config import parse_config

from .helpers import impression_of, served_of

API_KEY = "test-admin-key-0123456789"
QUERY = "jeju island"
K = 5
CONFIG = """
holdback: {percent: 15, salt: hb}
layers:
  - name: ranking
    salt: rank
    experiments:
      - name: ab
        traffic: 60
        variants:
          - {name: retrieval, weight: 34, settings: {ranker: retrieval-order}}
          - name: pinned
            weight: 33
            settings: {ranker: "ranker@%(v1)s", personalized: false, rerank_depth: 6}
          - {name: explore, weight: 33, settings: {ranker: ranker, exploration: 0.5, exploration_pool: 8}}
      - name: il
        traffic: 40
        variants: [{name: x, weight: 100, interleave: {a: ranker, b: retrieval-order}}]
  - name: retrieval
    salt: retr
    experiments:
      - name: fusion
        traffic: 100
        variants:
          - {name: plain, weight: 50}
          - {name: bm25-muted, weight: 50, settings: {fusion_weights: {bm25: 0}}}
"""


@pytest.fixture(scope="module")
def config_text(trained_versions: list[str]) -> str:
    return CONFIG % {"v1": trained_versions[1]}


@pytest.fixture(scope="module")
def client(
    app_factory: Callable[..., FastAPI], tmp_path_factory: pytest.TempPathFactory, config_text: str
) -> Iterator[TestClient]:
    path = tmp_path_factory.mktemp("exp") / "experiments.yaml"
    path.write_text(config_text)
    serving = ServingSettings(api_key=API_KEY, experiments_file=path, consume_events=False, model_poll_s=60)
    with TestClient(app_factory(serving=serving)) as c:
        yield c


def test_each_user_gets_the_assigned_variant_and_the_impression_says_so(
    client: TestClient,
    config_text: str,
    feature_store: RedisFeatureStore,
    trained_versions: list[str],
) -> None:
    assigner = Assigner(parse_config(config_text))
    seen: set[tuple[str, str]] = set()
    for i in range(60):
        user = f"exp-user-{i}"
        body = client.post("/search", json={"query": QUERY, "user_id": user, "k": K}).json()
        expected = assigner.assign(user)
        assert (body["experiment"], body["variant"]) == (expected.experiment, expected.variant)
        again = client.post("/search", json={"query": QUERY, "user_id": user, "k": K}).json()
        assert again["variant"] == body["variant"]  # sticky
        imp = impression_of(feature_store, body["request_id"])
        assert (imp.experiment, imp.variant, imp.ranker_version) == (
            body["experiment"],
            body["variant"],
            body["ranker_version"],
        )
        seen.add((expected.experiment, expected.variant))
        # The served feature rows: the page as shown and scored, then a sample of the other candidates
        # (all of them when fewer than the 8 logged), whose score is none on an interleaved page.
        served = served_of(feature_store, body["request_id"])
        assert served is not None
        shown = [r for r in served.rows if r.position]
        assert [(r.block_id, r.score) for r in shown] == [(b["block_id"], b["score"]) for b in body["blocks"]]
        unshown = [r for r in served.rows if not r.position]
        assert len(unshown) == min(8, body["n_candidates"] - len(body["blocks"]))
        assert all((r.score is None) == (body.get("teams") is not None) for r in unshown)
        variants = dict(expected.assignments)
        propensities = [s.propensity for s in imp.shown]
        if expected.holdback:
            assert body["ranker_version"] == trained_versions[0] and imp.teams is None
            assert propensities == [1.0] * len(propensities)
            continue
        arm = variants.get("ab")
        if arm == "retrieval":
            assert body["ranker_version"] == "retrieval-order"
        elif arm == "pinned":
            assert body["ranker_version"] == f"ranker@{trained_versions[1]}"
            assert body["n_candidates"] == 6  # the cascade: only the best 6 retrieved blocks were ranked
        elif arm == "explore":
            assert body["ranker_version"] == f"ranker@{trained_versions[0]}"
        else:
            assert body["ranker_version"] == f"a=ranker@{trained_versions[0]};b=retrieval-order"
            assert body["teams"] == [str(t) for t in imp.teams] and len(body["teams"]) == len(body["blocks"])
            assert set(body["teams"]) <= {"a", "b"}
        if arm == "explore":  # explored or not, each shown block's marginal: 0.5 * [ranker's] + 0.5 / pool
            pool = min(8, body["n_candidates"])
            assert all(p in (0.5 + 0.5 / pool, 0.5 / pool) for p in propensities), propensities
        else:
            assert propensities == [1.0] * len(propensities)
    assert {"holdback", "ab,fusion", "il,fusion"} <= {e for e, _ in seen}
    assert {v.split(",")[0] for e, v in seen if e == "ab,fusion"} == {"retrieval", "pinned", "explore"}


def test_a_non_personal_variant_ranks_on_default_user_features(
    client: TestClient, config_text: str, feature_store: RedisFeatureStore
) -> None:
    assigner = Assigner(parse_config(config_text))
    user = next(
        f"np-{i}" for i in range(1000) if dict(assigner.assign(f"np-{i}").assignments).get("ab") == "pinned"
    )
    body = client.post("/search", json={"query": QUERY, "user_id": user, "k": K, "explain": True}).json()
    personal = [f for f in FEATURES if group_of(f.name) in PERSONAL_GROUPS]
    assert personal
    for block in body["blocks"]:
        assert all(block["features"][f.name] == f.default for f in personal)
    # What was logged is what was scored: the switched-off groups at their defaults, unshown rows too.
    served = served_of(feature_store, body["request_id"])
    assert served is not None and len(served.rows) > len(body["blocks"])
    values = unpack_rows([r.values for r in served.rows])
    for f in personal:
        assert (values[:, INDEX[f.name]] == np.float32(f.default)).all(), f.name


def test_the_server_follows_the_file_and_never_serves_a_broken_one(
    app_factory: Callable[..., FastAPI], tmp_path: Path
) -> None:
    path = tmp_path / "live.yaml"
    one = (
        "layers: [{name: l, salt: s, experiments: "
        "[{name: live, traffic: 100, variants: [{name: %s, weight: 100}]}]}]"
    )
    path.write_text(one % "before")
    serving = ServingSettings(api_key=API_KEY, experiments_file=path, consume_events=False, model_poll_s=0.2)

    def variant() -> str:
        return client.get("/search", params={"q": QUERY, "user_id": "u-live"}).json()["variant"]

    def wait_for(name: str) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if variant() == name:
                return True
            time.sleep(0.1)
        return False

    with TestClient(app_factory(serving=serving)) as client:
        assert variant() == "before"
        path.write_text(one % "after")  # no restart, no admin call: the watcher picks it up
        assert wait_for("after")
        path.write_text((one % "later")[:40])  # a half-written file
        time.sleep(1.0)
        assert variant() == "after"
        path.write_text(
            one.replace("{name: %s, weight: 100}", "{name: x, weight: 100, settings: {ranker: nope}}")
        )
        time.sleep(1.0)
        assert variant() == "after"  # a ranker that cannot load is refused as a whole
        res = client.post("/admin/experiments/reload", headers={"X-API-Key": API_KEY})
        assert res.status_code == 400 and "nope" in res.json()["error"]
        path.write_text(one % "later")
        assert wait_for("later")


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ("{ranker: missing-line}", "missing-line"),
        ("{fusion_weights: {dens: 0}}", "not members of the served retriever"),  # a misspelt member
    ],
)
def test_a_config_the_server_cannot_honour_stops_start_up(
    app_factory: Callable[..., FastAPI], tmp_path: Path, settings: str, reason: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "layers: [{name: l, salt: s, experiments: [{name: e, traffic: 100, variants: "
        f"[{{name: v, weight: 100, settings: {settings}}}]}}]}}]"
    )
    serving = ServingSettings(api_key=API_KEY, experiments_file=path, consume_events=False)
    with pytest.raises(ConfigError, match=reason), TestClient(app_factory(serving=serving)):
        pass
