"""The bounds of one posted event, and the check of a batch against them.

A posted event may only count for what the server showed: a known block, at a position of the page, of a
request served to that user, within the time that request's context lives, with a dwell of human length.
Each field that breaks a bound is named with its reason; the valid events of the same batch are accepted.
The request context (``features.ops.RequestContext``, written by the stream consumer from the logged
impression) is read once per batch; an event whose impression the consumer has not applied yet is checked
against it by the consumer instead, before it writes anything.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import JsonValue, ValidationError

from data.contracts import Interaction
from features.ops import RequestContext
from features.store import SERVER_KINDS
from features.stream import interaction_event
from serving.schemas import EventIn, Rejection


@dataclass(frozen=True)
class EventBounds:
    """What an event must fit, from the settings and the served catalogue."""

    known_blocks: Container[str]
    max_position: int  # serving.max_k: no page has more blocks
    max_dwell_ms: int
    max_age: timedelta  # features.request_ttl_hours: the request's context is gone after it
    max_ahead: timedelta  # clock skew allowed to a client's ts


def reject(index: int, field: str | None, why: str) -> Rejection:
    """A rejection whose reason also names the field, for a reader of the bare reason (logs, clients)."""
    return Rejection(index=index, field=field, reason=f"{field}: {why}" if field else why)


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    return (loc[0] if loc else None), err["msg"]


def server_only(events: list[dict[str, JsonValue]]) -> list[dict[str, Any]]:
    """Validation errors (FastAPI's shape) for events that name a kind only the server writes.

    Impressions and served feature rows go to the event stream from the search path alone; a batch that
    carries one (as ``type``, or as the stream's ``kind`` field) is refused whole, not answered 202 with the
    event among the rejections: it is a client writing the server's logs, not a malformed click to skip.
    """
    errors = []
    for i, raw in enumerate(events):
        for field in ("type", "kind"):
            value = raw.get(field)
            if isinstance(value, str) and value in SERVER_KINDS:
                errors.append(
                    {
                        "loc": ("body", "events", i, field),
                        "msg": f"'{value}' events are written by the server only; /events takes "
                        "click and dwell",
                        "type": "server_only_kind",
                    }
                )
    return errors


def parse(index: int, raw: dict[str, JsonValue]) -> EventIn | Rejection:
    """The event's typed form, or its rejection (the first field at fault)."""
    try:
        event = EventIn.model_validate(raw)
    except ValidationError as exc:
        return reject(index, *_first_error(exc))
    if event.type.value == "dwell" and event.dwell_ms is None:
        return reject(index, "dwell_ms", "a dwell interaction needs dwell_ms")
    return event


def out_of_bounds(event: EventIn, bounds: EventBounds, now: datetime) -> tuple[str, str] | None:
    """(field, reason) of the first bound the event breaks, None when it fits. No store needed."""
    if event.block_id not in bounds.known_blocks:
        return "block_id", "not a block of the served catalogue"
    if event.position > bounds.max_position:
        return "position", f"beyond the page: positions go up to {bounds.max_position}"
    if event.dwell_ms is not None and event.dwell_ms > bounds.max_dwell_ms:
        return "dwell_ms", f"longer than the {bounds.max_dwell_ms} ms a dwell may last"
    if event.ts is not None:
        if event.ts > now + bounds.max_ahead:
            return "ts", f"more than {bounds.max_ahead.total_seconds():g} s ahead of the server clock"
        if event.ts < now - bounds.max_age:
            return "ts", f"older than {bounds.max_age}: its request's context has expired"
    return None


def to_interaction(event: EventIn, now: datetime) -> Interaction:
    data = event.model_dump(exclude_none=True)
    return Interaction.model_validate({"ts": now, **data})


def against_contexts(
    candidates: list[tuple[int, Interaction]], contexts: dict[str, RequestContext]
) -> tuple[list[Interaction], list[Rejection]]:
    """Events whose request context is stored must fit it; the others wait for the consumer's check."""
    accepted: list[Interaction] = []
    rejections: list[Rejection] = []
    for index, rec in candidates:
        ctx = contexts.get(rec.request_id)
        refused = ctx.refusal(interaction_event(rec)) if ctx is not None else None
        if refused is None:
            accepted.append(rec)
        else:
            rejections.append(reject(index, *refused))
    return accepted, rejections
