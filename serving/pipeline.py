"""One search: retrieval -> feature assembly -> ranking with the promoted model -> impression logged.

Every part is loaded once at start-up. What a request ranks with (the default model, the experiments'
rankers and assignment) is one immutable snapshot that ``serving.reload.ServedState`` swaps on a promotion
or a new experiment file; a request takes the snapshot once, so it finishes on what it started with.

The impression is logged with the feature rows the ranker scored (its page and a sample of the unshown
candidates, ``features.served``), in the same round trip: training sets built from served traffic then hold
exactly the served values.

Degradation: feature reads go through ``GuardedStore``; when Redis is down or slow the request is ranked on
the rows every feature has without Redis (catalogue attributes and declared defaults) and marked degraded.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from data.contracts import SearchImpression, ServedFeatures, ShownBlock, Team
from features.connection import StoreUnavailable, redis_deadline
from features.definitions import NAMES, Request
from features.groups import PERSONAL_GROUPS, default_mask
from features.relevance import RetrievalScores
from features.served import served_record
from features.store import FeatureStore
from ranking.registry import ModelRegistry
from retrieval.base import BaseRetriever, Hit
from retrieval.cache import LruCache
from retrieval.fusion import FusedRetriever
from retrieval.query import check_query, normalise
from serving.block_views import BlockView, BlockViews
from serving.config import ServingSettings
from serving.errors import NotReady
from serving.experiments.assignment import Assigner, Treatment
from serving.experiments.config import RETRIEVAL_ORDER
from serving.experiments.interleaving import team_draft
from serving.metrics import Metrics
from serving.ranker import ServedModel
from serving.reload import Served, ServedState

DEFAULT_EXPLORATION_POOL = 20  # blocks an exploring page is drawn from, unless a variant says otherwise


@dataclass
class RankedBlock:
    block: BlockView
    score: float
    features: dict[str, float] | None = None


@dataclass
class SearchResult:
    request_id: str
    blocks: list[RankedBlock]
    treatment: Treatment
    ranker_version: str
    n_candidates: int
    degraded_reasons: list[str] = field(default_factory=list)
    latency_ms: dict[str, float] = field(default_factory=dict)
    teams: list[Team] | None = None  # interleaved pages: the ranker ("a" or "b") behind each block


@dataclass(frozen=True)
class Candidates:
    """One request's candidates before ranking: hits best first and their rows (``NAMES`` order)."""

    request_id: str
    ts: datetime
    query: str  # normalised
    hits: list[Hit]
    rows: np.ndarray  # (n, len(NAMES))
    degraded_reasons: list[str]


