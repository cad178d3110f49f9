"""One shared check that every retriever follows the protocol: the same calls, the same guarantees."""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc
import pytest

from data.layout import DataLayout
from retrieval.base import BaseRetriever, Hit, Passage, Retriever
from retrieval.errors import NotBuiltError, QueryError

NAMES = ["bm25", "splade", "dense", "behavioural", "fused"]
HEAD_QUERY = "jeju island"  # the tiny world's second most frequent query


@pytest.fixture(params=NAMES)
def retriever(request: pytest.FixtureRequest, world_retrievers: dict[str, BaseRetriever]) -> BaseRetriever:
    return world_retrievers[request.param]


def test_follows_the_protocol(retriever: BaseRetriever) -> None:
    assert isinstance(retriever, Retriever)
    assert retriever.is_built


def test_search_returns_k_best_distinct_known_hits(
    retriever: BaseRetriever, tiny_passages: list[Passage]
) -> None:
    known = {p.id for p in tiny_passages}
    hits = retriever.search(HEAD_QUERY, 20)
    assert 0 < len(hits) <= 20
    assert all(isinstance(h, Hit) for h in hits)
    ids = [h.id for h in hits]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= known
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)


def test_head_query_finds_its_entity(retriever: BaseRetriever, tiny_passages: list[Passage]) -> None:
    text = {p.id: p.text.lower() for p in tiny_passages}
    top = retriever.search(HEAD_QUERY, 5)
    assert all("jeju" in text[h.id] for h in top)


def test_k_limits_and_prefixes(retriever: BaseRetriever) -> None:
    many = retriever.search(HEAD_QUERY, 50)
    few = retriever.search(HEAD_QUERY, 5)
    assert len(few) == min(5, len(many))
    assert [h.id for h in few] == [h.id for h in many[: len(few)]]


def test_batch_search_equals_search(retriever: BaseRetriever) -> None:
    queries = [HEAD_QUERY, "iphone 16", "trench coat"]
    batched = retriever.batch_search(queries, 10)
    assert len(batched) == 3
    for query, hits in zip(queries, batched, strict=True):
        single = retriever.search(query, 10)
        assert [h.id for h in hits] == [h.id for h in single]
        assert [h.score for h in hits] == pytest.approx([h.score for h in single], rel=1e-4)
    assert retriever.batch_search([], 10) == []


def test_a_query_scores_the_same_in_any_batch(retriever: BaseRetriever, tiny_world: Path) -> None:
    # Training-set parts and warmed replays batch different queries together; a score that moved with its
    # batch-mates (a flat FAISS index's single matrix product over 1,100 queries did, in the last bits) would
    # make the parts differ from the whole build, and training from serving.
    logged = pc.unique(DataLayout(tiny_world).read_events("impressions")["query"]).to_pylist()
    queries = (logged * (1200 // len(logged) + 1))[:1200]
    batched = retriever.batch_search(queries, 50)
    for i in range(0, len(queries), 97):
        alone = retriever.search(queries[i], 50)
        assert [(h.id, h.score) for h in batched[i]] == [(h.id, h.score) for h in alone], queries[i]


def test_is_deterministic(retriever: BaseRetriever) -> None:
    assert retriever.search("iphone 16", 10) == retriever.search("iphone 16", 10)


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("", "empty"),
        ("   \t ", "empty"),
        ("x" * 5000, "too long"),
        ("제주도 맛집", "unsupported language"),
        (None, "must be a string"),
    ],
)
def test_bad_queries_are_refused_clearly(retriever: BaseRetriever, query: object, reason: str) -> None:
    with pytest.raises(QueryError, match=reason):
        retriever.search(query, 10)  # type: ignore[arg-type]


def test_a_bad_query_in_a_batch_names_it(retriever: BaseRetriever) -> None:
    with pytest.raises(QueryError, match="query 1: empty"):
        retriever.batch_search([HEAD_QUERY, ""], 10)
    with pytest.raises(QueryError, match="list of queries"):
        retriever.batch_search(HEAD_QUERY, 10)


@pytest.mark.parametrize("k", [0, -3, 2.5, "10", True])
def test_bad_k_is_refused(retriever: BaseRetriever, k: object) -> None:
    with pytest.raises(QueryError, match="k must be a positive integer"):
        retriever.search(HEAD_QUERY, k)  # type: ignore[arg-type]


def test_accented_latin_and_punctuation_are_answered(retriever: BaseRetriever) -> None:
    # Not refused: accented Latin letters are English-compatible; results may be empty, never an error.
    assert isinstance(retriever.search("café near jeju island!", 5), list)
    assert isinstance(retriever.search("???", 5), list)


def test_unbuilt_retriever_says_so(retriever: BaseRetriever) -> None:
    fresh = _unbuilt_twin(retriever)
    assert not fresh.is_built
    with pytest.raises(NotBuiltError):
        fresh.search(HEAD_QUERY, 5)


def _unbuilt_twin(retriever: BaseRetriever) -> BaseRetriever:
    from retrieval.behavioural import BehaviouralRetriever
    from retrieval.dense import DenseRetriever
    from retrieval.fusion import FusedRetriever
    from retrieval.lucene import Bm25Retriever, SpladeRetriever

    if isinstance(retriever, SpladeRetriever):
        return SpladeRetriever(retriever.index_dir, retriever.encoder)
    if isinstance(retriever, Bm25Retriever):
        return Bm25Retriever(retriever.index_dir)
    if isinstance(retriever, DenseRetriever):
        return DenseRetriever(retriever.index_dir, retriever.encoder)
    if isinstance(retriever, BehaviouralRetriever):
        return BehaviouralRetriever()
    if isinstance(retriever, FusedRetriever):
        return FusedRetriever({"behavioural": BehaviouralRetriever()})
    raise AssertionError(f"no twin for {type(retriever).__name__}")
