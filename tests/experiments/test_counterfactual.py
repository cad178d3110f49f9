"""Offline estimates on the tiny world, whose logging policy explores with exact propensities and whose truth
gives every target's real expected clicks: the estimators must find them within their intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from data.layout import DataLayout
from ranking.config import RankingSettings, WorldTrainingSettings
from search.experiments.counterfactual import estimate
from search.experiments.estimators import Target, estimate_target
from search.experiments.logged_pages import Pages, greedy_pages, logged_pages
from search.settings import Settings


@pytest.fixture(scope="module")
def settings(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """The tiny world's 4 days: warmup, train, valid, one test day; a LightGBM ranker trained on it."""
    from ranking.lgbm import LightGBMRanker
    from ranking.registry import ModelRegistry
    from ranking.world import WorldSource

    world = WorldTrainingSettings(test_days=1)
    s = Settings(
        ranking=RankingSettings(registry_dir=tmp_path_factory.mktemp("models"), world=world, threads=1)
    )
    source = WorldSource(tiny_world, world, s.features)
    # Non-personal: the truth row scores a page the log did not show for a request with the grades of a page
    # logged for the same query in another session, which cannot see this session's taste; a ranker that
    # follows the session (rt_* features) would be judged against the wrong session there.
    train = source.lists(source.split.train, personalized=False).data
    ranker = LightGBMRanker(n_estimators=40, learning_rate=0.1, num_leaves=15, threads=1).fit(train)
    metadata = {"features": {"personalized": False}}
    ModelRegistry(s.ranking.registry_dir).register(ranker, "ranker", metadata=metadata)
    return s


def _inside(value: float, ci: list[float]) -> bool:
    return ci[0] <= value <= ci[1]


def test_estimates_recover_observed_and_true_clicks(tiny_world: Path, settings: Settings) -> None:
    out = estimate(tiny_world, "ranker", settings)
    assert out.version == "ranker@v0001"
    assert out.greedy_page.unknown < 0.05 * out.requests
    est, obs = out.estimates, out.observed
    # The logging policy evaluated on its own logs: weight 1, the observed clicks per page exactly.
    assert est["logging"].ips.clicks_per_page.value == obs.all_pages.value
    assert est["logging"].snips.clicks_per_page.value == pytest.approx(obs.all_pages.value)
    # Its greedy page: IPS rests on the propensities; the truth and the clicks of greedy pages agree.
    greedy = est["greedy"]
    assert greedy.truth_on_greedy_pages is not None
    truth = greedy.truth_on_greedy_pages.value
    assert _inside(truth, greedy.ips.clicks_per_page.ci)
    assert _inside(truth, greedy.snips.clicks_per_page.ci)
    assert _inside(obs.greedy_pages.value, greedy.snips.clicks_per_page.ci)
    # The trained ranker's reordering: its true expected clicks lie in both intervals.
    ranker = est["ranker"]
    assert ranker.truth_on_greedy_pages is not None
    truth = ranker.truth_on_greedy_pages.value
    assert _inside(truth, ranker.ips.clicks_per_page.ci)
    assert _inside(truth, ranker.snips.clicks_per_page.ci)
    assert ranker.effective_pages < greedy.effective_pages  # it moves blocks: fewer pages support it
    assert ranker.snips.clicks_at_1.value <= ranker.snips.clicks_at_3.value
    # The JSON keeps the logged names: clicks@k, and the ranker's version only for a ranker target.
    payload = out.to_json()
    assert list(payload) == [
        "world",
        "days",
        "model",
        "version",
        "personalized",
        "requests",
        "greedy_page",
        "observed",
        "estimates",
    ]
    assert set(payload["estimates"]["ranker"]["snips"]) == {"clicks_per_page", "clicks@1", "clicks@3"}
    assert "truth_on_greedy_pages" not in payload["estimates"]["logging"]


def test_greedy_page_is_recovered_from_the_propensities(tiny_world: Path) -> None:
    layout = DataLayout(tiny_world)
    day = layout.days("impressions")[-1]
    pages = logged_pages(layout, day, day)
    greedy, conflicts = greedy_pages(pages)
    assert conflicts == 0
    share = pages.greedy_page.mean()
    assert 0.7 < share < 0.9  # 80% of pages are the policy's own (epsilon = 0.2), few random ones match
    i = int(np.flatnonzero(pages.greedy_page)[0])
    assert greedy[(pages.queries[i], pages.days[i])] == [b for b in pages.block[i] if b]


def test_ips_and_snips_on_a_hand_made_log() -> None:
    """Two positions; the target keeps the logged block at position 1 on both pages, at position 2 only on
    the second. IPS = (1/0.5 + 1/0.25) / 2 = 3; SNIPS position 1: (2 + 0) / (2 + 2) = 0.5, position 2:
    (4) / (4) = 1 (the target fills both positions everywhere)."""
    pages = Pages(
        np.array(["r1", "r2"], dtype=object),
        np.array(["q", "q"], dtype=object),
        np.array(["d", "d"], dtype=object),
        np.array([["a", "b"], ["c", "d"]], dtype=object),
        np.array([[0.5, 0.9], [0.5, 0.25]]),
        np.array([[1, 1], [0, 1]], np.int8),
        np.ones((2, 2), bool),
    )
    target = Target("t", np.array([[True, False], [True, True]]), np.ones((2, 2), bool))
    out = estimate_target(pages, target, reps=20)
    assert out.ips.clicks_per_page.value == pytest.approx(3.0)
    assert out.ips.clicks_at_1.value == pytest.approx(1.0)
    assert out.snips.clicks_per_page.value == pytest.approx(1.5)


def test_cli_estimate_json(tiny_world: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from search.cli import analysis, experiments

    monkeypatch.setenv("SMARTBLOCK_RANKING__WORLD__TEST_DAYS", "1")
    root = typer.Typer()
    experiments.register(root)
    analysis.register(root)
    result = CliRunner().invoke(
        root, ["experiment", "estimate", "--world", str(tiny_world), "--model", "greedy", "--json"]
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    assert set(payload["estimates"]) == {"logging", "greedy"} and "version" not in payload
    human = CliRunner().invoke(
        root, ["experiment", "estimate", "--world", str(tiny_world), "--model", "greedy"]
    )
    assert human.exit_code == 0, human.output
    assert "without a greedy page" in human.output and "SNIPS" in human.output
    bad = CliRunner().invoke(
        root, ["experiment", "estimate", "--world", str(tiny_world), "--model", "greedy", "--days", "x"]
    )
    assert bad.exit_code != 0
