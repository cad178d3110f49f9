from __future__ import annotations

from pathlib import Path

import pytest

from data.engine import EngineSettings
from data.errors import ConfigError
from ranking.config import RankingSettings
from search.settings import WorldGenSettings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "SMARTBLOCK_CONFIG",
        "SMARTBLOCK_WORLD__SEED",
        "SMARTBLOCK_WORLD__SCALE",
        "SMARTBLOCK_DATA_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.world.scale == "small" and s.world.seed == 42 and s.data_dir == Path("worlds")


def test_precedence_arguments_env_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('data_dir = "/srv/worlds"\n[world]\nscale = "large"\nseed = 1\n')
    monkeypatch.setenv("SMARTBLOCK_WORLD__SEED", "2")
    s = load_settings(toml)
    assert (s.data_dir, s.world.scale, s.world.seed) == (Path("/srv/worlds"), "large", 2)
    assert load_settings(toml, data_dir=Path("/x")).data_dir == Path("/x")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("world:\n  scale: huge\n", "world.scale"),
        ("wrld:\n  seed: 1\n", "wrld"),
        ("world:\n  seed: -3\n", "world.seed"),
    ],
)
def test_bad_settings_name_the_setting(tmp_path: Path, text: str, needle: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=needle):
        load_settings(path)


def test_unknown_file_type(tmp_path: Path) -> None:
    path = tmp_path / "s.ini"
    path.write_text("x")
    with pytest.raises(ConfigError, match=r"\.yaml, \.yml or \.toml"):
        load_settings(path)


def test_one_nested_env_var_keeps_its_siblings_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # ranking.dasalc's default is tuned (quantile inputs, more noise), not DASALCSettings' class defaults.
    tuned = RankingSettings().dasalc
    monkeypatch.setenv("SMARTBLOCK_RANKING__DASALC__DROPOUT", "0.1")
    monkeypatch.setenv("SMARTBLOCK_RANKING__WORLD__TRAIN__PATIENCE", "5")
    s = load_settings()
    assert s.ranking.dasalc == tuned.model_copy(update={"dropout": 0.1})
    assert s.ranking.world.train == RankingSettings().world.train.model_copy(update={"patience": 5})


def test_one_nested_file_value_keeps_its_siblings_defaults(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text("[ranking.dasalc]\nnoise_std = 0.25\n")
    expected = RankingSettings().dasalc.model_copy(update={"noise_std": 0.25})
    assert load_settings(path).ranking.dasalc == expected


def test_a_world_is_generated_on_a_local_cluster_only_past_the_size_that_repays_its_start() -> None:
    rule, two = WorldGenSettings(), EngineSettings(workers=2)
    assert rule.workers_for("tiny", two) == 1
    assert rule.workers_for("small", two) == 1  # 112,000 impressions: in this process
    assert rule.workers_for("large", two) == 2  # 5.2M impressions: every worker of the cluster
    assert rule.workers_for("large", EngineSettings(workers=1)) == 1
    # 28 days, the catalogue's text and the truth tables: 30 tasks, so no more than 30 workers get the world.
    assert rule.workers_for("large", EngineSettings(workers=64)) == 30
    assert WorldGenSettings(engine_min_impressions=0).workers_for("tiny", two) == 2
