"""Liveness (``/healthz``: the process answers) and readiness (``/readyz``: indexes, store and model)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.deps import RuntimeDep
from serving.schemas import HealthOut, ReadyOut

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    return HealthOut(status="ok")


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
    out = ReadyOut(
        ready=indexes and store and model is not None,
        indexes=indexes,
        store=store,
        model=model is not None,
        ranker_version=model.version if model else None,
        detail=detail,
        degraded=pipeline.served.degraded,
        refused_version=pipeline.served.refused_version,
    )
    return out if out.ready else JSONResponse(out.model_dump(), status_code=503)
