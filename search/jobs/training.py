"""A world's training source as every training job builds it: the ranking settings' day plan and lists, the
feature and M3 settings, and the retrieval replay that gives each row its ``rel_*`` features.

The replay needs the world's retrieval indexes (``smartblock index build``): it is the serving retrieval
(``retrieval.system.load_world_retrievers``) answering as of each logged request (``retrieval.asof``), so a
ranker learns from the relevance signals it is served with.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.compute as pc

from data.days import Progress
from data.layout import DataLayout
from ranking.config import RankingSettings
from ranking.world import WorldSource
from retrieval.asof import AsOfRetrieval
from search.settings import Settings


def retrieval_replay(settings: Settings, world: Path) -> AsOfRetrieval:
    """The world's fused retrieval, replayable as of any logged request, warmed on its logged queries."""
    from retrieval.system import load_world_retrievers

    fused = load_world_retrievers(world, settings.retrieval)["fused"]
    layout = DataLayout(world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    replay = AsOfRetrieval(fused, imps, acts, k=settings.retrieval.candidates)  # type: ignore[arg-type]
    replay.warm(pc.unique(imps["query"]).to_pylist())
    return replay


def world_source(
    settings: Settings, world: Path, ranking: RankingSettings | None = None, progress: Progress | None = None
) -> WorldSource:
    """``WorldSource`` under ``settings`` (``ranking`` overrides its section, e.g. a fitted day plan)."""
    ranking = ranking or settings.ranking
    return WorldSource(
        world,
        ranking.world,
        settings.features,
        progress=progress,
        embeddings=settings.embeddings,
        retrieval=retrieval_replay(settings, world),
    )
