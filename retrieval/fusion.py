"""Fusion of several retrievers' ranked lists into one.

Two methods:

- ``rrf``: reciprocal rank fusion, ``sum_r w_r / (rrf_k + rank_r(d))`` (Cormack et al., SIGIR 2009).
- ``weighted``: ``sum_r w_r * norm_r(s_r(d))``, each member's scores first put on one scale: ``minmax`` maps a
  list to [0, 1]; ``zscore`` centres it and divides by its spread. A document a member did not return gets
  that member's lowest normalised score (0 under minmax), not a penalty below it.

A plain, equal-weight fusion can lose to its best member when one member is weak (NOTES.md: RRF of
splade-tiny and MiniLM on CISI). ``tune`` picks weights (0 mutes a member), normalisation and method on a
validation split, so the weak member only counts as much as it helps there.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from retrieval.base import BaseRetriever, Hit, Retriever
from retrieval.config import FusionSettings, QueryLimits
from retrieval.errors import RetrievalError
from retrieval.query import check_query

Runs = Mapping[str, Sequence[Hit]]


def _normalised(scores: np.ndarray, how: str) -> tuple[np.ndarray, float]:
    """A member's scores on one scale, and the floor given to documents missing from its list."""
    if how == "minmax":
        lo, span = scores.min(), scores.max() - scores.min()
        # One hit, or all tied: nothing tells them apart, so each gets full credit.
        return ((scores - lo) / span if span > 0 else np.ones_like(scores)), 0.0
    if how == "zscore":
        sd = scores.std()
        norm = (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)
        return norm, float(norm.min())
    raise RetrievalError(f"unknown normalisation '{how}' (expected minmax or zscore)")


def fuse(runs: Runs, settings: FusionSettings, k: int) -> list[Hit]:
    """The k best documents over all members' runs; each hit keeps every member's raw score in ``sources``.

    Scores add member by member in ``runs`` order, so a document's fused score is the same sum whichever
    way it is computed; ties go to the smaller id. Columnar: training replays call this once per logged
    query and day (tens of thousands of times per part).
    """
    index: dict[str, int] = {}
    positions: dict[str, np.ndarray] = {}
    for name, hits in runs.items():
        positions[name] = np.fromiter(
            (index.setdefault(h.id, len(index)) for h in hits), dtype=np.int64, count=len(hits)
        )
    fused = np.zeros(len(index))
    for name, hits in runs.items():
        w = settings.weights.get(name, 1.0)
        if w == 0 or not hits:
            continue
        at = positions[name]
        if settings.method == "rrf":
            np.add.at(fused, at, w / (settings.rrf_k + np.arange(1, len(hits) + 1)))
            continue
        norm, floor = _normalised(np.array([h.score for h in hits], dtype=float), settings.normalisation)
        member = np.full(len(index), floor)
        member[at] = norm
        fused += w * member
    ids = list(index)
    order = _best_first(fused, ids, k).tolist()
    values = fused.tolist()
    scored = {name: {h.id: h.score for h in hits} for name, hits in runs.items()}
    out = []
    for i in order:
        doc = ids[i]
        out.append(Hit(doc, values[i], {name: s[doc] for name, s in scored.items() if doc in s}))
    return out


def _best_first(fused: np.ndarray, ids: list[str], k: int) -> np.ndarray:
    """Positions of the ``k`` best scores, ties to the smaller id: ``np.lexsort`` of the ids as a unicode
    array (as Python orders str, but for trailing NULs, which numpy drops) under the scores, cut at ``k``.

    Only documents scoring at least the ``k``-th best can be among them, so only their ids are sorted as
    text: a unicode array of every id, for one lexsort of all, cost more than the rest of the fusion. NaN
    sorts last in both sorts; a NaN ``k``-th score keeps every document in the lexsort."""
    negated = -fused
    order = np.argsort(negated, kind="stable")
    if k <= 0 or not len(order):
        return order[:0]
    ascending = negated[order]
    head = order[: int(np.searchsorted(ascending, ascending[min(k, len(order)) - 1], side="right"))]
    names = np.array([ids[i] for i in head.tolist()])
    return head[np.lexsort((names, negated[head]))][:k]


