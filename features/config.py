"""Settings of the feature store; part of ``search.settings.Settings`` (key ``features``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FeatureStoreSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redis_url: str | None = Field(
        default=None,
        description="redis:// or unix:// URL of an external Redis (REDIS_URL also works); unset: embedded.",
    )
    cluster: bool = Field(default=False, description="Treat redis_url as one node of a Redis Cluster.")
    embedded_dir: Path = Field(
        default=Path("worlds/.redis"), description="Where the embedded Redis keeps its socket and snapshot."
    )
    namespace: str = Field(default="sb", min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    socket_timeout_s: float = Field(default=0.25, gt=0)
    user_ttl_days: int = Field(default=30, ge=1, description="Per-user data expires after this idle time.")
    request_ttl_hours: int = Field(
        default=24, ge=1, description="How long a request's context waits for clicks."
    )
    dedup_ttl_hours: int = Field(
        default=48,
        ge=1,
        description="How long applied-event markers are kept: the window in which a repeated event id "
        "(a client retry) is counted once.",
    )
    live_ttl_days: int = Field(
        default=90,
        ge=1,
        description="Live query and block counters expire after this long without an event touching them.",
    )
    # Examination prior by position (1-based) for clicks-over-expected-clicks; the default is the DCG
    # discount 1/log2(k+1). Replace it with an estimate from a randomization experiment when you have one.
    position_prior: tuple[float, ...] = (1.0, 0.631, 0.5, 0.431, 0.387, 0.356, 0.333, 0.315, 0.301, 0.289)
    interest_half_life_hours: float = Field(
        default=2.0, gt=0, description="Decay of real-time keyword interest."
    )
    session_half_life_minutes: float = Field(
        default=30.0, gt=0, description="Decay of a session's own query and click tallies."
    )
    session_ttl_hours: float = Field(
        default=2.0, gt=0, description="A session's tallies expire this long after its last event."
    )
    coquery_neighbours: int = Field(default=20, ge=1, description="Co-queries kept per query.")
    coquery_min_sessions: int = Field(default=2, ge=1, description="Sessions a query pair needs to count.")
    # The per-user caps below are most of a user's Redis memory, and they earn it: halving the profile, lift
    # and session caps saved 21% of it and lost 0.015 of DCN-V2's served gain, mostly on broad and
    # high-entropy queries (docs/scale.md, "What smaller caps cost a person").
    # Bounded so the packed profile (11 + 6 bytes per item) fits the user hash's four 64-byte chunks.
    user_keywords: int = Field(default=24, ge=1, le=32, description="Long-term keywords kept per user.")
    user_intents: int = Field(
        default=8, ge=0, le=8, description="Long-term intents (block topic or genre labels) kept per user."
    )
    # 41 items of 6 bytes fill the field's four 64-byte chunks: the overall lift and 40 intents.
    user_intent_lifts: int = Field(
        default=40,
        ge=0,
        le=40,
        description="Intents whose click lift is kept per user (those with the most evidence; 6 bytes each). "
        "Heavy users are shown ~70 intents; 40 hold ~90% of their evidence on the small world.",
    )
    lift_prior_clicks: float = Field(
        default=2.0,
        gt=0,
        description="Intent lifts are shrunk towards the user's overall lift (or 1 for a query) by this many "
        "expected clicks.",
    )
    # Bounded so a recent-keyword or recent-click tally (8 + 8 bytes per entry) fits its four 64-byte chunks.
    recent_keywords: int = Field(default=16, ge=1, le=31, description="Recent query keywords kept per user.")
    # Bounded so a session's shown-block tally (8 + 8 bytes per block) fits its four 64-byte chunks.
    session_shown_blocks: int = Field(
        default=24, ge=1, le=31, description="Blocks a session was shown, kept (decayed) per session."
    )
    stream_batch: int = Field(default=256, ge=1)
    stream_claim_idle_ms: int = Field(
        default=30_000, ge=1, description="Reclaim a dead consumer's events after."
    )
    stream_max_deliveries: int = Field(
        default=5, ge=1, description="Then an event goes to the dead-letter stream."
    )
    # Each letter names its reason and keeps its event, to send back with `features dead-letters --requeue`;
    # bounded, as a flood of refused events must not fill Redis. What the cap removes is counted.
    dead_letters_max: int = Field(
        default=100_000,
        ge=1,
        description="Dead letters kept (the newest); older ones are removed and counted as lost "
        "(`smartblock features dead-letters`).",
    )
    # Reads alone are no clock: a consumer retrying through a Redis refusal reads its pending entries
    # every 0.2 s, and a click ahead of its impression reached its read limit within a second.
    stream_impression_wait_s: float = Field(
        default=10.0,
        ge=0,
        description="A click waits this long after it was published (and stream_max_deliveries reads) "
        "for its impression before the dead-letter stream.",
    )

    @model_validator(mode="after")
    def _dedup_covers_requests(self) -> FeatureStoreSettings:
        # Events are accepted while their request's context lives (request_ttl_hours); a retry inside that
        # time must still find its applied-event marker, or it would count twice.
        if self.dedup_ttl_hours < self.request_ttl_hours:
            raise ValueError("dedup_ttl_hours must be at least request_ttl_hours")
        return self
