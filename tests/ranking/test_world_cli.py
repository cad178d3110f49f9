"""``smartblock evaluate/train ranker/models validate --world`` as users run them, on the tiny world."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# 4 logged days: warm-up, train, valid, test. Few epochs: these check plumbing, not model quality.
ENV = {
    "SMARTBLOCK_RANKING__THREADS": "1",
    "SMARTBLOCK_RANKING__WORLD__TEST_DAYS": "1",
    "SMARTBLOCK_RANKING__WORLD__TRAIN__MAX_EPOCHS": "3",
    # Training replays the world's retrieval for the rel_* features: indexes that build in seconds.
    "SMARTBLOCK_RETRIEVAL__MEMBERS": '["bm25", "behavioural"]',
}


def run(
    *args: str, registry: Path | None = None, extra: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **ENV, **(extra or {})}
    if registry is not None:
        env["SMARTBLOCK_RANKING__REGISTRY_DIR"] = str(registry)
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, timeout=600, env=env
    )


@pytest.fixture(scope="module")
def world(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A private copy: the commands write their training-set cache under the world folder.
    out = tmp_path_factory.mktemp("cli") / "tiny"
    shutil.copytree(tiny_world, out, ignore=shutil.ignore_patterns(".cache"))
    built = run("index", "build", "--world", str(out))
    assert built.returncode == 0, built.stderr
    return out


def test_evaluate_world_json_and_plot(world: Path, tmp_path: Path) -> None:
    plot = tmp_path / "ndcg.png"
    models = "logging,linear,linear-np,oracle"
    result = run("evaluate", "--world", str(world), "--models", models, "--json", "--plot", str(plot))
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)
    assert list(table) == models.split(",")
    for row in table.values():
        assert {"ndcg@1", "ndcg@5", "ndcg@10", "mrr", "by_entropy", "by_diversity"} <= set(row)
        assert set(row["by_diversity"]) == {"focused", "middle", "diverse"}
        assert set(row["by_entropy"]) <= {"low", "mid", "high", "unseen"}
        assert 0 < row["ndcg@10"] <= 1 and 0 < row["mrr"] <= 1
    assert table["oracle"]["ndcg@10"] == pytest.approx(1.0)
    assert table["logging"]["ndcg@10"] < table["oracle"]["ndcg@10"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The second run reuses the cached training set.
    again = run("evaluate", "--world", str(world), "--models", "logging")
    assert again.returncode == 0 and "training set cached" in again.stderr, again.stderr


def test_train_validate_and_warm_start(world: Path, tmp_path: Path) -> None:
    reg = tmp_path / "registry"
    days = sorted(p.name.removeprefix("day=") for p in (world / "events" / "impressions").iterdir())
    train_day = days[1]
    first = run("train", "ranker", "--model", "linear", "--world", str(world), "--json", registry=reg)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["version"] == "v0001"
    manifest = json.loads((reg / "ranker" / "versions" / "v0001" / "manifest.json").read_text())
    assert manifest["kind"] == "linear" and set(manifest["files"]) == {"model.safetensors"}
    meta = manifest["metadata"]
    assert meta["data_range"]["train"] == f"{train_day}..{train_day}"
    assert meta["features"]["personalized"] is True and "ndcg@10" in meta["metrics"]["valid"]
    assert meta["data_range"]["request_sample"] == 1.0
    # A range over ranking.world.max_requests trains on a share of its requests, and the model says so.
    few = tmp_path / "few"
    sampled = run(
        "train", "ranker", "--model", "linear", "--world", str(world), registry=few,
        extra={"SMARTBLOCK_RANKING__WORLD__MAX_REQUESTS": "2000"},
    )  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr
    kept = json.loads((few / "ranker" / "versions" / "v0001" / "manifest.json").read_text())["metadata"]
    assert 0.2 < kept["data_range"]["request_sample"] < 0.8
    assert 0 < kept["data_range"]["train_lists"] < meta["data_range"]["train_lists"]
    checked = run("models", "validate", "ranker", "v0001", "--world", str(world), "--json", registry=reg)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["passed"] is True
    assert run("models", "promote", "ranker", "v0001", registry=reg).returncode == 0
    # Nothing new since v0001's last training day: a warm start has no days to learn from.
    warm = run("train", "ranker", "--model", "linear", "--world", str(world), "--warm-start", registry=reg)
    assert warm.returncode != 0 and "no training days" in warm.stderr
    # A non-personalized model records it, and validation builds its holdout with the same features.
    plain = run(
        "train", "ranker", "--model", "linear", "--world", str(world), "--non-personalized", registry=reg
    )
    assert plain.returncode == 0, plain.stderr
    meta = json.loads((reg / "ranker" / "versions" / "v0002" / "manifest.json").read_text())["metadata"]
    assert meta["features"]["personalized"] is False
    assert not any(n.startswith("user_") for n in meta["schema"]["feature_names"])
    checked = run("models", "validate", "ranker", "v0002", "--world", str(world), "--json", registry=reg)
    assert checked.returncode in (0, 1), checked.stderr
    assert json.loads(checked.stdout)["baseline"] == "v0001"


def test_world_errors_are_clear(world: Path, tmp_path: Path) -> None:
    result = run("evaluate", "--world", str(world), "--models", "logging,xgb")
    assert result.returncode == 2 and "unknown model(s) ['xgb']" in result.stderr
    result = run("evaluate", "--models", "lgbm")
    assert result.returncode == 2 and "either --world" in result.stderr
    no_truth = tmp_path / "portal"
    shutil.copytree(world, no_truth, ignore=shutil.ignore_patterns("truth"))
    result = run("evaluate", "--world", str(no_truth), "--models", "logging")
    assert result.returncode == 2 and "truth" in result.stderr


def test_cluster_option_builds_the_training_set_on_that_cluster(world: Path, tmp_path: Path) -> None:
    from data.engine import EngineSettings, engine_client

    fresh = tmp_path / "tiny"  # no cached training set: the parts must be built
    shutil.copytree(world, fresh, ignore=shutil.ignore_patterns(".cache"))
    with engine_client(EngineSettings(workers=2)) as client:
        address = client.scheduler.address
        args = ["train", "ranker", "--world", str(fresh), "--model", "linear", "--cluster", address, "--json"]
        result = run(*args, registry=tmp_path / "models")
        assert result.returncode == 0, result.stderr
        prefixes = client.run_on_scheduler(lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert "build_part" in prefixes  # `_build_part` tasks ran on the cluster named, not in the CLI
    assert "run_rank" in prefixes  # `_run_rank`: and so did the torch ranker's training, one rank per worker
    trained = json.loads(result.stdout)
    assert trained["model"] == "linear" and trained["info"]["engine"]["ranks"] == 2


def test_engine_option_trains_an_ensemble_a_member_per_worker_task(world: Path, tmp_path: Path) -> None:
    fresh = tmp_path / "tiny"
    shutil.copytree(world, fresh, ignore=shutil.ignore_patterns(".cache"))
    args = ["train", "ranker", "--world", str(fresh), "--model", "dasalc-ens", "--engine", "--json"]
    extra = {"SMARTBLOCK_RANKING__ENSEMBLE_SIZE": "2", "SMARTBLOCK_ENGINE__WORKERS": "2"}
    result = run(*args, registry=tmp_path / "models", extra=extra)
    assert result.returncode == 0, result.stderr
    trained = json.loads(result.stdout)
    members = trained["info"]["members"]
    assert trained["model"] == "dasalc-ens" and len(members) == 2
    # Each member in a worker process of the command's local cluster (one per worker), never the CLI's own.
    assert len({m["engine"]["pid"] for m in members}) == 2
    assert all(m["engine"]["worker"].startswith("tcp://") for m in members)
