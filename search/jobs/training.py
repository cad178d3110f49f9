"""A world's training source as every training job builds it: the ranking settings' day plan and lists, the
feature and M3 settings, and the retrieval replay that gives each row its ``rel_*`` features.

The replay needs the world's retrieval indexes (``smartblock index build``): it is the serving retrieval
(``retrieval.system.load_world_retrievers``) answering as of each logged request (``retrieval.asof``), so a
ranker learns from the relevance signals it is served with.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from data.days import Progress
from data.layout import DataLayout
from ranking.config import RankingSettings
from ranking.world import WorldSource
from retrieval.asof import AsOfRetrieval
from retrieval.base import Hit
from search.settings import Settings

# The retrieval settings that decide a fused candidate list (not caches, threads or evaluation options).
SHAPING = {"members", "candidates", "splade", "dense", "behavioural", "bm25", "fusion"}


def retrieval_replay(settings: Settings, world: Path, runs: Sequence[Path] = ()) -> AsOfRetrieval:
    """The world's fused retrieval, replayable as of any logged request (warm it on the queries to come).

    With ``runs`` (files of ``AsOfRetrieval.write_text_runs``) the text members stay unloaded until a query
    without a run on file needs them.
    """
    from retrieval.system import load_text_members, load_world_retrievers

    retrievers = load_world_retrievers(world, settings.retrieval, load_text=not runs)
    fused = retrievers["fused"]
    layout = DataLayout(world)
    imps = layout.read_events("impressions", validate_rows=False)
    acts = layout.read_events("interactions", validate_rows=False)
    return AsOfRetrieval(
        fused,  # type: ignore[arg-type]
        imps,
        acts,
        k=settings.retrieval.candidates,
        runs=runs,
        load_text=(lambda: load_text_members(world, retrievers)) if runs else None,
    )


class LazyReplay:
    """``retrieval_replay`` loaded on the first use: a cached training set needs no indexes or encoders.

    ``key`` names what decides the answers besides the world's files (which the training-set cache already
    fingerprints): the retrieval settings that shape the fused list, and the retrieval package's code.
    Pickled (to an engine worker), it carries the settings, the world and the run files only: each process
    loads its own.
    """

    def __init__(self, settings: Settings, world: Path) -> None:
        self.settings, self.world = settings, world
        self._runs: list[Path] = []
        self._replay: AsOfRetrieval | None = None

    def __getstate__(self) -> dict:
        return {"settings": self.settings, "world": self.world, "_runs": self._runs, "_replay": None}

    @property
    def key(self) -> str:
        import retrieval.asof
        from ranking.training_cache import package_digest

        r = self.settings.retrieval
        shaping = r.model_dump(mode="json", include=SHAPING)
        # The code too: a retrieval change (say, how a batch of queries is scored) changes the rel_* values.
        return json.dumps(shaping, sort_keys=True) + "|" + package_digest(retrieval.asof.__file__)

    def _loaded(self) -> AsOfRetrieval:
        if self._replay is None:
            self._replay = retrieval_replay(self.settings, self.world, self._runs)
        return self._replay

    def preload(self, runs: Sequence[Path]) -> None:
        """Take the text members' runs from these files (``write_text_runs``) when ``warm`` needs them."""
        if self._replay is not None:
            raise RuntimeError("preload the runs before the replay is loaded")
        self._runs = list(runs)

    def write_text_runs(self, queries: list[str], path: Path) -> None:
        self._loaded().write_text_runs(queries, path)

    def warm(self, queries: list[str]) -> None:
        self._loaded().warm(queries)

    def search(self, query: str, ts_ms: int) -> list[Hit]:
        return self._loaded().search(query, ts_ms)


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
        # Resolved: an engine worker (another process, maybe another machine) loads the replay itself.
        retrieval=LazyReplay(settings, world.resolve()) if ranking.world.relevance else None,
        engine=settings.engine,
    )
