"""Behavioural retrieval: blocks that users clicked for this query, and for the queries typed with it.

It recalls blocks whose text does not describe the query ("seoul subway fare" -> a transit-card block) and
fresh favourites the text retrievers rank low. Unseen queries get no hits (the text retrievers cover them).

Score of block b for query q, with ``share(q, b)`` = b's part of q's clicks::

    score(q, b) = share(q, b) + co_weight * sum over co-queries q' of max(npmi(q, q'), 0) * share(q', b)

Co-queries are the ``co_queries`` partners with the highest NPMI that share at least ``min_co_sessions``
sessions with q. ``fit`` takes a ``before`` instant so that evaluation uses only earlier days.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.logstats import click_counts, co_query_counts
from retrieval.base import BaseRetriever, Hit, top_k
from retrieval.config import BehaviouralSettings, QueryLimits
from retrieval.query import normalise


class BehaviouralRetriever(BaseRetriever):
    name = "behavioural"

    def __init__(
        self, settings: BehaviouralSettings = BehaviouralSettings(), *, limits: QueryLimits = QueryLimits()
    ) -> None:
        self.settings = settings
        self.limits = limits
        self.clicks_: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
        self.co_queries_: dict[str, list[tuple[str, float]]] = {}
        self.before_: date | datetime | None = None

    @property
    def is_built(self) -> bool:
        return self.clicks_ is not None

    def fit(
        self, impressions: pa.Table, interactions: pa.Table, *, before: date | datetime | None = None
    ) -> BehaviouralRetriever:
        """Learn from the logs (only events earlier than ``before`` when it is given)."""
        s = self.settings
        counts = click_counts(impressions, interactions, before=before)
        counts = counts.filter(pc.greater_equal(counts["clicks"], s.min_clicks))
        queries = np.array([normalise(q) for q in counts["query"].to_pylist()], dtype=object)
        blocks = counts["block_id"].to_numpy(zero_copy_only=False)
        clicks = counts["clicks"].to_numpy().astype(float)
        # Queries that differ only in case or spacing are one query here.
        grouped: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for q, b, c in zip(queries, blocks, clicks, strict=True):
            grouped[q][b] += c
        self.clicks_ = {}
        for q, per_block in grouped.items():
            ids = np.array(list(per_block), dtype=object)
            n = np.array(list(per_block.values()))
            self.clicks_[q] = (ids, n / n.sum())
        self.co_queries_ = self._co_queries(impressions, before) if s.co_queries else {}
        self.before_ = before
        return self

    def _co_queries(
        self, impressions: pa.Table, before: date | datetime | None
    ) -> dict[str, list[tuple[str, float]]]:
        s = self.settings
        pairs = co_query_counts(impressions, before=before)
        pairs = pairs.filter(
            pc.and_(pc.greater_equal(pairs["sessions"], s.min_co_sessions), pc.greater(pairs["npmi"], 0.0))
        )
        partners: dict[str, list[tuple[str, float]]] = defaultdict(list)
        for a, b, w in zip(
            pairs["query_a"].to_pylist(), pairs["query_b"].to_pylist(), pairs["npmi"].to_pylist(), strict=True
        ):
            a, b = normalise(a), normalise(b)
            if a != b and b in self.clicks_:
                partners[a].append((b, w))
        return {q: sorted(p, key=lambda x: (-x[1], x[0]))[: s.co_queries] for q, p in partners.items()}

    def known(self, query: str) -> bool:
        """Whether the logs have clicks for this query (after normalisation)."""
        return self.clicks_ is not None and normalise(query) in self.clicks_

    def _search(self, query: str, k: int) -> list[Hit]:
        q = normalise(query)
        scores: dict[str, float] = defaultdict(float)
        sources = [(q, 1.0)] + [(p, self.settings.co_weight * w) for p, w in self.co_queries_.get(q, [])]
        for source, weight in sources:
            entry = self.clicks_.get(source)  # type: ignore[union-attr]
            if entry is None or weight <= 0:
                continue
            for block, share in zip(*entry, strict=True):
                scores[block] += weight * share
        return top_k(scores, k)
