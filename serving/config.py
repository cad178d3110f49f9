"""Settings of the serving stage (``serving`` in the root settings), and what serving reads of the others.

serving/ sits below the roof that composes every stage's section (``search.settings.Settings``), so it names
the root only by shape: ``StageSettings`` lists the sections the online path reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from features.config import FeatureStoreSettings
from ranking.config import RankingSettings
from retrieval.config import RetrievalSettings

MIN_API_KEY_CHARS = 16


class ServingSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    api_key: SecretStr | None = Field(
        default=None,
        description=f"Key for /admin (header X-API-Key), at least {MIN_API_KEY_CHARS} characters; "
        "unset: the admin API refuses every call.",
    )
    write_key: SecretStr | None = Field(
        default=None,
        description=f"Key for POST /events (header X-Write-Key), at least {MIN_API_KEY_CHARS} characters; "
        "unset: /events takes events from anyone (the search page posts its clicks this way).",
    )
    warmup_queries: int = Field(
        default=600,
        ge=0,
        le=100_000,
        description="Made-up queries searched at start-up, before the server takes requests, so users' "
        "first queries do not pay for the JVM's and ONNX Runtime's warm-up (retrieval.warmup); 0: none.",
    )
    model_line: str = Field(
        default="ranker", pattern=r"^[A-Za-z0-9_-]+$", description="Registry line served."
    )
    redis_deadline_ms: float = Field(
        default=50.0,
        gt=0,
        le=5000,
        description="One deadline for all the Redis work of one /search request (the serving client never "
        "retries, and no read waits longer than what is left): a frozen store costs a search no more.",
    )
    events_deadline_ms: float = Field(
        default=500.0,
        gt=0,
        le=5000,
        description="The same for one POST /events (its context read and stream write). A write may wait "
        "longer than a search read: refused, it costs the client a resend (503), and under load the 50 ms of "
        "a search refused a few real batches (simulate traffic, 1,000 users, 2 cores).",
    )
    breaker_cooldown_s: float = Field(
        default=1.0,
        ge=0,
        description="After a store failure, skip Redis for this long, then let one request probe it.",
    )
    budget_ms: float = Field(default=250.0, gt=0, description="Latency budget of one /search request.")
    max_query_chars: int = Field(default=256, ge=1, le=4096)
    max_k: int = Field(default=50, ge=1, le=200, description="Most blocks one /search may ask for.")
    max_events: int = Field(default=100, ge=1, description="Most events in one POST /events batch.")
    max_body_bytes: int = Field(
        default=65_536, ge=1024, description="Larger request bodies get 413, chunked or not."
    )
    body_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=60,
        description="A request body not fully received this long after the request started gets 408 and "
        "its connection is closed (a slow or short body cannot hold a worker).",
    )
    # Bounds of one event (POST /events); the past bound is features.request_ttl_hours, after which the
    # request's context, which a click is applied against, is gone.
    max_dwell_ms: int = Field(
        default=1_800_000, ge=1, description="Longest dwell accepted (ms); the world's dwell cap is 30 min."
    )
    event_future_s: float = Field(
        default=300.0, ge=0, description="An event's ts may be ahead of the server clock by this much."
    )
    # Rankers trained on candidate lists (ranking.world.candidates) gain more the more candidates they order:
    # on the small world DCN re-ordering all 100 captured 0.249 of the oracle's gain, the best 16 0.117
    # (`evaluate --candidates`, docs/ranking.md). Shown-page rankers needed a cap of 16 to do no harm.
    rerank_depth: int = Field(
        default=100,
        ge=1,
        le=1000,
        description="The ranker re-orders this many of the best retrieval candidates (a cascade); deeper "
        "ones are not shown.",
    )
    log_served_features: bool = Field(
        default=True,
        description="Log the feature rows each request was ranked on beside its impression (stream kind "
        "'served'; archived by `events export` to events/served/), so training sets can be built from the "
        "values actually served (`features dataset --served`).",
    )
    log_unshown_features: int = Field(
        default=8,
        ge=0,
        le=1000,
        description="With log_served_features: besides the shown blocks, the rows of this many unshown "
        "candidates, drawn uniformly (seeded by the request id); 0 logs the shown blocks only.",
    )
    retrieval_cache_size: int = Field(
        default=10_000, ge=0, description="Queries whose fused candidates are kept (LRU); 0 disables."
    )
    consume_events: bool = Field(
        default=True, description="Run a stream consumer in the server, so clicks change features live."
    )
    require_consumer: bool = Field(
        default=True,
        description="/readyz answers 503 unless a consumer of the features group (this server's or an "
        "external `features stream`) read the event stream within `consumer_stale_s`: clicks would wait.",
    )
    consumer_stale_s: float = Field(
        default=5.0, gt=0, description="A stream consumer that has not read for this long counts as dead."
    )
    restart_backoff_s: float = Field(
        default=0.5,
        gt=0,
        description="`serve` restarts a dead stream consumer or embedded Redis after this, doubling per "
        "quick failure up to `restart_backoff_max_s`.",
    )
    restart_backoff_max_s: float = Field(default=30.0, gt=0)
    model_poll_s: float = Field(
        default=5.0, gt=0, description="Seconds between checks of the registry for a promotion or rollback."
    )
    experiments_file: Path | None = Field(
        default=None,
        description="Experiment config (serving.experiments.config); re-read every `model_poll_s` seconds "
        "and on POST /admin/experiments/reload, swapped in only when valid.",
    )
    torch_threads: int = Field(default=1, ge=1, le=64, description="Per worker; requests run in parallel.")

    @field_validator("api_key", "write_key")
    @classmethod
    def _long_enough(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None and len(key.get_secret_value()) < MIN_API_KEY_CHARS:
            raise ValueError(f"a key must have at least {MIN_API_KEY_CHARS} characters")
        return key


class StageSettings(Protocol):
    """The sections of the root settings the online path reads (``search.settings.Settings`` has them)."""

    @property
    def retrieval(self) -> RetrievalSettings: ...

    @property
    def features(self) -> FeatureStoreSettings: ...

    @property
    def ranking(self) -> RankingSettings: ...

    @property
    def serving(self) -> ServingSettings: ...


def serving_settings(settings: Any) -> ServingSettings:
    """``settings.serving`` when the root settings carry it, else the defaults."""
    found = getattr(settings, "serving", None)
    return found if isinstance(found, ServingSettings) else ServingSettings()
