"""The ranking CLI as users run it: a subprocess on small LTR files, JSON on stdout, clear errors."""

from __future__ import annotations

import json
import os
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
