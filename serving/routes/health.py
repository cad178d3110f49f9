"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: indexes, store, model and the
event-stream consumer: with none alive, /events would accept clicks that wait unapplied)."""

from __future__ import annotations

import os

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from features.connection import StoreUnavailable
from serving.deps import RuntimeDep
from serving.runtime import Runtime
from serving.schemas import ConsumerOut, HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    return HealthOut(status="ok", worker=os.getpid())


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}})
def readyz(runtime: RuntimeDep) -> ReadyOut | JSONResponse:
    """200 when every part is loaded and Redis answers, else 503 with what is missing; ``degraded`` names a
    refused current model and what serves instead (200 when an earlier version serves)."""
    pipeline = runtime.pipeline
    indexes = pipeline.retriever.is_built
    store = runtime.store.ping()
    model = pipeline.model
    detail = {}
    if not indexes:
        detail["indexes"] = "retrieval indexes not loaded"
    if not store:
        detail["store"] = runtime.store.last_error or "Redis does not answer"
    if model is None:
        detail["model"] = pipeline.model_error or "no model loaded"
    consumer = _consumer(runtime, detail) if store else None
    consumer_ok = not runtime.serving.require_consumer or (consumer is not None and consumer.alive)
    out = ReadyOut(
        ready=indexes and store and model is not None and consumer_ok,
        indexes=indexes,
        store=store,
        model=model is not None,
        ranker_version=model.version if model else None,
        consumer=consumer,
        detail=detail,
        degraded=pipeline.served.degraded,
        refused_version=pipeline.served.refused_version,
    )
    return out if out.ready else JSONResponse(out.model_dump(), status_code=503)


def _consumer(runtime: Runtime, detail: dict[str, str]) -> ConsumerOut | None:
    try:
        status = runtime.store.consumer_status(runtime.serving.consumer_stale_s)
    except StoreUnavailable as exc:
        detail["consumer"] = str(exc)
        return None
    out = ConsumerOut(
        alive=status.live > 0,
        group=status.exists,
        consumers=status.consumers,
        idle_ms=status.idle_ms,
        pending=status.pending,
        lag=status.lag,
        behind_cap=status.gap is not None,
        trimmed_unread=status.gap.lost if status.gap else None,
    )
    if not status.exists:
        detail["consumer"] = "no consumer group 'features' on the event stream"
    elif not out.alive:
        detail["consumer"] = f"no stream consumer read in the last {runtime.serving.consumer_stale_s:g} s"
    elif status.gap is not None:
        detail["consumer"] = "the event stream's cap trimmed events before the consumer group read them"
    return out
