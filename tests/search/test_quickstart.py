"""The quickstart job: day plans that fit short logs, the default ranker on the tiny world, typed results that
give back the stages' JSON unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest

from data.days import NotEnoughDays
from data.world.stats import world_stats
from ranking.config import RankingSettings
from ranking.registry import ModelRegistry
from search.jobs.quickstart import DayPlan, default_ranker, describe_world, fit_day_plan
from search.settings import Settings


@pytest.mark.parametrize(
    ("logged", "configured", "expected"),
    [
        (14, (1, 1, 2), (1, 1, 2)),  # the small world: the configured plan, untouched
        (5, (1, 1, 2), (1, 1, 2)),  # exactly enough
        (4, (1, 1, 2), (1, 1, 1)),  # the tiny world and the ranker's plan: one test day fewer
        (4, (0, 2, 2), (0, 2, 1)),  # the tiny world and M3's plan
        (3, (1, 2, 2), (0, 1, 1)),  # test, then validation, then warmup give way
    ],
)
def test_fit_day_plan(logged: int, configured: tuple[int, int, int], expected: tuple[int, int, int]) -> None:
    warmup, valid, test = configured
    plan = fit_day_plan(logged, warmup_days=warmup, valid_days=valid, test_days=test)
    assert (plan.warmup_days, plan.valid_days, plan.test_days) == expected
    assert plan.fitted == (expected != configured)
    assert plan.warmup_days + 1 + plan.valid_days + plan.test_days <= logged


def test_fit_day_plan_refuses_fewer_than_three_days() -> None:
    with pytest.raises(NotEnoughDays, match="2 logged days"):
        fit_day_plan(2, warmup_days=1, valid_days=1, test_days=2)


def test_default_ranker_trains_on_the_tiny_world_then_keeps_it(
    tiny_world: Path, tmp_path: Path, base_settings: Settings, parts: object
) -> None:
    # ``parts`` built the tiny world's retrieval indexes, which training replays for the rel_* features.
    settings = Settings(
        retrieval=base_settings.retrieval,
        ranking=RankingSettings(registry_dir=tmp_path / "models", threads=1, lgbm_trees=20),
    )
    first = default_ranker(settings, tiny_world)
    assert first.trained and first.model == "dcn"
    assert first.plan == DayPlan(4, warmup_days=1, valid_days=1, test_days=1, fitted=True)
    assert ModelRegistry(tmp_path / "models").current("ranker") == first.version
    again = default_ranker(settings, tiny_world)
    assert not again.trained and again.version == first.version


def test_world_stats_round_trip(tiny_world: Path) -> None:
    stats = describe_world(tiny_world)
    raw = world_stats(tiny_world)
    assert stats.to_json() == raw and list(stats.to_json()) == list(raw)
    high = raw["oracle_by_entropy"]["high"]
    assert stats.oracle_by_entropy["high"].ndcg_logging == high["ndcg@page_logging"]
