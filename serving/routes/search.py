"""``/search``: ranked blocks for a query and a user (POST with a JSON body, GET for browsers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from fastapi.exceptions import RequestValidationError

from serving.config import ServingSettings
from serving.deps import PipelineDep, ServingDep
from serving.pipeline import SearchResult
from serving.schemas import MAX_K, MAX_QUERY_CHARS, BlockOut, DocOut, Id, SearchIn, SearchOut

router = APIRouter(prefix="/search", tags=["search"])


def _check_limits(where: str, query: str, k: int, serving: ServingSettings) -> None:
    """The configured limits, reported like any other field error (422 with the field's location)."""
    errors = []
    if len(query) > serving.max_query_chars:
        errors.append(
            {
                "loc": (where, "query" if where == "body" else "q"),
                "msg": f"String should have at most {serving.max_query_chars} characters",
                "type": "string_too_long",
            }
        )
    if k > serving.max_k:
        errors.append(
            {
                "loc": (where, "k"),
                "msg": f"Input should be less than or equal to {serving.max_k}",
                "type": "less_than_equal",
            }
        )
    if errors:
        raise RequestValidationError(errors)


def server_timing(latency_ms: dict[str, float]) -> str:
    """The stages' times as a W3C ``Server-Timing`` header: ``retrieval;dur=8.01, ..., total;dur=17.40``.

    Every answer carries it, so a client, a load balancer's log or a browser's network panel sees where the
    time went without asking for ``explain`` (whose per-block features make the body several times larger).
    """
    return ", ".join(f"{stage};dur={ms:.2f}" for stage, ms in latency_ms.items())


def _answer(result: SearchResult, explain: bool) -> Response:
    """The JSON answer, serialised here, in the endpoint's worker thread.

    Handing FastAPI the model instead would validate it again on a second hop to the thread pool, then
    serialise it on the event loop, which every connection shares. The bytes are the same (pydantic's JSON,
    no ``None`` fields); the route's ``response_model`` still documents the body. Measured side by side, the
    latency did not change measurably (docs/retrieval.md, "Tenth session").
    """
    body = _out(result, explain).model_dump_json(exclude_none=True, by_alias=True)
    return Response(
        body, media_type="application/json", headers={"Server-Timing": server_timing(result.latency_ms)}
    )


def _out(result: SearchResult, explain: bool) -> SearchOut:
    return SearchOut(
        request_id=result.request_id,
        blocks=[
            BlockOut(
                block_id=b.block.block_id,
                title=b.block.title,
                kind=b.block.kind,
                score=b.score,
                docs=[DocOut(doc_id=d.doc_id, title=d.title, genre=d.genre) for d in b.block.docs],
                features=b.features,
            )
            for b in result.blocks
        ],
        experiment=result.treatment.experiment,
        variant=result.treatment.variant,
        teams=[str(t) for t in result.teams] if result.teams else None,
        ranker_version=result.ranker_version,
        n_candidates=result.n_candidates,
        degraded=bool(result.degraded_reasons),
        degraded_reason="; ".join(result.degraded_reasons) or None,
        latency_ms=result.latency_ms if explain else None,
    )


@router.post("", response_model=SearchOut, response_model_exclude_none=True)
def search(body: SearchIn, pipeline: PipelineDep, serving: ServingDep) -> Response:
    """Retrieve candidates, assemble their features, rank them with the promoted model, log the impression."""
    _check_limits("body", body.query, body.k, serving)
    result = pipeline.search(
        body.query, body.user_id, body.k, session_id=body.session_id, explain=body.explain
    )
    return _answer(result, body.explain)


@router.get("", response_model=SearchOut, response_model_exclude_none=True)
def search_get(
    pipeline: PipelineDep,
    serving: ServingDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="The query.")],
    user_id: Annotated[Id, Query()],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    session_id: Annotated[Id | None, Query()] = None,
    explain: bool = False,
) -> Response:
    """The same search as POST, from query parameters (links, browsers)."""
    _check_limits("query", q, k, serving)
    result = pipeline.search(q, user_id, k, session_id=session_id, explain=explain)
    return _answer(result, explain)
