"""``/events``: batches of clicks and dwell times, checked one by one, then written to the event stream."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter, status
from fastapi.exceptions import RequestValidationError

from data.contracts import Interaction
from features.connection import redis_deadline
from serving.deps import RuntimeDep, WriteKey
from serving.event_bounds import (
    EventBounds,
    against_contexts,
    out_of_bounds,
    parse,
    reject,
    server_only,
    to_interaction,
)
from serving.schemas import EventsIn, EventsOut, Rejection

router = APIRouter(prefix="/events", tags=["events"], dependencies=[WriteKey])


def _bounds(runtime: RuntimeDep) -> EventBounds:
    serving = runtime.serving
    return EventBounds(
        known_blocks=runtime.parts.catalog.blocks,
        max_position=serving.max_k,
        max_dwell_ms=serving.max_dwell_ms,
        max_age=timedelta(hours=runtime.settings.features.request_ttl_hours),
        max_ahead=timedelta(seconds=serving.event_future_s),
    )


@router.post("", response_model=EventsOut, status_code=status.HTTP_202_ACCEPTED)
def post_events(body: EventsIn, runtime: RuntimeDep) -> EventsOut:
    """Accept the valid events of a batch (202); each invalid one is listed with its field and reason.

    ``ts`` may be left out: the server's receive time is used then. An ``event_id`` makes a retry safe: the
    same id for the same request is acknowledged again and counted once. A batch holding an event of a
    kind only the server writes ("impression", "served") is refused whole (422).
    """
    if len(body.events) > runtime.serving.max_events:
        raise RequestValidationError(
            [
                {
                    "loc": ("body", "events"),
                    "msg": f"List should have at most {runtime.serving.max_events} items",
                    "type": "too_long",
                }
            ]
        )
    server_kinds = server_only(body.events)
    if server_kinds:
        raise RequestValidationError(server_kinds)
    now = datetime.now(UTC)
    bounds = _bounds(runtime)
    candidates: list[tuple[int, Interaction]] = []
    rejections: list[Rejection] = []
    for i, raw in enumerate(body.events):
        parsed = parse(i, raw)
        if isinstance(parsed, Rejection):
            rejections.append(parsed)
            continue
        broken = out_of_bounds(parsed, bounds, now)
        if broken is not None:
            rejections.append(reject(i, *broken))
        else:
            candidates.append((i, to_interaction(parsed, now)))
    # The request's one Redis deadline covers the batch's context read and its write
    # (StoreUnavailable -> 503: nothing was accepted).
    with redis_deadline(runtime.serving.events_deadline_ms / 1000):
        request_ids = list(dict.fromkeys(rec.request_id for _, rec in candidates))
        contexts = runtime.store.contexts(request_ids) if request_ids else {}
        accepted, refused = against_contexts(candidates, contexts)
        if accepted:
            runtime.store.publish(accepted)
    rejections = sorted(rejections + refused, key=lambda r: r.index)
    metrics = runtime.metrics.events
    metrics.labels("accepted").inc(len(accepted))
    metrics.labels("rejected").inc(len(rejections))
    return EventsOut(accepted=len(accepted), rejected=len(rejections), rejections=rejections)
