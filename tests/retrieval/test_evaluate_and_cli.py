"""Evaluation on real (tiny) data, the CLI as users run it, and import-time lightness."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from retrieval.base import Passage
from retrieval.config import RetrievalSettings
from retrieval.evaluate import evaluate_beir, evaluate_world, split_queries


def test_world_eval_reports_recall_per_retriever(
    tiny_world: Path, retrieval_settings: RetrievalSettings
) -> None:
    result = evaluate_world(tiny_world, retrieval_settings)
    meta = result.pop("_eval")
    assert meta["learned_before"] == meta["days"][0]
    assert set(result) == {"bm25", "splade", "dense", "behavioural", "fused"}
    for row in result.values():
        assert 0 <= row["recall@10"] <= row["recall@50"] <= row["recall@100"] <= 1
        assert row["requests"] > 100
    best_member = max(row["recall@100"] for name, row in result.items() if name != "fused")
    assert result["fused"]["recall@100"] >= best_member - 0.01


def _write_beir(folder: Path, passages: list[Passage]) -> None:
    """A small BEIR folder from the tiny world: a block's entity + facet as the query, its blocks as truth."""
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for p in passages:
            title, _, rest = p.text.partition(". ")
            fh.write(json.dumps({"_id": p.id, "title": title, "text": rest}) + "\n")
    queries: dict[str, list[str]] = {}
    for p in passages:
        queries.setdefault(p.text.split(":")[0].lower(), []).append(p.id)
    picked = sorted(queries.items())[::3][:40]
    with (folder / "queries.jsonl").open("w") as fh:
        for i, (text, _) in enumerate(picked):
            fh.write(json.dumps({"_id": str(i), "text": text}) + "\n")
    with (folder / "qrels" / "test.tsv").open("w") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for i, (_, ids) in enumerate(picked):
            for doc in ids:
                fh.write(f"{i}\t{doc}\t1\n")


@pytest.fixture(scope="module")
def beir_folder(tmp_path_factory: pytest.TempPathFactory, tiny_passages: list[Passage]) -> Path:
    folder = tmp_path_factory.mktemp("beir") / "tinyblocks"
    _write_beir(folder, tiny_passages[::4])
    return folder


def test_beir_eval_reports_every_system_on_the_test_split(beir_folder: Path, tmp_path: Path) -> None:
    result = evaluate_beir(beir_folder, RetrievalSettings(), tmp_path / "idx")
    meta = result.pop("_eval")
    assert meta["split"] == "test" and meta["fused_members"] == ["bm25", "splade", "dense"]
    assert set(result) == {"bm25", "splade", "dense", "fused"}
    for row in result.values():
        assert 0 < row["ndcg@10"] <= 1 and 0 < row["recall@100"] <= 1
        assert row["queries"] == meta["test_queries"]


def test_query_split_is_stable_and_disjoint() -> None:
    ids = [str(i) for i in range(100)]
    val, test = split_queries(ids, 0.5, 0)
    assert not set(val) & set(test) and len(val) + len(test) == 100
    val2, _ = split_queries([*reversed(ids), "new"], 0.5, 0)
    assert set(val) <= set(val2)


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "search.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **env},
    )


def test_cli_index_build_retrieve_and_errors(
    tiny_world: Path, index_dir: Path, world_retrievers: dict
) -> None:
    # The session fixture built the indexes into index_dir: `index build` must find them up to date.
    env = {"SMARTBLOCK_RETRIEVAL__INDEX_DIR": str(index_dir)}
    built = run_cli("index", "build", "--world", str(tiny_world), "--json", env=env)
    assert built.returncode == 0, built.stderr
    report = json.loads(built.stdout)
    assert {n: r["status"] for n, r in report.items()} == {"splade": "up to date", "dense": "up to date"}

    got = run_cli(
        "retrieve", "jeju island restaurants", "-k", "5", "--world", str(tiny_world), "--json", env=env
    )
    assert got.returncode == 0, got.stderr
    hits = json.loads(got.stdout)["hits"]
    assert len(hits) == 5 and set(hits[0]["sources"]) <= {"splade", "dense", "behavioural"}

    empty = run_cli("retrieve", "  ", "--world", str(tiny_world), env=env)
    assert empty.returncode == 2 and "empty query" in empty.stderr

    stale = run_cli(
        "retrieve",
        "jeju",
        "--world",
        str(tiny_world),
        env={**env, "SMARTBLOCK_RETRIEVAL__SPLADE__DOC_MAX_TERMS": "7"},
    )
    assert stale.returncode == 2 and "built from other data or settings" in stale.stderr


def test_cli_eval_needs_exactly_one_source(tmp_path: Path) -> None:
    both = run_cli("retrieval", "eval", "--world", str(tmp_path), "--beir", str(tmp_path), env={})
    assert both.returncode == 2 and "exactly one" in both.stderr


def test_importing_retrieval_and_the_cli_starts_nothing_heavy() -> None:
    code = (
        "import sys, search.cli, retrieval.system, retrieval.evaluate, retrieval.java, data.logstats;"
        "print(sorted(m for m in ('torch', 'jnius', 'transformers', 'faiss') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
