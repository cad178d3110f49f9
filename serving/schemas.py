"""Request and response models of the API, kept apart: what clients send is not what they get back."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

# Hard limits of the schema; settings may only tighten them (checked in the routes).
MAX_QUERY_CHARS = 4096
MAX_K = 200
MAX_EVENTS = 1000
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class SearchIn(_In):
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
    user_id: Id
    session_id: Id | None = None
    k: Annotated[int, Field(ge=1, le=MAX_K)] = 10
    context: dict[str, JsonValue] | None = Field(
        default=None, description="Free-form client context (device, page); echoed nowhere, reserved."
    )
    explain: bool = False


class DocOut(BaseModel):
    doc_id: str
    title: str
    genre: str


class BlockOut(BaseModel):
    block_id: str
    title: str
    kind: str
    score: float
    docs: list[DocOut]
    features: dict[str, float] | None = Field(default=None, description="With explain=true.")


class SearchOut(BaseModel):
    request_id: str
    blocks: list[BlockOut]
    experiment: str
    variant: str
    ranker_version: str
    teams: list[str] | None = Field(
        default=None, description="Interleaved pages: the ranker ('a' or 'b') that placed each block."
    )
    n_candidates: int
    degraded: bool
    degraded_reason: str | None = None
    latency_ms: dict[str, float] | None = Field(default=None, description="Per stage, with explain=true.")


class EventsIn(_In):
    # Items are checked one by one against data.contracts.Interaction, so one bad event is rejected with its
    # reason instead of failing the whole batch.
    events: Annotated[list[dict[str, JsonValue]], Field(min_length=1, max_length=MAX_EVENTS)]


class Rejection(BaseModel):
    index: int
    reason: str


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    rejections: list[Rejection]


class HealthOut(BaseModel):
    status: str


class ConsumerOut(BaseModel):
    """The event-stream consumer group ``features``, as /readyz sees it in Redis."""

    alive: bool = Field(description="Some consumer of the group read the stream within consumer_stale_s.")
    group: bool = Field(description="The consumer group exists.")
    consumers: int = 0
    idle_ms: int | None = Field(default=None, description="Since the most recent read by any consumer.")
    pending: int = Field(default=0, description="Delivered, not yet acknowledged.")
    lag: int | None = Field(default=None, description="Events not yet delivered (at least, past 1,000).")


class ReadyOut(BaseModel):
    ready: bool
    indexes: bool
    store: bool
    model: bool
    ranker_version: str | None
    consumer: ConsumerOut | None = None
    detail: dict[str, str]


class UsersOut(BaseModel):
    users: list[str]
    total: int


class ModelOut(BaseModel):
    version: str
    model: str
    saved_at: str | None
    metrics: dict[str, Any]
    validated: bool | None
    current: bool


class ModelsOut(BaseModel):
    line: str
    served: str | None
    versions: list[ModelOut]


class PromoteIn(_In):
    version: Id
    force: bool = Field(default=False, description="Promote without a passed validation.")


class ModelChangeOut(BaseModel):
    line: str
    current: str
    served: str | None


class ExperimentOut(BaseModel):
    digest: str = Field(description="Of the loaded file's text; empty when no file is configured.")
    experiments: list[str]
    rankers: list[str]


class ErrorOut(BaseModel):
    error: str
    detail: Any = None
