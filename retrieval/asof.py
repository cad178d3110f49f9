"""Fused retrieval as it would have answered at a past instant: the candidates of a logged request.

Training on the candidates a ranker orders at serve time needs, for each logged request, the fused list
/search would have retrieved then. The text members (SPLADE, dense, BM25) depend on the block texts only,
so their runs are computed once per query; the behavioural member learns from clicks, so it is refitted on
the logs strictly before each day (``BehaviouralRetriever.fit(before=day)``): a request never retrieves
through its own clicks or later ones.

In: the world's fused retriever (members and fusion settings) and its event logs. Out:
``search(query, ts_ms)`` -> fused hits, best first, each with its members' raw scores in ``sources``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from retrieval.base import Hit
from retrieval.behavioural import BehaviouralRetriever
from retrieval.fusion import FusedRetriever, fuse
from retrieval.query import normalise


class AsOfRetrieval:
    def __init__(self, fused: FusedRetriever, impressions: pa.Table, interactions: pa.Table, k: int) -> None:
        self.fused = fused
        self.k = k
        self.impressions = impressions
        self.interactions = interactions
        self._text: dict[str, dict[str, list[Hit]]] = {}  # query -> text member -> run
        self._day: date | None = None
        self._behavioural: tuple[str, BehaviouralRetriever] | None = None
        self._day_cache: dict[str, list[Hit]] = {}

    def warm(self, queries: list[str]) -> None:
        """Run the text members over many queries at once (their batched path) before replaying."""
        todo = sorted({normalise(q) for q in queries} - set(self._text))
        if not todo:
            return
        depth = self.fused.depth(self.k)
        runs = {
            name: member.batch_search(todo, depth)
            for name, member in self.fused.members.items()
            if not isinstance(member, BehaviouralRetriever)
        }
        for i, q in enumerate(todo):
            self._text[q] = {name: hits[i] for name, hits in runs.items()}

    def search(self, query: str, ts_ms: int) -> list[Hit]:
        """The fused top ``k`` for ``query`` as of the start of the request's (UTC) day."""
        day = datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date()
        if day != self._day:
            self._refit(day)
        q = normalise(query)
        cached = self._day_cache.get(q)
        if cached is not None:
            return cached
        depth = self.fused.depth(self.k)
        runs = self._text.get(q)
        if runs is None:
            runs = {
                name: member.search(q, depth)
                for name, member in self.fused.members.items()
                if not isinstance(member, BehaviouralRetriever)
            }
            self._text[q] = runs
        runs = dict(runs)
        if self._behavioural is not None:
            name, member = self._behavioural
            runs[name] = member.search(q, depth)
        hits = fuse(runs, self.fused.settings, self.k)
        self._day_cache[q] = hits
        return hits

    def _refit(self, day: date) -> None:
        self._day, self._day_cache = day, {}
        live = [(n, m) for n, m in self.fused.members.items() if isinstance(m, BehaviouralRetriever)]
        if not live:
            self._behavioural = None
            return
        name, member = live[0]
        refit = BehaviouralRetriever(member.settings, limits=member.limits)
        self._behavioural = (name, refit.fit(self.impressions, self.interactions, before=day))
