from __future__ import annotations

from pathlib import Path

import pytest

from data.errors import ConfigError
from search.settings import load_settings


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
