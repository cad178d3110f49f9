"""Request and response models of the API, kept apart: what clients send is not what they get back."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue, model_validator

from data.contracts import InteractionType

# Hard limits of the schema; settings may only tighten them (checked in the routes).
MAX_QUERY_CHARS = 4096
MAX_K = 200
MAX_EVENTS = 1000
MAX_DWELL_MS = 86_400_000  # a day
# Printable ASCII only: no control characters (NUL), no spaces, nothing a log line or a key could trip on.
Id = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:@-]+$")]


def unencodable(value: object, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Where in a decoded JSON value a string (or a key) holds a lone surrogate, or None.

    ``json`` decodes the escape ``"\\ud800"`` into a str that no UTF-8 encoder takes: it would fail later,
    in a Redis key, the event stream or the error answer itself, as a 500.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            found = unencodable(key, (*path, "<key>")) or unencodable(item, (*path, key))
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = unencodable(item, (*path, i))
            if found is not None:
                return found
    return None


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored

    @model_validator(mode="before")
    @classmethod
    def _encodable(cls, data: Any) -> Any:
        where = unencodable(data)
        if where is not None:
            at = ".".join(str(p) for p in where) or "body"
            raise ValueError(f"{at}: a string holds a lone surrogate (not valid Unicode text)")
        return data


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


class EventIn(_In):
    """One click or dwell as a client sends it; serving.events adds the bounds of the settings and of the
    request it belongs to."""

    request_id: Id
    user_id: Id
    block_id: Id
    doc_id: Id | None = None
    position: Annotated[int, Field(ge=1, le=MAX_K)]
    type: InteractionType
    dwell_ms: Annotated[int, Field(ge=0, le=MAX_DWELL_MS)] | None = None
    ts: AwareDatetime | None = Field(default=None, description="Left out: the server's receive time.")
    event_id: Id | None = Field(
        default=None,
        description="The client's id of this event: a retry with the same id (same request) is "
        "acknowledged and counted once.",
    )


class EventsIn(_In):
    # Items are checked one by one against EventIn, so one bad event is rejected with its reason instead of
    # failing the whole batch.
    events: Annotated[list[dict[str, JsonValue]], Field(min_length=1, max_length=MAX_EVENTS)]


class Rejection(BaseModel):
    index: int = Field(description="Of the event in the batch.")
    field: str | None = Field(default=None, description="The first field at fault; None: the whole event.")
    reason: str


class EventsOut(BaseModel):
    accepted: int
    rejected: int
    rejections: list[Rejection]


class HealthOut(BaseModel):
    status: str
    worker: int = Field(description="Process id of the API worker that answered (several share the port).")


class ConsumerOut(BaseModel):
    """The event-stream consumer group ``features``, as /readyz sees it in Redis."""

    alive: bool = Field(description="Some consumer of the group read the stream within consumer_stale_s.")
    group: bool = Field(description="The consumer group exists.")
    consumers: int = 0
    idle_ms: int | None = Field(default=None, description="Since the most recent read by any consumer.")
    pending: int = Field(default=0, description="Delivered, not yet acknowledged.")
    lag: int | None = Field(default=None, description="Events not yet delivered (at least, past 1,000).")
    behind_cap: bool = Field(
        default=False,
        description="The event stream's cap trimmed events before the group read them: lost to the live "
        "features.",
    )
    trimmed_unread: int | None = Field(
        default=None, description="How many events that was (Redis 7 counts them; Redis 6.2 cannot)."
    )


class ReadyOut(BaseModel):
    ready: bool
    indexes: bool
    store: bool
    model: bool
    ranker_version: str | None
    consumer: ConsumerOut | None = None
    detail: dict[str, str]
    degraded: str | None = Field(
        default=None,
        description="Set when the line's current model was refused (failed its trial or load) and an "
        "earlier version or retrieval order serves instead.",
    )
    refused_version: str | None = Field(default=None, description="The refused current version.")


class UsersOut(BaseModel):
    users: list[str]
    total: int


class ModelOut(BaseModel):
    version: str
    model: str | None
    saved_at: str | None
    metrics: dict[str, Any]
    validated: bool | None
    current: bool
    broken: str | None = Field(
        default=None, description="Why this version cannot be used (unreadable manifest, failed trial)."
    )


class ModelsOut(BaseModel):
    line: str
    served: str | None
    degraded: str | None = Field(default=None, description="As in /readyz: the current model was refused.")
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
