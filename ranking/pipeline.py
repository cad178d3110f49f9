"""Offline jobs on ``ListwiseData``, from LTR files or a world's point-in-time training set.

The CLI only turns its options into ``ListwiseData`` and calls these, so ``--world`` commands are a thin
addition: build train/valid/test from the world and call the same functions.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ranking.base import Ranker
from ranking.config import RankingSettings
from ranking.dataset import ListwiseData
from ranking.errors import RegistryError, WorldDataError
from ranking.evaluate import DEFAULT_KS, evaluate_scores
from ranking.ltr import load_svmlight
from ranking.models import make_ranker
from ranking.registry import ModelRegistry
from ranking.training_cache import data_signature, feature_fingerprint
from ranking.world import WorldSource

if TYPE_CHECKING:
    from data.engine import EngineSettings


def load_ltr_splits(
    train_file: Path,
    test_file: Path | None = None,
    valid_file: Path | None = None,
    valid_fraction: float = 0.15,
    seed: int = 0,
) -> tuple[ListwiseData, ListwiseData, ListwiseData | None]:
    """(train, valid, test) from LTR files; without ``valid_file``, valid is carved from the training lists.

    The test file is never used for early stopping or tuning: it only feeds the final evaluation.
    """
    full = load_svmlight(train_file)
    width = full.dense.shape[1]
    if valid_file is not None:
        train, valid = full, load_svmlight(valid_file, n_features=width)
    else:
        train, valid = full.split(valid_fraction, seed=seed)
    test = load_svmlight(test_file, n_features=width) if test_file is not None else None
    return train, valid, test


def fit_ranker(
    name: str,
    train: ListwiseData,
    valid: ListwiseData | None,
    settings: RankingSettings,
    seed: int | None = None,
) -> tuple[Ranker, float]:
    """A fitted ranker of type ``name`` and the seconds its training took."""
    started = time.perf_counter()
    ranker = make_ranker(name, settings, seed=seed).fit(train, valid)
    return ranker, time.perf_counter() - started


def compare_models(
    names: Sequence[str],
    train: ListwiseData,
    valid: ListwiseData | None,
    test: ListwiseData,
    settings: RankingSettings,
    ks: Sequence[int] = DEFAULT_KS,
    slices: Sequence[str] = (),
    seed: int | None = None,
    on_model: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Fit every model on the same train/valid split and evaluate it on ``test``.

    Returns ``{model: {"ndcg@1": ..., "ndcg@5": ..., "ndcg@10": ..., "mrr": ..., "by_<slice>": ...}}``.
    """
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        ranker, seconds = fit_ranker(name, train, valid, settings, seed=seed)
        results[name] = evaluate_scores(test, ranker.score(test), ks=ks, slices=slices)
        if on_model is not None:
            on_model(name, {**results[name], "train_seconds": round(seconds, 2)})
    return results


def train_and_register(
    name: str,
    train: ListwiseData,
    valid: ListwiseData | None,
    settings: RankingSettings,
    registry: ModelRegistry,
    line: str = "ranker",
    warm_start: bool = False,
    metadata: dict[str, Any] | None = None,
    engine: EngineSettings | None = None,
) -> tuple[str, Ranker]:
    """Train (or, with ``warm_start``, fine-tune the line's current model) and register a new version.

    ``engine``: train on the engine (a local Dask cluster, or ``engine.address``): LightGBM's distributed
    LambdaMART, a torch ranker data-parallel with one ``torch.distributed`` rank per worker, or the DASALC
    ensemble with one member per task (docs/scale.md).

    The manifest records the validation metrics, the parent version of a warm start and ``metadata``
    (e.g. ``{"data_range": {"train": "2026-01-01..2026-01-10"}}``).
    """
    parent = None
    if warm_start:
        parent = registry.current(line)
        ranker = registry.load(line)  # raises when the line has no current model
        if ranker.kind != name:
            raise RegistryError(
                f"cannot warm-start a '{name}' model from {line}/{parent}, a '{ranker.kind}' model"
            )
    else:
        ranker = make_ranker(name, settings)
    _fit(ranker, train, valid, warm_start, engine)
    metrics = evaluate_scores(valid, ranker.score(valid)) if valid is not None else {}
    meta = {"metrics": {"valid": metrics}, "parent": parent, **(metadata or {})}
    meta.setdefault("data_range", {"train_lists": train.n_lists, "train_rows": train.n_rows})
    return registry.register(ranker, line, metadata=meta), ranker


