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
    fused = np.asarray(scores.fused, dtype=np.float64)
    found = ~np.isnan(fused)
    # Rank among the candidates by fused score (0 = best), independent of the order the blocks come in.
    ranked = np.where(found, fused, -np.inf)
    rank = (ranked[None, :] > ranked[:, None]).sum(axis=1)
    out = {
        "rel_missing": (~found).astype(np.float64),
        "rel_fused": np.where(found, fused, 0.0),
        "rel_fused_share": _share_of_best(fused),
        "rel_rank_log": np.where(found, np.log1p(rank), UNRANKED),
    }
    for m in RELEVANCE_MEMBERS:
        raw = np.asarray(scores.members.get(m, np.full(n, np.nan)), dtype=np.float64)
        out[f"rel_{m}"] = np.where(np.isnan(raw), 0.0, raw)
        out[f"rel_{m}_share"] = _share_of_best(raw)
        out[f"rel_{m}_missing"] = np.isnan(raw).astype(np.float64)
    return out


def _share_of_best(raw: np.ndarray) -> np.ndarray:
    """Each score over the list's best (0 where missing; 1 for the best; scores <= 0 lists give 0)."""
    present = ~np.isnan(raw)
    if not present.any():
        return np.zeros(len(raw))
    best = np.nanmax(raw)
    if best <= 0:
        return np.zeros(len(raw))
    return np.where(present, np.maximum(np.nan_to_num(raw), 0.0) / best, 0.0)
