"""``/search``: ranked blocks for a query and a user (POST with a JSON body, GET for browsers)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
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
def search(body: SearchIn, pipeline: PipelineDep, serving: ServingDep) -> SearchOut:
    """Retrieve candidates, assemble their features, rank them with the promoted model, log the impression."""
    _check_limits("body", body.query, body.k, serving)
    result = pipeline.search(
        body.query, body.user_id, body.k, session_id=body.session_id, explain=body.explain
    )
    return _out(result, body.explain)


@router.get("", response_model=SearchOut, response_model_exclude_none=True)
def search_get(
    pipeline: PipelineDep,
    serving: ServingDep,
    q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="The query.")],
    user_id: Annotated[Id, Query()],
    k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
    session_id: Annotated[Id | None, Query()] = None,
    explain: bool = False,
) -> SearchOut:
    """The same search as POST, from query parameters (links, browsers)."""
    _check_limits("query", q, k, serving)
    result = pipeline.search(q, user_id, k, session_id=session_id, explain=explain)
    return _out(result, explain)
