"""The model registry: register, validate, promote, refuse a regression, roll back, warm start."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from ranking.config import RankingSettings
from ranking.dataset import ListwiseData
from ranking.errors import ModelFormatError, ModelRefused, PromotionRefused, RegistryError
from ranking.lgbm import LightGBMRanker
from ranking.pipeline import train_and_register
from ranking.registry import ModelRegistry


def shuffled(data: ListwiseData, seed: int) -> ListwiseData:
    """The same lists with labels permuted inside each list: a model trained on it learns nothing."""
    rng = np.random.default_rng(seed)
    labels = data.labels.copy()
    for q in range(data.n_lists):
        lo, hi = data.offsets[q], data.offsets[q + 1]
        labels[lo:hi] = rng.permutation(labels[lo:hi])
    return ListwiseData(
        dense=data.dense,
        labels=labels,
        offsets=data.offsets,
        feature_names=data.feature_names,
        categorical=data.categorical,
        cardinalities=data.cardinalities,
        categorical_names=data.categorical_names,
        vectors=data.vectors,
    )


def small_lgbm() -> LightGBMRanker:
    return LightGBMRanker(n_estimators=40, num_leaves=7, min_data_in_leaf=5)


def test_promote_refuse_regression_and_rollback(tmp_path: Path, synthetic: tuple[ListwiseData, ...]) -> None:
    train, valid, holdout = synthetic
    reg = ModelRegistry(tmp_path / "models", tolerance=0.01)
    good = reg.register(small_lgbm().fit(train, valid), "ranker", metadata={"data_range": "days 1-3"})
    assert (good, reg.current("ranker")) == ("v0001", None)
    with pytest.raises(PromotionRefused, match="never validated"):
        reg.promote("ranker", good)
    first = reg.validate("ranker", good, holdout)
    assert first.passed and first.baseline is None
    reg.promote("ranker", good)
    assert reg.current("ranker") == good

    bad = reg.register(small_lgbm().fit(shuffled(train, 0)), "ranker")
    report = reg.validate("ranker", bad, holdout)
    assert report.baseline == good and not report.passed and report.delta is not None and report.delta < -0.01
    with pytest.raises(PromotionRefused, match="regresses ndcg@10"):
        reg.promote("ranker", bad)
    assert reg.current("ranker") == good

    better = reg.register(small_lgbm().fit(train, valid), "ranker")
    assert reg.validate("ranker", better, holdout).passed  # same model: delta 0 is within tolerance
    reg.promote("ranker", better)
    reg.promote("ranker", bad, force=True)  # an operator may override, and roll back
    assert reg.rollback("ranker") == better
    assert reg.rollback("ranker") == good
    with pytest.raises(RegistryError, match="no earlier promoted version"):
        reg.rollback("ranker")
    rows = {r["version"]: r for r in reg.describe("ranker")}
    assert (
        rows[good]["current"] and rows[good]["data_range"] == "days 1-3" and rows[bad]["validated"] is False
    )


def test_validation_goes_stale_when_current_changes(
    tmp_path: Path, synthetic: tuple[ListwiseData, ...]
) -> None:
    train, valid, holdout = synthetic
    reg = ModelRegistry(tmp_path, tolerance=0.5)
    a = reg.register(small_lgbm().fit(train, valid), "ranker")
    b = reg.register(small_lgbm().fit(train, valid), "ranker")
    reg.validate("ranker", a, holdout)
    reg.validate("ranker", b, holdout)  # both validated while nothing was current
    reg.promote("ranker", a)
    with pytest.raises(PromotionRefused, match="validate again"):
        reg.promote("ranker", b)


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    reg = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="no model line 'nope'"):
        reg.current("nope")
    with pytest.raises(RegistryError, match="letters, digits"):
        reg.versions("../escape")
    (tmp_path / "ranker" / "versions").mkdir(parents=True)
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.load("ranker", "v0009")
    with pytest.raises(RegistryError, match="no current model"):
        reg.load("ranker")


def test_warm_start_fine_tunes_the_current_model(tmp_path: Path, synthetic: tuple[ListwiseData, ...]) -> None:
    train, valid, holdout = synthetic
    settings = RankingSettings(lgbm_trees=30, threads=1)
    reg = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError):
        train_and_register("lgbm", train, valid, settings, reg, warm_start=True)
    first, _ = train_and_register("lgbm", train, valid, settings, reg)
    reg.validate("ranker", first, holdout)
    reg.promote("ranker", first)
    second, ranker = train_and_register("lgbm", valid, holdout, settings, reg, warm_start=True)
    manifest_rows = {r["version"]: r for r in reg.describe("ranker")}
    assert manifest_rows[second]["parent"] == first and ranker.info_["warm_start"] is True
    assert ranker.info_["trees"] > reg.load("ranker", first).info_["trees"]
    with pytest.raises(RegistryError, match="a 'lgbm' model"):
        train_and_register("mlp", valid, holdout, settings, reg, warm_start=True)


def test_a_changed_model_file_is_refused_by_name(tmp_path: Path, synthetic: tuple[ListwiseData, ...]) -> None:
    train, valid, _ = synthetic
    reg = ModelRegistry(tmp_path)
    version = reg.register(small_lgbm().fit(train, valid), "ranker")
    model_file = reg.path("ranker", version) / "model.txt"
    raw = bytearray(model_file.read_bytes())
    raw[len(raw) // 2] ^= 0x01  # one byte changed, the length kept: only the checksum can tell
    model_file.write_bytes(bytes(raw))
    with pytest.raises(ModelFormatError, match=r"model\.txt: sha256 .* differs from the manifest"):
        reg.load("ranker", version)
    assert reg.describe("ranker")[0]["version"] == version  # listing reads the manifest only


def test_a_model_saved_by_the_old_code_is_refused_clearly(tmp_path: Path) -> None:
    folder = tmp_path / "ranker" / "versions" / "v0001"
    folder.mkdir(parents=True)
    old = {"format": 1, "model": "lgbm", "params": {}, "schema": {}, "files": ["model.txt"]}
    (folder / "manifest.json").write_text(json.dumps(old))
    (folder / "model.txt").write_text("tree\n")
    (tmp_path / "ranker" / "state.json").write_text('{"current": "v0001", "history": ["v0001"]}')
    with pytest.raises(ModelFormatError, match=r"older smartblock \(manifest format 1.* model again"):
        ModelRegistry(tmp_path).load("ranker")


def test_a_model_that_crashes_native_code_is_refused_in_a_child(
    tmp_path: Path, synthetic: tuple[ListwiseData, ...], damage: type
) -> None:
    """A model.txt cut short after which its checksums were recomputed: LightGBM dies parsing it (abort or
    SIGSEGV). The trial child dies instead of this process, promotion is refused even with force, the
    current model stays, and the verdict is remembered (no second child for the same content)."""
    train, valid, holdout = synthetic
    reg = ModelRegistry(tmp_path)
    good = reg.register(small_lgbm().fit(train, valid), "ranker")
    reg.promote("ranker", good, force=True)
    bad = reg.register(small_lgbm().fit(valid), "ranker")
    damage.truncate_resealed(reg.path("ranker", bad))
    with pytest.raises(ModelRefused, match=rf"ranker/{bad} refused: the trial process died of SIG\w+"):
        reg.promote("ranker", bad, force=True)
    assert reg.current("ranker") == good
    started = time.monotonic()
    with pytest.raises(ModelRefused, match="native crash"):
        reg.load("ranker", bad)
    assert time.monotonic() - started < 1.0  # cached: a child takes longer than this to import LightGBM
    rows = {r["version"]: r for r in reg.describe("ranker")}
    assert "native crash" in rows[bad]["broken"] and rows[good]["broken"] is None
    assert reg.load("ranker").score(holdout).shape == (holdout.n_rows,)