class FusedRetriever(BaseRetriever):
    """Asks every member for ``settings.depth`` candidates and fuses them.

    With ``threads`` > 1 a query's members search side by side: the first in the caller's thread, the others
    on a small pool shared by every request (``threads`` - 1 threads), so a request never holds more than
    ``threads`` cores however many requests run at once. A member goes to the pool only when a pool thread is
    free, and otherwise runs in the caller's thread: under concurrent requests every core is busy already,
    and members queued behind other requests' would wait longer than they take.
    """

    name = "fused"

    def __init__(
        self,
        members: Mapping[str, Retriever],
        settings: FusionSettings = FusionSettings(),
        *,
        limits: QueryLimits = QueryLimits(),
        threads: int = 1,
    ) -> None:
        self.members = dict(members)
        self.settings = settings
        self.limits = limits
        self.threads = threads
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._free = threading.Semaphore(max(threads - 1, 0))  # pool threads not searching now

    def _side_pool(self) -> ThreadPoolExecutor | None:
        if self.threads < 2 or len(self.members) < 2:
            return None
        with self._pool_lock:  # made on first use: a retriever built for a batch job never starts threads
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads - 1, thread_name_prefix="member-search")
            return self._pool

    def _member_runs(self, query: str, depth: int) -> dict[str, Sequence[Hit]]:
        pool = self._side_pool()
        if pool is None:
            return {name: m.search(query, depth) for name, m in self.members.items()}
        (first, head), *rest = self.members.items()
        pending, inline = {}, []
        for name, member in rest:
            if self._free.acquire(blocking=False):
                try:
                    pending[name] = pool.submit(self._on_side, member, query, depth)
                except RuntimeError:  # the pool is shutting down: the thread's slot stays free
                    self._free.release()
                    raise
            else:
                inline.append((name, member))
        runs = {first: head.search(query, depth)}
        runs.update((name, member.search(query, depth)) for name, member in inline)
        runs.update((name, f.result()) for name, f in pending.items())
        return {name: runs[name] for name in self.members}  # members' order: fusion ties break alike

    def _on_side(self, member: Retriever, query: str, depth: int) -> Sequence[Hit]:
        try:
            return member.search(query, depth)
        finally:
            self._free.release()

    @property
    def is_built(self) -> bool:
        return bool(self.members) and all(getattr(m, "is_built", True) for m in self.members.values())

    def depth(self, k: int) -> int:
        """Candidates asked of each member for a fused top ``k``."""
        return max(k, self.settings.depth)

    def _search(self, query: str, k: int) -> list[Hit]:
        return self.search_weighted(query, k, None)

    def search_weighted(self, query: str, k: int, weights: Mapping[str, float] | None) -> list[Hit]:
        """``search`` with some members' weights replaced for this call (an A/B variant's fusion)."""
        self._check_ready(k)
        query = check_query(query, self.limits)
        settings = self.settings
        if weights:
            settings = settings.model_copy(update={"weights": {**settings.weights, **weights}})
        return fuse(self._member_runs(query, self.depth(k)), settings, k)

    def _batch_search(self, queries: list[str], k: int) -> list[list[Hit]]:
        per_member = {name: m.batch_search(queries, self.depth(k)) for name, m in self.members.items()}
        return [
            fuse({name: runs[i] for name, runs in per_member.items()}, self.settings, k)
            for i in range(len(queries))
        ]


def weight_grid(names: Sequence[str], step: float) -> list[dict[str, float]]:
    """Every weighting of ``names`` on the simplex with this step (weights sum to 1; 0 mutes a member)."""
    n = round(1 / step)
    grid = []
    for combo in itertools.product(range(n + 1), repeat=len(names)):
        if sum(combo) == n:
            grid.append({name: c / n for name, c in zip(names, combo, strict=True)})
    return grid


def tune(
    member_runs: Mapping[str, Sequence[Sequence[Hit]]],
    score: Callable[[list[list[Hit]]], float],
    settings: FusionSettings,
    k: int,
) -> tuple[FusionSettings, float]:
    """Pick method, normalisation and weights that maximise ``score`` over the validation queries.

    ``member_runs[name][i]`` is member ``name``'s run for validation query i; ``score`` maps fused runs to a
    number (e.g. mean nDCG@10). With a few dozen validation queries the single best grid point is mostly
    noise, so each candidate is judged by the mean score of its grid neighbourhood (same method, every
    weight within one step): a broad optimum beats a lucky spike. Ties go to the earlier candidate
    (weighted-minmax, then zscore, then RRF; more even weights first). Returns the settings and their
    neighbourhood-mean validation score.
    """
    names = list(member_runs)
    if not names:
        raise RetrievalError("nothing to tune: no members")
    n_queries = {len(r) for r in member_runs.values()}
    if len(n_queries) != 1:
        raise RetrievalError(f"members have runs for different numbers of queries: {sorted(n_queries)}")
    (count,) = n_queries
    grid = sorted(weight_grid(names, settings.grid_step), key=lambda w: -min(w.values()))
    candidates: list[FusionSettings] = []
    values: list[float] = []
    for method, normalisation in (
        ("weighted", "minmax"),
        ("weighted", "zscore"),
        ("rrf", settings.normalisation),
    ):
        for weights in grid:
            candidate = settings.model_copy(
                update={"method": method, "normalisation": normalisation, "weights": weights}
            )
            fused = [fuse({n: member_runs[n][i] for n in names}, candidate, k) for i in range(count)]
            candidates.append(candidate)
            values.append(score(fused))
    best_i, best_value = 0, -np.inf
    for i, c in enumerate(candidates):
        near = [
            values[j]
            for j, o in enumerate(candidates)
            if (o.method, o.normalisation) == (c.method, c.normalisation)
            and max(abs(o.weights[n] - c.weights[n]) for n in names) <= settings.grid_step + 1e-9
        ]
        smoothed = float(np.mean(near))
        if smoothed > best_value + 1e-12:
            best_i, best_value = i, smoothed
    return candidates[best_i], best_value
