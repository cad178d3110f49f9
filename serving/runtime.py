"""Everything one app serves from, loaded once: the heavy parts (indexes, catalogue) and the per-app ones.

``load_parts`` does the slow work (JVM, encoders, indexes, catalogue) and may be shared by several apps in
one process (tests); ``Runtime.start`` adds the cheap, per-app parts: the Redis client, the pipeline, the
background threads.
"""

from __future__ import annotations

import gc
import logging
from dataclasses import dataclass
from pathlib import Path

from data.layout import DataLayout
from features.store import RedisFeatureStore
from ranking.registry import ModelRegistry
from retrieval.base import BaseRetriever
from serving.background import Background
from serving.block_views import BlockViews
from serving.config import ServingSettings, StageSettings
from serving.metrics import Metrics
from serving.pipeline import SearchPipeline
from serving.store import GuardedStore, serving_client

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Parts:
    world: Path
    retriever: BaseRetriever
    catalog: BlockViews


def load_parts(settings: StageSettings, world: Path, warmup_queries: int = 0) -> Parts:
    """Load the world's fused retriever (indexes must be built: `smartblock index build`) and block views;
    then search ``warmup_queries`` made-up queries so users' first queries find the query path compiled
    (``retrieval.warmup``)."""
    from retrieval.system import load_world_retrievers
    from retrieval.warmup import warm_up

    retriever = load_world_retrievers(world, settings.retrieval)["fused"]
    catalog = BlockViews.load(DataLayout(Path(world)))
    if warmup_queries:
        titles = [b.title for b in catalog.blocks.values()]
        done = warm_up(retriever, titles, warmup_queries, settings.retrieval.candidates)
        log.info("warm-up: %d made-up queries in %.1f s", done.queries, done.seconds)
    return Parts(Path(world), retriever, catalog)


@dataclass
class Runtime:
    settings: StageSettings
    serving: ServingSettings
    parts: Parts
    store: GuardedStore
    pipeline: SearchPipeline
    metrics: Metrics
    background: Background

    @classmethod
    def start(cls, settings: StageSettings, serving: ServingSettings, parts: Parts) -> Runtime:
        import torch

        # Requests run on several threads of a small machine: one torch thread each, not a pool per request.
        torch.set_num_threads(serving.torch_threads)
        metrics = Metrics()
        features = settings.features
        store = GuardedStore(
            RedisFeatureStore(serving_client(features, serving), features), serving.breaker_cooldown_s
        )
        ranking = settings.ranking
        registry = ModelRegistry(
            ranking.registry_dir,
            tolerance=ranking.tolerance,
            metric=ranking.promotion_metric,
            trial_timeout_s=ranking.trial_timeout_s,
        )
        pipeline = SearchPipeline(
            parts.retriever,
            parts.catalog,
            store,
            registry,
            serving,
            metrics,
            candidates=settings.retrieval.candidates,
        )
        pipeline.reload_model()
        metrics.watch_caches(pipeline.caches)
        background = Background(pipeline, store, consume=serving.consume_events, poll_s=serving.model_poll_s)
        metrics.watch_stream_losses(store.stream_losses)
        background.start()
        # The indexes, catalogue and model loaded above are ~400,000 long-lived objects; a full collection
        # walking them took up to 225 ms inside whichever request set it off (a first-seen query's tail).
        # Frozen, they are left out of every later collection; what requests allocate is still collected.
        gc.collect()
        gc.freeze()
        return cls(settings, serving, parts, store, pipeline, metrics, background)

    def stop(self) -> None:
        self.background.stop()
