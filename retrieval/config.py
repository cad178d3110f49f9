"""Settings of the retrieval stage; part of ``search.settings.Settings`` (key ``retrieval``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RetrievalSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")