def _fit(
    ranker: Ranker, train: ListwiseData, valid: ListwiseData | None, warm: bool, engine: EngineSettings | None
) -> None:
    from data.engine import optional_engine_client

    # Every ranker's fit takes the client (None: in this process), so no model type is a special case here.
    with optional_engine_client(engine) as client:
        ranker.fit(train, valid, warm_start=warm, client=client)


def train_world_ranker(
    name: str,
    source: WorldSource,
    settings: RankingSettings,
    registry: ModelRegistry,
    *,
    personalized: bool = True,
    days: tuple[date | None, date | None] = (None, None),
    line: str = "ranker",
    warm_start: bool = False,
    engine: EngineSettings | None = None,
) -> tuple[str, Ranker]:
    """Train on a world's training days (early stopping on its validation day) and register a version.

    Args:
        days: (first, last) training day; by default the split's training days, except that a warm start
            begins the day after the parent model's last training day (it fine-tunes on new days only).
        personalized: False drops the user-dependent features (the manifest records it).
    """
    split = source.split
    first, last = days
    if warm_start and first is None:
        parent = registry.current(line) if line in registry.lines() else None
        if parent is None:
            raise RegistryError(f"model line '{line}' has no current model to warm-start from")
        trained = registry.data_range(line, parent).get("train", "")
        if ".." not in trained:
            raise RegistryError(f"{line}/{parent} records no training day range to continue after")
        first = date.fromisoformat(trained.split("..")[1]) + timedelta(days=1)
    first, last = first or split.train[0], last or split.train[1]
    if first > last:
        raise WorldDataError(f"no training days in {first}..{last} (nothing new since the parent model?)")
    if last >= split.valid[0]:
        raise WorldDataError(
            f"training must end before the validation day {split.valid[0]}; got {first}..{last}"
        )
    train = source.lists((first, last), personalized=personalized)
    valid: ListwiseData | None = source.lists(split.valid, personalized=personalized).data
    if name == "lgbm" and source.candidate_lists:
        # LightGBM's validation NDCG reads the raw click labels and not the policy-aware weights: on
        # candidate lists it rewards copying the logged page and stopped after one tree (measured), so
        # LightGBM trains its configured trees there instead.
        valid = None
    world_settings = settings.for_world()
    metadata = {
        "data_range": {
            "world": str(source.layout.root),
            "data_signature": data_signature(source.layout),
            "train": f"{first}..{last}",
            "valid": f"{split.valid[0]}..{split.valid[1]}",
            "train_lists": train.data.n_lists,
            "train_rows": train.data.n_rows,
            # The share of the range's requests the training set kept (ranking.world.max_requests).
            "request_sample": float((source.table().schema.metadata or {}).get(b"request_sample", b"1.0")),
        },
        "features": {
            "personalized": personalized,
            "fingerprint": feature_fingerprint(source.features),
            "ips_clip": settings.world.ips_clip,
        },
    }
    return train_and_register(
        name, train.data, valid, world_settings, registry, line, warm_start, metadata=metadata, engine=engine
    )


def world_holdout(source: WorldSource, metadata: dict[str, Any]) -> ListwiseData:
    """The world's test days as click-labelled lists with the features a model uses, per its manifest's
    ``metadata``.

    No truth: a portal validates on its own logs. Pass ``functools.partial(world_holdout, source)`` to
    ``ModelRegistry.validate`` so a candidate and the current model each get their own feature set.
    """
    personalized = bool((metadata.get("features") or {}).get("personalized", True))
    return source.lists(source.split.test, personalized=personalized).data
