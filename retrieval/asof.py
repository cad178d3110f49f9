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

from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.errors import ConfigError
from data.io import write_parquet_atomic
from retrieval.base import Hit, Retriever
from retrieval.behavioural import BehaviouralRetriever
from retrieval.fusion import FusedRetriever, fuse
from retrieval.query import normalise


class AsOfRetrieval:
    def __init__(
        self,
        fused: FusedRetriever,
        impressions: pa.Table,
        interactions: pa.Table,
        k: int,
        *,
        runs: Sequence[Path] = (),
        load_text: Callable[[], None] | None = None,
    ) -> None:
        """``runs``: files of ``write_text_runs`` to take the text members' runs from before searching them;
        ``load_text``: what makes the text members searchable when they were handed over unloaded (a replay
        whose queries all have runs on file never needs their indexes, encoders or JVM)."""
        self.fused = fused
        self.k = k
        self.impressions = impressions
        self.interactions = interactions
        self.runs = list(runs)
        self._load_text = load_text
        self._text: dict[str, dict[str, list[Hit]]] = {}  # query -> text member -> run
        self._day: date | None = None
        self._behavioural: tuple[str, BehaviouralRetriever] | None = None
        self._day_cache: dict[str, list[Hit]] = {}

    def warm(self, queries: list[str]) -> None:
        """Run the text members over many queries at once (their batched path) before replaying; queries
        with runs on file are read from there."""
        todo = sorted({normalise(q) for q in queries} - set(self._text))
        if todo and self.runs:
            self._read_runs(todo)
            todo = [q for q in todo if q not in self._text]
        if not todo:
            return
        depth = self.fused.depth(self.k)
        runs = {name: member.batch_search(todo, depth) for name, member in self._text_members().items()}
        for i, q in enumerate(todo):
            self._text[q] = {name: hits[i] for name, hits in runs.items()}

    def preload(self, runs: Sequence[Path]) -> None:
        """Read the text members' runs from these files (``write_text_runs``) when ``warm`` needs them,
        before searching the members."""
        self.runs = list(runs)

    def write_text_runs(self, queries: list[str], path: Path) -> None:
        """The text members' runs of ``queries`` (what ``warm`` computes) to a Parquet file, whole or absent:
        workers that split a range's queries share their runs with every part that replays them."""
        self.warm(queries)
        names = sorted({normalise(q) for q in queries})
        rows: dict[str, list] = {"query": [], "member": [], "ids": [], "scores": []}
        for q in names:
            for member, hits in self._text[q].items():
                rows["query"].append(q)
                rows["member"].append(member)
                rows["ids"].append([h.id for h in hits])
                rows["scores"].append([h.score for h in hits])
        table = pa.table(
            {
                "query": pa.array(rows["query"], pa.string()),
                "member": pa.array(rows["member"], pa.string()),
                "ids": pa.array(rows["ids"], pa.list_(pa.string())),
                "scores": pa.array(rows["scores"], pa.list_(pa.float64())),
            }
        )
        write_parquet_atomic(table, path)

    def _read_runs(self, queries: list[str]) -> None:
        wanted = pa.array(queries, pa.string())
        members = set(self._text_members(load=False))
        for path in self.runs:
            if not Path(path).is_file():
                raise ConfigError(
                    f"no text-runs file {path}: the engine's workers write it to a folder this process "
                    "must see at the same path"
                )
            table = pq.read_table(path)
            table = table.filter(pc.is_in(table["query"], value_set=wanted))
            for q, member, ids, scores in zip(
                table["query"].to_pylist(),
                table["member"].to_pylist(),
                table["ids"].to_pylist(),
                table["scores"].to_pylist(),
                strict=True,
            ):
                if member in members:
                    hits = [Hit(i, s) for i, s in zip(ids, scores, strict=True)]
                    self._text.setdefault(q, {})[member] = hits
        # A query counts as read only with a run of every text member, in the members' order.
        for q in queries:
            found = self._text.get(q)
            if found is not None:
                if set(found) != members:
                    del self._text[q]
                else:
                    self._text[q] = {name: found[name] for name in self._text_members(load=False)}

    def _text_members(self, load: bool = True) -> dict[str, Retriever]:
        """The query-only members, in the fusion's order (loaded first if handed over unloaded)."""
        if load and self._load_text is not None:
            self._load_text()
            self._load_text = None
        return {n: m for n, m in self.fused.members.items() if not isinstance(m, BehaviouralRetriever)}

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
            runs = {name: member.search(q, depth) for name, member in self._text_members().items()}
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
