"""The CLI as users run it: a real subprocess, real files, JSON on stdout, clear errors on bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from data.layout import DataLayout
from features.dataset import sampled_requests
from search.cli.common import ProgressLines


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_console_script_is_installed() -> None:
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("smartblock") == "search.cli:main"


@pytest.mark.parametrize(
    "command", [[], ["world"], ["world", "generate"], ["world", "stats"], ["quickstart"]]
)
def test_help_everywhere(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


def test_generate_then_stats_as_json(tmp_path: Path) -> None:
    out = tmp_path / "w"
    gen = run("world", "generate", "--scale", "tiny", "--seed", "3", "--out", str(out), "--json")
    assert gen.returncode == 0, gen.stderr
    manifest = json.loads(gen.stdout)
    assert manifest["scale"] == "tiny" and manifest["seed"] == 3 and manifest["counts"]["impressions"] > 1000
    stats = run("world", "stats", str(out), "--json")
    assert stats.returncode == 0, stats.stderr
    result = json.loads(stats.stdout)
    assert result["counts"]["impressions"] == manifest["counts"]["impressions"]
    assert set(result["oracle_by_entropy"]) == {"low", "mid", "high"}
    human = run("world", "stats", str(out))
    assert human.returncode == 0 and "CTR by position" in human.stderr


def test_progress_goes_to_a_log_as_lines(tmp_path: Path) -> None:
    # stderr is a pipe here, as under nohup or CI: rich would draw nothing until the end.
    gen = run("world", "generate", "--scale", "tiny", "--seed", "3", "--out", str(tmp_path / "w"))
    assert gen.returncode == 0, gen.stderr
    lines = [
        line for line in gen.stderr.splitlines() if re.match(r"^[\w -]+: [\d,]+/[\d,]+ \(\d+%\) in ", line)
    ]
    assert any("(100%)" in line for line in lines), gen.stderr


def test_progress_lines_are_throttled_per_stage() -> None:
    now = [0.0]
    written: list[str] = []
    report = ProgressLines(written.append, every=10.0, clock=lambda: now[0])
    for done in range(0, 101, 5):  # 1 s apart: one line at the start, one at 10 s, 20 s, and the end
        now[0] = done / 5
        report("encode", done, 100)
    assert written == [
        "encode: 0/100 (0%) in 0.0 s",
        "encode: 50/100 (50%) in 10.0 s, 5.0/s",
        "encode: 100/100 (100%) in 20.0 s, 5.0/s",
    ]
    report("encode", 0, 40)  # a second run under the same name starts afresh
    assert written[-1] == "encode: 0/40 (0%) in 0.0 s"
    report("search", 1, 1)
    report("search", 1, 1)  # called again after it ended: a second search
    assert written[-2:] == ["search: 1/1 (100%) in 0.0 s"] * 2
    now[0] += 3
    report("encode", 30, 40)  # stops short of its total (and within the 10 s): only flush says where
    report("sessions", 7, 0)  # no total known
    assert written[-1] == "sessions: 7/0 in 0.0 s"
    report.flush()
    assert written[-1] == "encode: 30/40 (75%) in 3.0 s, 10.0/s"
    report.flush()  # nothing new
    assert written[-1] == "encode: 30/40 (75%) in 3.0 s, 10.0/s" and len(written) == 8


def test_features_dataset_keeps_a_sample_of_requests(tiny_world: Path, tmp_path: Path) -> None:
    days = DataLayout(tiny_world).days("impressions")
    span = ["features", "dataset", "--world", str(tiny_world), "--from", str(days[1]), "--to", str(days[-1])]
    whole = run(*span, "--out", str(tmp_path / "whole.parquet"), "--json")
    half = run(*span, "--out", str(tmp_path / "half.parquet"), "--sample", "0.5", "--json")
    assert whole.returncode == 0 and half.returncode == 0, whole.stderr + half.stderr
    full, sampled = pq.read_table(tmp_path / "whole.parquet"), pq.read_table(tmp_path / "half.parquet")
    ids = sorted(set(full["request_id"].to_pylist()))
    kept = [r for r, keep in zip(ids, sampled_requests(ids, 0.5), strict=True) if keep]
    assert 0.3 * len(ids) < len(kept) < 0.7 * len(ids)
    assert sampled.equals(full.filter(pc.is_in(full["request_id"], value_set=pa.array(kept, pa.string()))))
    assert sampled.schema.metadata[b"request_sample"] == b"0.5"
    assert json.loads(half.stdout)["requests"] == len(kept)
    for bad, reason in (
        (["--sample", "0"], "in (0, 1]"),
        (["--sample", "0.5", "--served"], "--served"),
    ):
        refused = run(*span, "--out", str(tmp_path / "bad.parquet"), *bad)
        assert refused.returncode != 0 and reason in refused.stderr.replace("\n", ""), (
            refused.stderr and "Traceback" not in refused.stderr
        )
        assert not (tmp_path / "bad.parquet").exists()


def test_settings_come_from_env_and_config_file(tmp_path: Path) -> None:
    config = tmp_path / "smartblock.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\nworld:\n  scale: tiny\n  seed: 5\n")
    gen = run("--config", str(config), "world", "generate", "--json", env={"SMARTBLOCK_WORLD__SEED": "9"})
    assert gen.returncode == 0, gen.stderr
    manifest = json.loads(gen.stdout)
    assert (manifest["scale"], manifest["seed"]) == ("tiny", 9)  # env beats the file, the file beats defaults
    assert (tmp_path / "data" / "tiny" / "world.json").is_file()


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["world", "generate", "--scale", "huge"], {}, "huge"),
        (["world", "stats", "/nonexistent/world"], {}, "/nonexistent/world/world.json"),
        (["world", "generate", "--scale", "tiny"], {"SMARTBLOCK_WORLD__SEED": "-1"}, "world.seed"),
        (["--config", "/nonexistent.yaml", "world", "generate"], {}, "does not exist"),
    ],
)
def test_bad_input_gets_a_clear_error_and_no_traceback(
    args: list[str], env: dict[str, str], needle: str
) -> None:
    result = run(*args, env=env)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_refuses_to_overwrite_a_world(tmp_path: Path) -> None:
    out = tmp_path / "w"
    assert run("world", "generate", "--scale", "tiny", "--out", str(out), "--json").returncode == 0
    again = run("world", "generate", "--scale", "tiny", "--out", str(out))
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_train_seed_reaches_world_training() -> None:
    # World training runs on `ranking.world.train` (for_world): a --seed written only to `ranking.train`
    # left every world-trained network identical to the default seed's.
    from search.cli.ranking import _settings

    settings = _settings(seed=7)
    assert settings.for_world().train.seed == 7
    assert settings.train.seed == 7
    assert _settings().for_world().train.seed == 0
