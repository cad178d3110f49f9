"""The knobs of a simulated world, one typed preset per scale."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ScaleName = Literal["tiny", "small", "large"]


class ClickModel(BaseModel):
    """Position-based model: P(click at k) = theta_k * sigmoid(slope * (utility - midpoint))."""

    model_config = ConfigDict(frozen=True)

    theta: tuple[float, ...] = (1.0, 0.68, 0.52, 0.42, 0.35, 0.30, 0.26, 0.23)
    slope: float = 5.0
    midpoint: float = 0.8
    noise_sd: float = Field(default=0.15, description="Per-(impression, block) utility noise.")
    # Grades 0-4 come from the expected utility through these cut points.
    grade_cuts: tuple[float, ...] = (0.2, 0.45, 0.75, 1.1)


class WorldScale(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: ScaleName
    entities_per_domain: int = Field(ge=1, le=40)
    editions: int = Field(ge=1, le=40, description="Blocks per intent (entity x facet or entity x genre).")
    users: int = Field(ge=10)
    days: int = Field(ge=2)
    impressions_per_day: int = Field(ge=100)
    new_block_share: float = Field(default=0.2, ge=0.0, lt=1.0, description="Blocks created during the run.")
    candidates: int = Field(default=40, ge=8, description="Candidates the logging policy ranks (M).")
    epsilon: float = Field(default=0.2, ge=0.0, le=1.0, description="Share of uniformly randomized pages.")
    start_date: str = "2026-01-05"
    click_model: ClickModel = ClickModel()

    @property
    def page_size(self) -> int:
        return len(self.click_model.theta)


SCALES: dict[str, WorldScale] = {
    "tiny": WorldScale(
        name="tiny", entities_per_domain=3, editions=1, users=300, days=4, impressions_per_day=1500
    ),
    "small": WorldScale(
        name="small", entities_per_domain=12, editions=3, users=2500, days=14, impressions_per_day=8000
    ),
    "large": WorldScale(
        name="large", entities_per_domain=40, editions=36, users=100_000, days=28, impressions_per_day=185_000
    ),
}