class SearchPipeline:
    def __init__(
        self,
        retriever: BaseRetriever,
        catalog: BlockViews,
        store: FeatureStore,
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
        # Fused candidates per (normalised query, fusion weights): retrieval is deterministic for the indexes.
        self.retrieval_cache: LruCache[tuple[str, tuple], list[Hit]] = LruCache(settings.retrieval_cache_size)
        self.state = ServedState(registry, settings, getattr(retriever, "members", {}))
        self.reload_experiments()  # a bad file at start-up stops the server: better than serving without it

    # Models and experiments: held and swapped by serving.reload.ServedState -----------------------------

    @property
    def served(self) -> Served:
        return self.state.current

    @property
    def model(self) -> ServedModel | None:
        return self.state.current.model

    @property
    def model_error(self) -> str | None:
        return self.state.current.model_error

    @property
    def assigner(self) -> Assigner:
        return self.state.current.assigner

    def reload_model(self) -> ServedModel | None:
        return self.state.reload_model()

    def reload_experiments(self) -> Assigner:
        return self.state.reload_experiments()

    # Search -----------------------------------------------------------------------------------------------

    def _retrieve(self, query: str, weights: dict[str, float] | None) -> list[Hit]:
        key = (query, tuple(sorted(weights.items())) if weights else ())

        def compute(_: object) -> list[Hit]:
            # _check_fusion refuses a config with weights unless the retriever is fused.
            if weights and isinstance(self.retriever, FusedRetriever):
                return self.retriever.search_weighted(query, self.candidates, weights)
            return self.retriever.search(query, self.candidates)

        return self.retrieval_cache.get_or_compute(key, compute)

    def _score(
        self,
        spec: str | None,
        hits: list[Hit],
        rows: np.ndarray,
        model: ServedModel | None,
        models: dict[str, ServedModel],
        reasons: list[str],
    ) -> tuple[np.ndarray, str]:
        """Scores of the candidates by the named ranker (None: the served line) and the version to log."""
        if spec is not None and spec != RETRIEVAL_ORDER:
            served = models.get(spec)
            if served is not None:
                return served.score(rows), f"{served.line}@{served.version}"
            reasons.append(f"experiment ranker '{spec}' is not loaded: the default ranker answered")
            self.metrics.degraded.labels("experiment_ranker").inc()
        if spec != RETRIEVAL_ORDER and model is not None:
            return model.score(rows), model.version
        if spec != RETRIEVAL_ORDER:
            reasons.append(f"no ranking model ({self.served.model_error}): retrieval order")
            self.metrics.degraded.labels("no_model").inc()
        return np.array([h.score for h in hits]), RETRIEVAL_ORDER

    def _gather(
        self,
        request_id: str,
        now: datetime,
        text: str,
        user_id: str,
        session_id: str,
        depth: int,
        weights: dict[str, float] | None,
        reasons: list[str],
        lat: dict[str, float],
    ) -> tuple[list[Hit], np.ndarray]:
        """Retrieval's top ``depth`` known blocks and their feature rows as of ``now``."""
        t = time.perf_counter()
        known = [h for h in self._retrieve(text, weights) if h.id in self.catalog.blocks]
        hits = known[:depth]
        lat["retrieval"] = self._observe("retrieval", t)
        ids = tuple(h.id for h in hits)
        if not ids:
            return hits, np.zeros((0, len(NAMES)))
        t = time.perf_counter()
        relevance = RetrievalScores.align(hits, ids)
        req = Request(request_id, int(now.timestamp() * 1000), user_id, text, ids, relevance, session_id)
        try:
            rows = self.store.assemble(req, self.catalog.features)
        except StoreUnavailable:
            rows = self.store.defaults(req, self.catalog.features)
            reasons.append("feature store unavailable: ranked on non-personal default features")
            self.metrics.degraded.labels("store").inc()
        lat["features"] = self._observe("features", t)
        return hits, rows

    def gather_candidates(
        self,
        query: str,
        user_id: str,
        depth: int,
        session_id: str | None = None,
        now: datetime | None = None,
        request_id: str | None = None,
    ) -> Candidates:
        """What /search would rank for this request, neither ranked nor logged: retrieval's top ``depth``
        known blocks and their feature rows as of ``now`` (default: the wall clock; a replay of a world
        passes the request's time on the world's timeline). Offline evaluation scores rankers on these.

        ``request_id`` (default: a new random one) seeds the request's random features (the bandit's
        Thompson draw): an evaluation that names its requests gets the same rows on every run.
        """
        reasons: list[str] = []
        lat: dict[str, float] = {}
        text = normalise(check_query(query, self.retriever.limits))
        request_id, now = request_id or uuid.uuid4().hex, now or datetime.now(UTC)
        hits, rows = self._gather(request_id, now, text, user_id, session_id or "", depth, None, reasons, lat)
        return Candidates(request_id, now, text, hits, rows, reasons)

    def search(
        self,
        query: str,
        user_id: str,
        k: int,
        *,
        session_id: str | None = None,
        explain: bool = False,
    ) -> SearchResult:
        # One deadline for all of the request's Redis work (features read, impression logged): however Redis
        # misbehaves, it costs a request at most this much.
        with redis_deadline(self.settings.redis_deadline_ms / 1000):
            return self._search(query, user_id, k, session_id=session_id, explain=explain)

    def _search(
        self, query: str, user_id: str, k: int, *, session_id: str | None, explain: bool
    ) -> SearchResult:
        started = time.perf_counter()
        lat: dict[str, float] = {}
        request_id = uuid.uuid4().hex
        now = datetime.now(UTC)
        # One consistent snapshot for this request: reloads swap these references, never mutate them.
        served = self.served
        model, models = served.model, served.models
        treatment = served.assigner.assign(user_id)
        variant = treatment.settings
        text = normalise(check_query(query, self.retriever.limits))
        reasons: list[str] = []

        depth = max(k, variant.rerank_depth or self.settings.rerank_depth)
        hits, rows = self._gather(
            request_id, now, text, user_id, session_id or "", depth, variant.fusion_weights, reasons, lat
        )
        ids = tuple(h.id for h in hits)
        if not ids:
            lat["total"] = self._observe("total", started)
            version = model.version if model else RETRIEVAL_ORDER
            return SearchResult(request_id, [], treatment, version, 0, reasons, lat)
        rows = _switch_off(rows, variant.personalized, variant.feature_groups)

        t = time.perf_counter()
        rng = np.random.default_rng(int(request_id[:16], 16))  # per request, replayable from its id
        teams: list[Team] | None = None
        if treatment.interleave is not None:
            scores_a, version_a = self._score(treatment.interleave.a, hits, rows, model, models, reasons)
            scores_b, version_b = self._score(treatment.interleave.b, hits, rows, model, models, reasons)
            order_a = np.argsort(-scores_a, kind="stable")
            order_b = np.argsort(-scores_b, kind="stable")
            page, teams = team_draft(order_a.tolist(), order_b.tolist(), k, rng)
            order = np.array(page, dtype=np.int64)
            scores = np.zeros(len(ids))
            scores[order] = np.where(np.array(teams) == Team.A, scores_a[order], scores_b[order])
            # The coin flips make these pages random, but their marginals are not tracked: the offline
            # estimate leaves interleaved pages out (search.experiments.counterfactual).
            propensity = np.ones(len(order))
            version = f"a={version_a};b={version_b}"
        else:
            scores, version = self._score(variant.ranker, hits, rows, model, models, reasons)
            # Stable sort with the retrieval rank as tie-break, so equal scores keep a deterministic order.
            ranked = np.argsort(-scores, kind="stable")
            order, propensity = _explore(ranked, k, variant.exploration, variant.exploration_pool, rng)
        lat["ranking"] = self._observe("ranking", t)

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
        served_rows = self._served(request_id, now, ids, rows, scores, order, treatment.interleave is None)
        self._log(
            request_id,
            now,
            user_id,
            session,
            text,
            blocks,
            len(ids),
            treatment,
            version,
            propensity,
            teams,
            served_rows,
        )
        lat["log"] = self._observe("log", t)
        lat["total"] = self._observe("total", started)
        if lat["total"] > self.settings.budget_ms:
            self.metrics.over_budget.inc()
        return SearchResult(request_id, blocks, treatment, version, len(ids), reasons, lat, teams)

    def _log(
        self,
        request_id: str,
        now: datetime,
        user_id: str,
        session_id: str,
        query: str,
        blocks: list[RankedBlock],
        n_candidates: int,
        treatment: Treatment,
        version: str,
        propensity: np.ndarray,
        teams: list[Team] | None,
        served_rows: ServedFeatures | None = None,
    ) -> None:
        """Publish the impression, and beside it the served feature rows, in one round trip."""
        if not blocks:
            return
        impression = SearchImpression(
            request_id=request_id,
            ts=now,
            user_id=user_id,
            session_id=session_id,
            query=query,
            shown=[
                ShownBlock(block_id=b.block.block_id, position=i, propensity=float(p))
                for i, (b, p) in enumerate(zip(blocks, propensity, strict=True), 1)
            ],
            n_candidates=n_candidates,
            experiment=treatment.experiment,
            variant=treatment.variant,
            ranker_version=version,
            teams=teams,
        )
        try:
            # One XADD more in the same pipeline: the served rows cost no round trip of their own, and share
            # the impression's fate under the request's Redis deadline.
            self.store.publish([impression] if served_rows is None else [impression, served_rows])
        except StoreUnavailable:
            # The answer matters more than its log line; the loss is counted.
            self.metrics.impressions_lost.inc()
            if served_rows is not None:
                self.metrics.served_lost.labels("store").inc()

    def _served(
        self,
        request_id: str,
        now: datetime,
        ids: tuple[str, ...],
        rows: np.ndarray,
        scores: np.ndarray,
        page: np.ndarray,
        scored: bool,
    ) -> ServedFeatures | None:
        """The feature rows this request was ranked on (those of its page and a sample of the others), or
        None when the log is off or the rows cannot be logged (a non-finite value: counted, never fatal).

        ``rows`` are the ones the ranker scored (groups a variant switched off already at their defaults).
        ``scored`` is False on an interleaved page, whose unshown candidates have no one ranker's score.
        """
        if not self.settings.log_served_features or not len(page):
            return None
        try:
            return served_record(
                request_id,
                now,
                ids,
                rows,
                scores,
                page.tolist(),
                self.settings.log_unshown_features,
                score_unshown=scored,
            )
        except ValueError:  # a non-finite value: the contract would refuse the record
            self.metrics.served_lost.labels("invalid").inc()
            return None

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


def _switch_off(rows: np.ndarray, personalized: bool | None, groups: dict[str, bool] | None) -> np.ndarray:
    """The rows with the features of switched-off groups at their defaults (a copy; the input is kept)."""
    off = {g for g, on in (groups or {}).items() if not on}
    if personalized is False:
        off |= set(PERSONAL_GROUPS)
    if not off:
        return rows
    cols, defaults = default_mask(off)
    out = np.array(rows, dtype=np.float64, copy=True)
    out[:, cols] = defaults
    return out


def _explore(
    ranked: np.ndarray, k: int, epsilon: float | None, pool: int | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """The page (candidate indices) and each shown block's propensity of being at its position.

    With probability epsilon the page is a uniformly random draw from the ranker's top ``pool`` blocks (the
    world's logging policy explores the same way), else the ranker's top k. A block's propensity of being
    at position j is then (1 - epsilon) * [the ranker puts it at j] + epsilon / pool: what inverse
    propensity estimators divide by. Without exploration the page is deterministic: propensity 1.
    """
    if not epsilon:
        page = ranked[:k]
        return page, np.ones(len(page))
    size = min(len(ranked), max(pool or DEFAULT_EXPLORATION_POOL, k))
    page = rng.permutation(ranked[:size])[:k] if rng.random() < epsilon else ranked[:k]
    on_top = page == ranked[: len(page)]
    return page, (1 - epsilon) * on_top + epsilon / size
