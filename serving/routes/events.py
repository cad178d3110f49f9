"""``/events``: batches of clicks and dwell times, checked one by one, then written to the event stream."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from data.contracts import Interaction
from features.connection import redis_deadline
from serving.deps import RuntimeDep
from serving.schemas import EventsIn, EventsOut, Rejection

router = APIRouter(prefix="/events", tags=["events"])


def _reason(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors())


@router.post("", response_model=EventsOut, status_code=status.HTTP_202_ACCEPTED)
def post_events(body: EventsIn, runtime: RuntimeDep) -> EventsOut:
    """Accept the valid events of a batch (202); each invalid one is listed with its reason.

    ``ts`` may be left out: the server's receive time is used then.
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
    now = datetime.now(UTC)
    accepted: list[Interaction] = []
    rejections: list[Rejection] = []
    for i, raw in enumerate(body.events):
        try:
            accepted.append(Interaction.model_validate({"ts": now, **raw}))
        except ValidationError as exc:
            rejections.append(Rejection(index=i, reason=_reason(exc)))
    if accepted:
        # The request's one Redis deadline; StoreUnavailable -> 503: nothing was accepted.
        with redis_deadline(runtime.serving.redis_deadline_ms / 1000):
            runtime.store.publish(list(accepted))
    metrics = runtime.metrics.events
    metrics.labels("accepted").inc(len(accepted))
    metrics.labels("rejected").inc(len(rejections))
    return EventsOut(accepted=len(accepted), rejected=len(rejections), rejections=rejections)
