"""Quickstart: everything a served search needs, on the embedded defaults, in one job.

World (generated unless the folder has one), its statistics, the retrieval indexes, the online features in
the store, the M3 user vectors (when the ranker uses them) and a default ranker (trained and promoted unless
the line's current model was trained on this world). Each step returns a typed result; ``quickstart`` hands
each to ``on_step`` as it finishes (the CLI prints it) and returns them all.

Quickstart's own policy, kept here rather than in the settings: M3 trains under a time cap on fewer
held-out clicks, and a world whose logs are too short for the configured day split (the tiny world's 4 days)
gets a smaller one (``fit_day_plan``) instead of failing.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from data.days import NotEnoughDays, Progress
from data.layout import DataLayout
from search.jobs.results import EmbeddingRun, FeatureBuild, WorldStats
from search.settings import Scale, Settings

if TYPE_CHECKING:
    from features.store import RedisFeatureStore
    from ranking.registry import ModelRegistry

# Training-time cap of the M3 model quickstart trains for serving (CI runs quickstart on 2 cores).
QUICKSTART_M3_SECONDS = 90.0
M3_EVAL_MAX_EVENTS = 5000  # held-out clicks M3 is compared on: fewer than a full evaluation, to stay quick
# Measured on the served path (`evaluate --candidates`, docs/ranking.md): DCN-V2 trained on candidate lists
# captured 0.374 of the oracle's gain over retrieval order on the small world, LightGBM 0.167 (same run).
DEFAULT_RANKER = "dcn"
RANKER_LINE = "ranker"
T = TypeVar("T")


# Day plans --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DayPlan:
    """How many of the logged days warm up the features, validate and test (training gets the rest)."""

    logged_days: int
    warmup_days: int
    valid_days: int
    test_days: int
    fitted: bool = False  # True: smaller than the configured plan, to fit the logs

    def parts(self) -> dict[str, int]:
        """The plan as day-split settings (``warmup_days``, ``valid_days``, ``test_days``)."""
        return {"warmup_days": self.warmup_days, "valid_days": self.valid_days, "test_days": self.test_days}

    def describe(self) -> str:
        train = self.logged_days - self.warmup_days - self.valid_days - self.test_days
        return (
            f"{self.logged_days} logged days: warmup {self.warmup_days}, train {train}, "
            f"validation {self.valid_days}, test {self.test_days}"
        )


def fit_day_plan(logged_days: int, *, warmup_days: int, valid_days: int, test_days: int) -> DayPlan:
    """The configured plan when the logs hold it, else the nearest smaller one that keeps a training day.

    Days are taken from the test days first (down to one), then validation (down to one), then warmup:
    held-out days cost the least to lose when there are few, and a model needs its training and validation
    days. Raises ``NotEnoughDays`` under three logged days (one each for training, validation and test).
    """
    plan = [warmup_days, valid_days, test_days]
    floors = (0, 1, 1)
    for part in (2, 1, 0):  # test, validation, warmup
        while 1 + sum(plan) > logged_days and plan[part] > floors[part]:
            plan[part] -= 1
    if 1 + sum(plan) > logged_days:
        raise NotEnoughDays(f"{logged_days} logged days, need at least 3 (training, validation, test)")
    fitted = plan != [warmup_days, valid_days, test_days]
    return DayPlan(logged_days, *plan, fitted=fitted)


# Steps ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WorldReady:
    path: Path
    generated: bool


@dataclass(frozen=True)
class IndexesBuilt:
    status: dict[str, str]  # member -> "built" | "exists" | ...


@dataclass(frozen=True)
class FeaturesBuilt:
    build: FeatureBuild
    store: str  # where the features went, for people


@dataclass(frozen=True)
class EmbeddingsOutcome:
    status: Literal["off", "skipped", "reused", "trained"]  # off: the ranker does not use M3
    reason: str | None = None  # why off or skipped
    version: str | None = None
    written: int = 0
    run: EmbeddingRun | None = None  # a new training run
    plan: DayPlan | None = None
    seconds: float = 0.0


@dataclass(frozen=True)
class RankerOutcome:
    version: str
    trained: bool  # False: the line already had a promoted model, kept
    model: str | None
    registry_dir: Path
    plan: DayPlan | None = None
    table_seconds: float = 0.0  # the point-in-time candidate training set (0: from the cache)
    train_seconds: float = 0.0
    replaced: tuple[str, str] | None = None  # the current version it replaced, and where that one came from


QuickstartStep = WorldReady | WorldStats | IndexesBuilt | FeaturesBuilt | EmbeddingsOutcome | RankerOutcome


@dataclass(frozen=True)
class QuickstartResult:
    world: WorldReady
    stats: WorldStats
    indexes: IndexesBuilt
    features: FeaturesBuilt
    embeddings: EmbeddingsOutcome
    ranker: RankerOutcome


def prepare_world(
    settings: Settings, world: Path, scale: Scale, workers: int, progress: Progress | None = None
) -> WorldReady:
    from data.world.generate import generate_world

    if (world / "world.json").is_file():
        return WorldReady(world, generated=False)
    generate_world(
        world,
        scale=scale,
        seed=settings.world.seed,
        workers=workers,
        engine=settings.engine,
        progress=progress,
    )
    return WorldReady(world, generated=True)


def describe_world(world: Path) -> WorldStats:
    from data.world.stats import world_stats

    return WorldStats.model_validate(world_stats(world))


def build_indexes(settings: Settings, world: Path, progress: Progress | None = None) -> IndexesBuilt:
    from retrieval.system import build_world_index

    built = build_world_index(world, settings.retrieval, progress=progress, engine=settings.engine)
    return IndexesBuilt({name: row["status"] for name, row in built.items()})


def build_features(
    settings: Settings, world: Path, store: RedisFeatureStore, progress: Progress | None = None
) -> FeaturesBuilt:
    from data.layout import DataLayout
    from features.build import build_online_features

    build = FeatureBuild.model_validate(build_online_features(DataLayout(world), store, progress=progress))
    where = settings.features.redis_url or f"the embedded Redis in {settings.features.embedded_dir}"
    return FeaturesBuilt(build, where)


def user_embeddings(
    settings: Settings, world: Path, store: RedisFeatureStore, progress: Progress | None = None
) -> EmbeddingsOutcome:
    """M3 user and block vectors into the (just rebuilt) store: the current model's when it was trained on
    this world's blocks, else a new one, time-capped (``QUICKSTART_M3_SECONDS``) and compared with the
    baselines on fewer held-out clicks, to keep quickstart short. On logs too short for M3 the ranker's
    ``m3_*`` features stay missing."""
    from features.embeddings.errors import NotEnoughData
    from features.embeddings.pipeline import train_user_embeddings, write_current_vectors

    m3 = settings.embeddings
    if not m3.as_of:
        # The ranker trains without M3 inputs then (embeddings.as_of is off by default: see docs/features.md),
        # so serving vectors would only cost quickstart time.
        return EmbeddingsOutcome("off", "embeddings.as_of is off: the ranker does not use M3 features")
    started = time.perf_counter()
    layout = DataLayout(world)
    reused = write_current_vectors(layout, store, m3)
    if reused is not None:
        return EmbeddingsOutcome("reused", version=reused["version"], written=reused["written"])
    try:
        # M3 splits the days without warmup: the configured validation and test days, if the logs hold them.
        plan = fit_day_plan(
            len(layout.days("impressions")), warmup_days=0, valid_days=m3.valid_days, test_days=m3.test_days
        )
    except NotEnoughDays as exc:
        return EmbeddingsOutcome("skipped", exc.reason)
    quick = m3.model_copy(
        update={
            "max_train_seconds": m3.max_train_seconds or QUICKSTART_M3_SECONDS,
            "baseline_table": "m3",  # no second (mean-encoder) training for the baselines
            "eval_max_events": min(m3.eval_max_events, M3_EVAL_MAX_EVENTS),
            "valid_days": plan.valid_days,
            "test_days": plan.test_days,
        }
    )
    try:
        run = EmbeddingRun.model_validate(train_user_embeddings(layout, quick, store, progress=progress))
    except NotEnoughData as exc:
        return EmbeddingsOutcome("skipped", exc.reason, plan=plan)
    seconds = round(time.perf_counter() - started, 1)
    return EmbeddingsOutcome("trained", None, run.version, run.written, run, plan, seconds)


def default_ranker(settings: Settings, world: Path, progress: Progress | None = None) -> RankerOutcome:
    """Train the default ranker and promote it, unless the line's current model was trained on this world's
    logs as they are now (then keep that)."""
    from ranking.pipeline import train_world_ranker
    from ranking.registry import ModelRegistry
    from search.jobs.training import world_source

    ranking = settings.ranking
    registry = ModelRegistry(
        ranking.registry_dir, tolerance=ranking.tolerance, metric=ranking.promotion_metric
    )
    current = registry.current(RANKER_LINE) if RANKER_LINE in registry.lines() else None
    trained_on = None if current is None else _trained_on(registry, current)
    if current is not None and _same_world(trained_on, world):
        return RankerOutcome(current, trained=False, model=None, registry_dir=ranking.registry_dir)
    days = ranking.world
    plan = fit_day_plan(
        len(DataLayout(world).days("impressions")),
        warmup_days=days.warmup_days,
        valid_days=days.valid_days,
        test_days=days.test_days,
    )
    if plan.fitted:
        ranking = ranking.model_copy(update={"world": days.model_copy(update=plan.parts())})
    source = world_source(settings, world, ranking, progress)
    started = time.perf_counter()
    source.table()
    built = time.perf_counter()
    version, _ = train_world_ranker(DEFAULT_RANKER, source, ranking, registry, line=RANKER_LINE)
    # No current model of this world to validate against: either none, or one trained on other logs, whose
    # test days this world does not have.
    registry.promote(RANKER_LINE, version, force=True)
    return RankerOutcome(
        version,
        True,
        DEFAULT_RANKER,
        ranking.registry_dir,
        plan,
        round(built - started, 1),
        round(time.perf_counter() - built, 1),
        replaced=None if current is None else (current, _origin(trained_on)),
    )


def _trained_on(registry: ModelRegistry, version: str) -> dict[str, Any] | None:
    """The ``data_range`` the current version records, or None when its folder or manifest is unreadable
    (a model this job cannot vouch for is replaced like another world's)."""
    from ranking.errors import ModelFormatError, RegistryError

    try:
        return registry.data_range(RANKER_LINE, version)
    except (ModelFormatError, RegistryError):
        return None


def _origin(trained_on: dict[str, Any] | None) -> str:
    """Where a replaced model came from, for people."""
    if trained_on is None:
        return "its manifest is unreadable"
    return str(trained_on.get("world") or "no world recorded")


def _same_world(trained_on: dict[str, Any] | None, world: Path) -> bool:
    """Whether a model was trained on this world's logs as they are now.

    The registry folder is shared by every world under ``worlds/`` (CI's tiny quickstart, then a small one,
    used to serve the small world with the tiny world's model). A regenerated world at the same path changes
    its files' signature; a manifest from before signatures were recorded is judged by the path alone.
    """
    from ranking.training_cache import data_signature

    if not trained_on or "world" not in trained_on:
        return False
    if "data_signature" in trained_on:
        return trained_on["data_signature"] == data_signature(DataLayout(world))
    return Path(trained_on["world"]).resolve() == world.resolve()


def quickstart(
    settings: Settings,
    *,
    world: Path | None = None,
    scale: Scale = "small",
    workers: int | None = None,
    progress: Progress | None = None,
    on_step: Callable[[QuickstartStep], None] | None = None,
) -> QuickstartResult:
    """Every step in order on ``world`` (default: ``<data_dir>/<scale>``); each result also goes to
    ``on_step`` as soon as it is known. ``workers`` generate the world (default: ``world.workers_for``)."""
    from features.store import RedisFeatureStore

    report = on_step or (lambda step: None)
    world = world or settings.data_dir / scale
    if workers is None:
        workers = settings.world.workers_for(scale, settings.engine)
    ready = prepare_world(settings, world, scale, workers, progress)
    report(ready)
    stats = describe_world(world)
    report(stats)
    indexes = build_indexes(settings, world, progress)
    report(indexes)
    store = RedisFeatureStore.connect(settings.features)
    if _parts_on_engine(settings):
        # The store's features and the ranker's training set both read the logs and nothing of each other.
        # While the engine's workers build the training set, this process mostly waits on them, so the
        # features build takes that time (on the small world, 26 s of a 4:38 quickstart) instead of its own.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="features-build") as pool:
            pending = pool.submit(_in_the_background, build_features, settings, world, store, progress)
            ranker = default_ranker(settings, world, progress)
            features = pending.result()
    else:
        features = build_features(settings, world, store, progress)
        ranker = default_ranker(settings, world, progress)
    report(features)
    embeddings = user_embeddings(settings, world, store, progress)
    report(embeddings)
    report(ranker)
    return QuickstartResult(ready, stats, indexes, features, embeddings, ranker)


def _in_the_background(job: Callable[..., T], *args: Any) -> T:
    """Run ``job`` in this thread at the lowest CPU priority (Linux gives each thread its own nice value),
    so the engine's workers, which quickstart waits on, keep their cores and this takes what they leave.
    Where that is not allowed, the job runs at the normal priority."""
    if hasattr(os, "setpriority"):
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    return job(*args)


def _parts_on_engine(settings: Settings) -> bool:
    """Whether the training set is built by engine workers (in other processes) rather than this one."""
    from ranking.training_cache import engine_parts

    return engine_parts(settings.engine) > 1
