"""Settings of the ranking stage; part of ``search.settings.Settings`` (key ``ranking``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RankingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
