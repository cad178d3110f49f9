"""The one protocol every retriever follows, and the checks they all share.

A retriever is built first (``build`` from passages, ``fit`` from logs, or ``load`` from disk), then answers
``search(query, k) -> list[Hit]`` best-first and ``batch_search(queries, k)`` with one list per query.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import NamedTuple, Protocol, runtime_checkable

from retrieval.config import QueryLimits
from retrieval.errors import NotBuiltError, QueryError
from retrieval.query import check_query


@dataclass(frozen=True, slots=True)
class Passage:
    """What a text retriever indexes: an id (a block id, a BEIR doc id) and its text."""

    id: str
    text: str


NO_SOURCES: Mapping[str, float] = MappingProxyType({})  # read-only: one shared by every unfused hit


class Hit(NamedTuple):
    """One retrieved item. ``sources`` holds each member's raw score when the hit comes from fusion.

    A named tuple, not a frozen dataclass: a training set's replay makes millions of hits (every query's
    runs, every fused list), and a tuple is built in half the time. Being a tuple, a hit equals a tuple of
    the same three values; code reads hits by name only."""

    id: str
    score: float
    sources: Mapping[str, float] = NO_SOURCES

    def __reduce__(self) -> tuple[type[Hit], tuple[str, float, dict[str, float]]]:
        # A mapping proxy cannot be pickled or deep-copied: the sources travel as a plain dict.
        return (Hit, (self.id, self.score, dict(self.sources)))


@runtime_checkable
class Retriever(Protocol):
    name: str

    def search(self, query: str, k: int) -> list[Hit]: ...

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]: ...


class BaseRetriever(ABC):
    """Argument checks and ``batch_search`` shared by the concrete retrievers.

    Subclasses set ``name``, implement ``is_built`` and ``_search`` (and may override ``_batch_search``
    with a faster batched path); queries reach them already checked and stripped.
    """

    name: str = "retriever"
    limits: QueryLimits

    @property
    @abstractmethod
    def is_built(self) -> bool: ...

    @abstractmethod
    def _search(self, query: str, k: int) -> list[Hit]: ...

    def _batch_search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [self._search(q, k) for q in queries]

    def search(self, query: str, k: int) -> list[Hit]:
        """The ``k`` best hits for ``query``, best first (fewer when fewer match)."""
        self._check_ready(k)
        return self._search(check_query(query, self.limits), k)

    def batch_search(self, queries: Sequence[str], k: int) -> list[list[Hit]]:
        """``search`` for each query; the whole batch is refused if one query is bad (no silent drops)."""
        self._check_ready(k)
        if isinstance(queries, str):
            raise QueryError("batch_search takes a list of queries, got one string")
        checked = []
        for i, q in enumerate(queries):
            try:
                checked.append(check_query(q, self.limits))
            except QueryError as exc:
                raise QueryError(f"query {i}: {exc}") from None
        return self._batch_search(checked, k) if checked else []

    def _check_ready(self, k: int) -> None:
        if not self.is_built:
            raise NotBuiltError(f"{type(self).__name__} is not built: call build(), fit() or load() first")
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise QueryError(f"k must be a positive integer, got {k!r}")


def top_k(scores: Mapping[str, float], k: int) -> list[Hit]:
    """The k best of an id -> score map as hits; ties broken by id so results are deterministic."""
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [Hit(i, float(s)) for i, s in best]
