"""Typed settings: the one source of truth that the CLI, the API and experiments read.

Precedence, highest first: explicit arguments, ``SMARTBLOCK_*`` environment variables (nested with ``__``,
e.g. ``SMARTBLOCK_WORLD__SEED=7``), a config file (YAML or TOML, from ``--config`` or ``SMARTBLOCK_CONFIG``),
then the defaults below.
"""

from __future__ import annotations

import os
from contextvars import ContextVar
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from data.engine import EngineSettings
from data.errors import ConfigError
from data.world.scales import SCALES
from features.config import FeatureStoreSettings
from features.embeddings.config import EmbeddingSettings
from ranking.config import RankingSettings
from retrieval.config import RetrievalSettings
from serving.config import ServingSettings

Scale = Literal["tiny", "small", "large"]
# The file chosen by load_settings(); read by the source hook below, so no global state is mutated.
_config_file: ContextVar[Path | None] = ContextVar("smartblock_config_file", default=None)


class WorldGenSettings(BaseModel):
    """Defaults for ``smartblock world generate``."""

    scale: Scale = "small"
    seed: int = Field(default=42, ge=0)
    # Quiet 2-core machine: the small world (112,000 impressions) took 2.2-2.5 s in one process and 3.3-3.5 s
    # on a local cluster of 2, whose start is a fixed 1-6 s; the large world (5.2M) took 94 s in one process.
    engine_min_impressions: int = Field(
        default=500_000,
        ge=0,
        description="Logged impressions from which `world generate` and quickstart, unless given --workers, "
        "generate on a local cluster of engine.workers processes; below, in this process.",
    )

    def workers_for(self, scale: Scale, engine: EngineSettings) -> int:
        """Processes generating ``scale`` when --workers is not given: a local cluster only past the size
        where its start is repaid (a running cluster at engine.address is used whatever this says)."""
        preset = SCALES[scale]
        impressions = preset.days * preset.impressions_per_day
        if not engine.local_cluster_pays(impressions, self.engine_min_impressions):
            return 1
        # A task per day, the catalogue's text and the truth tables: a worker beyond those would only hold a
        # copy of the world (every worker gets one).
        return min(engine.local_workers(), preset.days + 2)


class Settings(BaseSettings):
    # Partial update: one nested value (SMARTBLOCK_RANKING__DASALC__DROPOUT, or a file's [ranking.dasalc])
    # changes that field only; without it pydantic-settings rebuilds the nested model from its class defaults,
    # dropping tuned defaults such as ranking.dasalc's quantile transform.
    model_config = SettingsConfigDict(
        env_prefix="SMARTBLOCK_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    data_dir: Path = Field(default=Path("worlds"), description="Where generated worlds and indexes live.")
    world: WorldGenSettings = WorldGenSettings()
    # The distributed engine of the offline jobs (SMARTBLOCK_ENGINE__ADDRESS, SMARTBLOCK_ENGINE__WORKERS).
    engine: EngineSettings = EngineSettings()
    retrieval: RetrievalSettings = RetrievalSettings()
    features: FeatureStoreSettings = FeatureStoreSettings()
    embeddings: EmbeddingSettings = EmbeddingSettings()
    ranking: RankingSettings = RankingSettings()
    serving: ServingSettings = ServingSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = _config_file.get() or os.environ.get("SMARTBLOCK_CONFIG")
        if config_file:
            sources.append(_file_source(settings_cls, Path(config_file)))
        return tuple(sources)


def _file_source(settings_cls: type[BaseSettings], path: Path) -> PydanticBaseSettingsSource:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    if path.suffix in {".yaml", ".yml"}:
        return YamlConfigSettingsSource(settings_cls, yaml_file=path)
    if path.suffix == ".toml":
        return TomlConfigSettingsSource(settings_cls, toml_file=path)
    raise ConfigError(f"config file {path}: expected a .yaml, .yml or .toml file, got '{path.suffix}'")


def load_settings(config_file: Path | None = None, **overrides: Any) -> Settings:
    """Build settings from all sources; a bad value raises ConfigError naming the setting."""
    token = _config_file.set(config_file)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"invalid settings: {problems}") from exc
    finally:
        _config_file.reset(token)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, built once (FastAPI dependencies and the CLI share it)."""
    return load_settings()
