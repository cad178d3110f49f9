"""One search: retrieval -> feature assembly -> ranking with the promoted model -> impression logged.

Every part is loaded once at start-up. The model is one immutable ``ServedModel`` held in an attribute; a
promotion or rollback loads the new one beside it and swaps the reference (an atomic store in CPython), so
a request in flight finishes on the model it started with and none is dropped or blocked.

Degradation: feature reads go through ``GuardedStore``; when Redis is down or slow the request is ranked on
the rows every feature has without Redis (catalogue attributes and declared defaults) and marked degraded.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import yaml

from data.contracts import SearchImpression, ShownBlock
from features.connection import StoreUnavailable
from features.definitions import NAMES, Request
from ranking.errors import RegistryError
from ranking.registry import ModelRegistry
from retrieval.base import BaseRetriever, Hit
from retrieval.cache import LruCache
from retrieval.query import check_query, normalise
from search.errors import ConfigError
from serving.catalog import BlockView, ServingCatalog
from serving.config import ServingSettings
from serving.errors import NotReady
from serving.metrics import Metrics
from serving.ranker import ServedModel
from serving.store import GuardedStore

NO_MODEL = "retrieval-order"  # ranker_version reported when no model is promoted


@dataclass(frozen=True)
class Experiment:
    experiment: str = "default"
    variant: str = "control"

    @classmethod
    def from_file(cls, path: Path | None) -> Experiment:
        if path is None:
            return cls()
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"experiment config {path}: {exc}") from exc
        if not isinstance(raw, dict) or set(raw) - {"experiment", "variant"}:
            raise ConfigError(f"experiment config {path}: expected only the keys 'experiment' and 'variant'")
        values = {k: str(v) for k, v in raw.items() if v}
        return cls(**values)


@dataclass
class RankedBlock:
    block: BlockView
    score: float
    features: dict[str, float] | None = None


@dataclass
class SearchResult:
    request_id: str
    blocks: list[RankedBlock]
    experiment: Experiment
    ranker_version: str
    n_candidates: int
    degraded_reasons: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)


class SearchPipeline:
    def __init__(
        self,
        retriever: BaseRetriever,
        catalog: ServingCatalog,
        store: GuardedStore,
        registry: ModelRegistry,
        settings: ServingSettings,
        metrics: Metrics,
        *,
        candidates: int = 100,
    ) -> None:
        self.retriever = retriever
        self.catalog = catalog
        self.store = store
        self.registry = registry
        self.settings = settings
        self.metrics = metrics
        self.candidates = candidates
        # Fused candidates per normalised query: retrieval is deterministic for the loaded indexes.
        self.retrieval_cache: LruCache[str, list[Hit]] = LruCache(settings.retrieval_cache_size)
        self.model: ServedModel | None = None
        self.model_error: str | None = None
        self.experiment = Experiment.from_file(settings.experiments_file)
        self._reload_lock = threading.Lock()  # serialises reloads only; searches never take it

    # Model ------------------------------------------------------------------------------------------------

    def reload_model(self) -> ServedModel | None:
        """Load the line's current version (if it changed) and swap it in; returns what is now served."""
        with self._reload_lock:
            line = self.settings.model_line
            try:
                current = self.registry.current(line)
            except RegistryError as exc:  # no such line yet: serve retrieval order until one is promoted
                self.model, self.model_error = None, str(exc)
                return None
            if current is None:
                self.model, self.model_error = None, f"model line '{line}' has no promoted version"
                return None
            if self.model is not None and self.model.version == current:
                return self.model
            loaded = ServedModel.from_registry(self.registry, line, current)  # before the swap: no gap
            self.model, self.model_error = loaded, None
            return loaded

    def reload_experiment(self) -> Experiment:
        self.experiment = Experiment.from_file(self.settings.experiments_file)
        return self.experiment

    # Search -----------------------------------------------------------------------------------------------

    def _retrieve(self, query: str) -> list[Hit]:
        return self.retrieval_cache.get_or_compute(query, lambda q: self.retriever.search(q, self.candidates))

    def search(
        self,
        query: str,
        user_id: str,
        k: int,
        *,
        session_id: str | None = None,
        explain: bool = False,
    ) -> SearchResult:
        started = time.perf_counter()
        lat: dict[str, float] = {}
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        model, experiment = self.model, self.experiment  # one consistent snapshot for this request
        text = normalise(check_query(query, self.retriever.limits))
        reasons: list[str] = []

        t = time.perf_counter()
        hits = self._retrieve(text)
        lat["retrieval"] = self._observe("retrieval", t)
        ids = tuple(h.id for h in hits if h.id in self.catalog.blocks)
        if not ids:
            lat["total"] = self._observe("total", started)
            version = model.version if model else NO_MODEL
            return SearchResult(request_id, [], experiment, version, 0, reasons, lat)

        t = time.perf_counter()
        req = Request(request_id, int(now.timestamp() * 1000), user_id, text, ids)
        try:
            rows = self.store.assemble(req, self.catalog.features)
        except StoreUnavailable:
            rows = self.store.defaults(req, self.catalog.features)
            reasons.append("feature store unavailable: ranked on non-personal default features")
            self.metrics.degraded.labels("store").inc()
        lat["features"] = self._observe("features", t)

        t = time.perf_counter()
        if model is None:
            scores = np.array([h.score for h in hits if h.id in self.catalog.blocks])
            reasons.append(f"no ranking model ({self.model_error}): retrieval order")
            self.metrics.degraded.labels("no_model").inc()
        else:
            scores = model.score(rows)
        # Stable sort with the retrieval rank as tie-break, so equal scores keep a deterministic order.
        order = np.argsort(-scores, kind="stable")[:k]
        lat["ranking"] = self._observe("ranking", t)

        version = model.version if model else NO_MODEL
        blocks = [
            RankedBlock(
                self.catalog.blocks[ids[i]],
                float(scores[i]),
                {n: float(v) for n, v in zip(NAMES, rows[i], strict=True)} if explain else None,
            )
            for i in order
        ]
        t = time.perf_counter()
        session = session_id or request_id  # no session given: a one-request session
        self._log(request_id, now, user_id, session, text, blocks, len(ids), experiment, version)
        lat["log"] = self._observe("log", t)
        lat["total"] = self._observe("total", started)
        if lat["total"] > self.settings.budget_ms:
            self.metrics.over_budget.inc()
        return SearchResult(request_id, blocks, experiment, version, len(ids), reasons, lat)

    def _log(
        self,
        request_id: str,
        now: datetime,
        user_id: str,
        session_id: str,
        query: str,
        blocks: list[RankedBlock],
        n_candidates: int,
        experiment: Experiment,
        version: str,
    ) -> None:
        if not blocks:
            return
        impression = SearchImpression(
            request_id=request_id,
            ts=now,
            user_id=user_id,
            session_id=session_id,
            query=query,
            # The ranker is deterministic: each block lands at its position with probability 1.
            shown=[
                ShownBlock(block_id=b.block.block_id, position=i, propensity=1.0)
                for i, b in enumerate(blocks, 1)
            ],
            n_candidates=n_candidates,
            experiment=experiment.experiment,
            variant=experiment.variant,
            ranker_version=version,
        )
        try:
            self.store.publish([impression])
        except StoreUnavailable:
            # The answer matters more than its log line; the loss is counted.
            self.metrics.impressions_lost.inc()

    def _observe(self, stage: str, since: float) -> float:
        seconds = time.perf_counter() - since
        self.metrics.stage.labels(stage).observe(seconds)
        return round(seconds * 1000, 3)

    def require_ready(self) -> None:
        if not self.retriever.is_built:
            raise NotReady("the retrieval indexes are not loaded")

    def caches(self) -> dict[str, object]:
        """Every query cache, by name, for the metrics (encoder caches of the fused members included)."""
        out: dict[str, object] = {"retrieval": self.retrieval_cache}
        for name, member in getattr(self.retriever, "members", {}).items():
            encoder = getattr(member, "encoder", None)
            if encoder is not None and hasattr(encoder, "cache"):
                out[f"{name}_encoder"] = encoder.cache
        return out
