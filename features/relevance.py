"""What retrieval knew of each candidate: the query-block relevance features (group ``rel``).

In: the fused hits of one request (any objects with ``id``, ``score`` and ``sources``, the raw score of each
fusion member that returned the hit: ``retrieval.base.Hit`` is one). Out: ``RetrievalScores`` aligned with
the request's block ids, which ``features.definitions.compute`` turns into the ``rel_*`` columns. Serving
builds them from the hits it is about to rank; training sets from an as-of replay of the same retrieval, so
a candidate's relevance features are computed by one function in both places.

Raw scores differ in scale between queries (a SPLADE dot product, a cosine, a click share), so each member
also gets its score over the best score of that member in the same candidate list, which compares across
queries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

# The fusion members a model can learn from (``retrieval.config.MemberName``; a test keeps them equal).
RELEVANCE_MEMBERS = ("splade", "dense", "bm25", "behavioural")
# What a candidate's rank feature says when retrieval told nothing: below any real candidate list.
UNRANKED = math.log1p(1000)


class ScoredCandidate(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def score(self) -> float: ...

    @property
    def sources(self) -> Mapping[str, float]: ...


@dataclass(frozen=True)
class RetrievalScores:
    """Fused and per-member scores of a request's candidates, aligned with ``Request.block_ids``."""

    fused: np.ndarray  # (n,) fused score; NaN where the block was not among the retrieved candidates
    members: Mapping[str, np.ndarray]  # member -> (n,) raw score, NaN where that member did not return it

    @classmethod
    def align(cls, hits: Sequence[ScoredCandidate], block_ids: Sequence[str]) -> RetrievalScores:
        """The scores of ``block_ids`` among ``hits`` (a shown block outside the hits gets NaN)."""
        by_id = {h.id: h for h in hits}
        fused = np.full(len(block_ids), np.nan)
        members = {m: np.full(len(block_ids), np.nan) for m in RELEVANCE_MEMBERS}
        for i, b in enumerate(block_ids):
            hit = by_id.get(b)
            if hit is None:
                continue
            fused[i] = hit.score
            for m, s in hit.sources.items():
                if m in members:
                    members[m][i] = s
        return cls(fused, members)


def relevance_columns(scores: RetrievalScores | None, n: int) -> dict[str, np.ndarray] | None:
    """The ``rel_*`` feature values of ``n`` candidates; None when the request carries no retrieval scores
    (every ``rel_*`` feature keeps its declared default, ``rel_missing`` = 1)."""
    if scores is None:
        return None
    return relevance_columns_many([scores], [n])


def relevance_columns_many(scores: Sequence[RetrievalScores], sizes: Sequence[int]) -> dict[str, np.ndarray]:
    """``relevance_columns`` of many requests (``sizes[r]`` candidates each), concatenated in request order:
    ranks and shares are taken within each request, element by element as for one."""
    for s, n in zip(scores, sizes, strict=True):
        if len(s.fused) != n:  # concatenated, a short list would shift every later request's columns
            raise ValueError(f"retrieval scores for {len(s.fused)} candidates, the request has {n}")
    owner = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    fused = _joined([s.fused for s in scores])
    found = ~np.isnan(fused)
    # Rank among the request's candidates by fused score (0 = best): how many of them score strictly more.
    rank = _rank_within(np.where(found, fused, -np.inf), owner)
    out = {
        "rel_missing": (~found).astype(np.float64),
        "rel_fused": np.where(found, fused, 0.0),
        "rel_fused_share": _share_of_best(fused, owner, len(sizes)),
        "rel_rank_log": np.where(found, np.log1p(rank), UNRANKED),
    }
    for m in RELEVANCE_MEMBERS:
        raw = _joined([s.members.get(m, np.full(n, np.nan)) for s, n in zip(scores, sizes, strict=True)])
        out[f"rel_{m}"] = np.where(np.isnan(raw), 0.0, raw)
        out[f"rel_{m}_share"] = _share_of_best(raw, owner, len(sizes))
        out[f"rel_{m}_missing"] = np.isnan(raw).astype(np.float64)
    return out


def _joined(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, dtype=np.float64) for a in arrays]) if arrays else np.zeros(0)


def _rank_within(values: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """Per element, how many elements of its group (``owner``) are strictly greater."""
    order = np.lexsort((-values, owner))  # by group, then best first
    ranked, groups = values[order], owner[order]
    at = np.arange(len(values))
    new_group = np.ones(len(values), dtype=bool)
    new_group[1:] = groups[1:] != groups[:-1]
    new_value = new_group.copy()
    new_value[1:] |= ranked[1:] != ranked[:-1]
    first_of_group = np.maximum.accumulate(np.where(new_group, at, 0))
    first_of_value = np.maximum.accumulate(np.where(new_value, at, 0))
    rank = np.empty(len(values), dtype=np.int64)
    rank[order] = first_of_value - first_of_group  # ties share the rank of the first of them
    return rank


def _share_of_best(raw: np.ndarray, owner: np.ndarray, groups: int) -> np.ndarray:
    """Each score over its request's best (0 where missing; 1 for the best; a request whose scores are all
    missing or <= 0 gives 0)."""
    present = ~np.isnan(raw)
    best = np.full(groups, -np.inf)
    np.maximum.at(best, owner[present], raw[present])
    best_of = best[owner]
    usable = present & (best_of > 0)
    return np.where(usable, np.maximum(np.nan_to_num(raw), 0.0) / np.where(usable, best_of, 1.0), 0.0)
