"""The ranking CLI as users run it: a subprocess on small LTR files, JSON on stdout, clear errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ranking.dataset import ListwiseData


def run(*args: str, registry: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SMARTBLOCK_RANKING__THREADS": "1", "SMARTBLOCK_RANKING__TRAIN__MAX_EPOCHS": "15"}
    if registry is not None:
        env["SMARTBLOCK_RANKING__REGISTRY_DIR"] = str(registry)
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, timeout=300, env=env
    )


@pytest.fixture(scope="module")
def ltr_files(tmp_path_factory: pytest.TempPathFactory, svmlight_writer: Callable, lists_factory: Callable):
    folder = tmp_path_factory.mktemp("ltr")
    train: ListwiseData = lists_factory(80, seed=11)
    test: ListwiseData = lists_factory(30, seed=12)
    svmlight_writer(train, folder / "rank.train", False)  # LightGBM's .query sidecar
    svmlight_writer(test, folder / "rank.test", True)  # qid: inline
    return folder / "rank.train", folder / "rank.test"


@pytest.mark.parametrize("command", [["evaluate"], ["train", "ranker"], ["models"], ["models", "validate"]])
def test_help(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0 and "Usage" in result.stdout, result.stderr


def test_evaluate_json(ltr_files: tuple[Path, Path]) -> None:
    train, test = ltr_files
    result = run(
        "evaluate", "--ltr-train", str(train), "--ltr-test", str(test), "--models", "linear,lgbm", "--json"
    )
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert set(table) == {"linear", "lgbm"}
    for row in table.values():
        assert {"ndcg@1", "ndcg@5", "ndcg@10", "mrr"} <= set(row) and 0.5 < row["ndcg@10"] <= 1


def test_bad_input_is_a_clear_error(ltr_files: tuple[Path, Path], tmp_path: Path) -> None:
    train, _ = ltr_files
    result = run("evaluate", "--ltr-train", str(train), "--ltr-test", str(train), "--models", "lgbm,xgb")
    assert result.returncode == 2 and "unknown model(s) ['xgb']" in result.stderr
    bad = tmp_path / "bad.txt"
    bad.write_text("1 qid:1 1:0.5\n1 qid:1 7\n")
    result = run("evaluate", "--ltr-train", str(bad), "--ltr-test", str(bad), "--models", "lgbm")
    assert result.returncode == 2 and "bad.txt, line 2, field '7'" in result.stderr


def test_train_validate_promote_rollback(ltr_files: tuple[Path, Path], tmp_path: Path) -> None:
    train, test = ltr_files
    reg = tmp_path / "models"
    for model in ("lgbm", "linear"):
        result = run("train", "ranker", "--model", model, "--ltr-train", str(train), "--json", registry=reg)
        assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"] == "v0002"
    refused = run("models", "promote", "ranker", "v0001", registry=reg)
    assert refused.returncode == 2 and "never validated" in refused.stderr
    for version in ("v0001", "v0002"):
        check = run(
            "models", "validate", "ranker", version, "--ltr-holdout", str(test), "--json", registry=reg
        )
        assert check.returncode in (0, 1), check.stderr
        assert json.loads(check.stdout)["candidate"] == version
        if version == "v0001":
            assert run("models", "promote", "ranker", version, registry=reg).returncode == 0
    assert run("models", "promote", "ranker", "v0002", "--force", registry=reg).returncode == 0
    back = run("models", "rollback", "ranker", registry=reg)
    assert back.returncode == 0 and "v0001" in back.stderr
    listing = json.loads(run("models", "list", "--json", registry=reg).stdout)
    assert [r["current"] for r in listing["ranker"]] == [True, False]


@pytest.fixture(scope="module")
def one_lgbm(ltr_files: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry with one LightGBM version trained by the CLI, validated and promoted (copied per test)."""
    train, test = ltr_files
    reg = tmp_path_factory.mktemp("one-lgbm") / "models"
    trained = run("train", "ranker", "--model", "lgbm", "--ltr-train", str(train), registry=reg)
    assert trained.returncode == 0, trained.stderr
    checked = run("models", "validate", "ranker", "v0001", "--ltr-holdout", str(test), registry=reg)
    assert checked.returncode == 0, checked.stderr
    assert run("models", "promote", "ranker", "v0001", registry=reg).returncode == 0
    return reg


def test_a_model_that_crashes_native_code_exits_2_with_the_reason(
    one_lgbm: Path, ltr_files: tuple[Path, Path], tmp_path: Path, damage: type
) -> None:
    """`models validate` on a model.txt cut short (checksums recomputed) used to die of a signal (139)."""
    _, test = ltr_files
    reg = tmp_path / "models"
    shutil.copytree(one_lgbm, reg)
    damage.truncate_resealed(damage.copy_version(reg / "ranker", "v0001", "v0002"))
    check = run("models", "validate", "ranker", "v0002", "--ltr-holdout", str(test), registry=reg)
    assert check.returncode == 2, (check.returncode, check.stderr)
    assert "ranker/v0002 refused: the trial process died of SIG" in check.stderr
    forced = run("models", "promote", "ranker", "v0002", "--force", registry=reg)
    assert forced.returncode == 2 and "refused" in forced.stderr, (forced.returncode, forced.stderr)
    listing = json.loads(run("models", "list", "--json", registry=reg).stdout)
    assert [r["current"] for r in listing["ranker"]] == [True, False]


def test_a_broken_manifest_is_listed_as_broken(one_lgbm: Path, tmp_path: Path, damage: type) -> None:
    """One manifest.json cut short: `models list` lists it with the reason beside the others (it used to
    fail whole), and validating or promoting it exits 2 naming the file."""
    reg = tmp_path / "models"
    shutil.copytree(one_lgbm, reg)
    damage.break_manifest(damage.copy_version(reg / "ranker", "v0001", "v0002"))
    listed = run("models", "list", "--json", registry=reg)
    assert listed.returncode == 0, listed.stderr
    rows = {r["version"]: r for r in json.loads(listed.stdout)["ranker"]}
    assert rows["v0001"]["model"] == "lgbm" and rows["v0001"]["broken"] is None
    assert "v0002/manifest.json: not valid JSON" in rows["v0002"]["broken"] and rows["v0002"]["model"] is None
    table = run("models", "list", registry=reg)
    assert table.returncode == 0 and "not valid JSON" in table.stderr, table.stderr
    forced = run("models", "promote", "ranker", "v0002", "--force", registry=reg)
    assert forced.returncode == 2 and "manifest.json: not valid JSON" in forced.stderr, forced.stderr
