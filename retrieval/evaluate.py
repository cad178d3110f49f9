"""Offline evaluation of the retrievers: on a simulated world (recall of truly good blocks) and on any
BEIR-layout collection (nDCG@10 and recall@100 against human judgements).

World: the last ``world_eval_days`` days are evaluated; the behavioural retriever learns only from the days
before them. A request's relevant blocks are its shown blocks with truth grade >= ``min_grade``; recall@k is
averaged over requests that have at least one.

BEIR: judged queries are split once, by a seeded hash of their ids, into validation and test. Fusion weights
are tuned on validation; every system is reported on the test queries only.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.days import Progress
from data.errors import DataError
from data.layout import DataLayout
from data.metrics import ndcg_against, recall
from retrieval.base import BaseRetriever, Hit
from retrieval.config import RetrievalSettings
from retrieval.corpus import BeirCollection, load_beir
from retrieval.fusion import fuse, tune
from retrieval.system import build_text_indexes, load_world_retrievers

WORLD_KS = (10, 50, 100)


def _search_all(
    retriever: BaseRetriever, queries: Sequence[str], k: int, progress: Progress | None, chunk: int = 64
) -> list[list[Hit]]:
    out: list[list[Hit]] = []
    for start in range(0, len(queries), chunk):
        out.extend(retriever.batch_search(list(queries[start : start + chunk]), k))
        if progress:
            progress(f"{retriever.name} search", len(out), len(queries))
    return out


def world_relevance(layout: DataLayout, days: Sequence, min_grade: int) -> tuple[list[str], list[set[str]]]:
    """(query, relevant block ids) per request of ``days`` that has at least one relevant block."""
    tables = []
    for day in days:
        path = layout.truth / "grades" / f"day={day.isoformat()}" / "part-0.parquet"
        if not path.is_file():
            raise DataError("truth grades missing (evaluation needs a simulated world)", path=path)
        tables.append(pq.read_table(path, columns=["request_id", "block_id", "grade"]))
    grades = pa.concat_tables(tables)
    grades = grades.filter(pc.greater_equal(grades["grade"], min_grade))
    imps = layout.read_events("impressions", start=days[0], end=days[-1], validate_rows=False)
    rows = grades.join(imps.select(["request_id", "query"]), "request_id", join_type="inner")
    relevant: dict[str, set[str]] = defaultdict(set)
    query_of: dict[str, str] = {}
    for r, b, q in zip(
        rows["request_id"].to_pylist(), rows["block_id"].to_pylist(), rows["query"].to_pylist(), strict=True
    ):
        relevant[r].add(b)
        query_of[r] = q
    requests = sorted(relevant)
    return [query_of[r] for r in requests], [relevant[r] for r in requests]


def _recalls(runs: Sequence[Sequence[Hit]], relevant: Sequence[set[str]], ks: Sequence[int]) -> dict:
    width = max(ks)
    hits = np.zeros((len(runs), width))
    for i, (run, rel) in enumerate(zip(runs, relevant, strict=True)):
        for j, h in enumerate(run[:width]):
            hits[i, j] = h.id in rel
    n_rel = np.array([len(r) for r in relevant])
    return {f"recall@{k}": round(float(recall(hits, n_rel, k).mean()), 4) for k in ks}


def evaluate_world(world: Path, settings: RetrievalSettings, *, progress: Progress | None = None) -> dict:
    """Recall@10/50/100 of each member and ``fused`` on the world's last days."""
    layout = DataLayout(Path(world))
    days = layout.days("impressions")
    n_eval = settings.eval.world_eval_days
    if len(days) <= n_eval:
        raise DataError(
            f"the world has {len(days)} days of logs; evaluating the last {n_eval} needs at least one more "
            "day to learn from",
            path=layout.root,
        )
    eval_days = days[-n_eval:]
    queries, relevant = world_relevance(layout, eval_days, settings.eval.min_grade)
    retrievers = load_world_retrievers(
        world, settings, before=eval_days[0], build_missing=True, progress=progress
    )
    unique = sorted(set(queries))
    position = {q: i for i, q in enumerate(unique)}
    k = max(WORLD_KS)
    result: dict[str, dict] = {}
    for name, retriever in retrievers.items():
        runs = _search_all(retriever, unique, k, progress)
        per_request = [runs[position[q]] for q in queries]
        result[name] = {**_recalls(per_request, relevant, WORLD_KS), "requests": len(queries)}
    result["_eval"] = {
        "days": [d.isoformat() for d in eval_days],
        "learned_before": eval_days[0].isoformat(),
        "distinct_queries": len(unique),
        "min_grade": settings.eval.min_grade,
    }
    return result


def split_queries(
    query_ids: Sequence[str], validation_share: float, seed: int
) -> tuple[list[str], list[str]]:
    """(validation, test) by a seeded hash of each id: stable when queries are added or reordered."""
    validation, test = [], []
    for qid in query_ids:
        h = int.from_bytes(hashlib.sha256(f"{seed}:{qid}".encode()).digest()[:8], "big") / 2**64
        (validation if h < validation_share else test).append(qid)
    return validation, test


def _per_query_metrics(
    runs: Sequence[Sequence[Hit]], qrels: Sequence[Mapping[str, int]]
) -> dict[str, np.ndarray]:
    """nDCG@10 and recall@100 of each run against its judgements, one value per query."""
    width = 100
    ranked = np.zeros((len(runs), width))
    relevant = np.zeros((len(runs), width))
    ideal_width = max((len(q) for q in qrels), default=1)
    ideal = np.full((len(runs), ideal_width), -1.0)
    for i, (run, judged) in enumerate(zip(runs, qrels, strict=True)):
        for j, h in enumerate(run[:width]):
            ranked[i, j] = judged.get(h.id, 0)
            relevant[i, j] = judged.get(h.id, 0) > 0
        ideal[i, : len(judged)] = list(judged.values())
    n_rel = np.array([sum(g > 0 for g in q.values()) for q in qrels])
    return {"ndcg@10": ndcg_against(ranked, ideal, 10), "recall@100": recall(relevant, n_rel, 100)}


def _ir_metrics(runs: Sequence[Sequence[Hit]], qrels: Sequence[Mapping[str, int]]) -> dict[str, float]:
    return {name: round(float(v.mean()), 4) for name, v in _per_query_metrics(runs, qrels).items()}


def beir_per_query(
    folder: Path, settings: RetrievalSettings, index_dir: Path, members: Sequence[str]
) -> dict[str, dict[str, np.ndarray]]:
    """Each member's nDCG@10 and recall@100 per judged query (every one, in the collection's order), and
    ``_test`` (a 0/1 mask of the test split): for paired comparisons, which a mean over a few dozen
    queries hides."""
    collection = load_beir(folder)
    retrievers, _ = build_text_indexes(collection.passages, index_dir, settings, list(members))
    qids = [q for q in collection.queries if collection.qrels.get(q)]
    texts = [collection.queries[q] for q in qids]
    judged = [collection.qrels[q] for q in qids]
    out = {
        name: _per_query_metrics(_search_all(r, texts, 100, None), judged) for name, r in retrievers.items()
    }
    _, test = split_queries(
        list(collection.queries), settings.eval.validation_share, settings.eval.split_seed
    )
    out["_test"] = {"mask": np.isin(qids, test)}
    return out


def evaluate_beir(
    folder: Path,
    settings: RetrievalSettings,
    index_dir: Path,
    *,
    members: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> dict:
    """bm25 (the baseline), splade, dense and ``fused`` (of ``members``) on a BEIR folder's test split."""
    collection: BeirCollection = load_beir(folder)
    members = list(members if members is not None else settings.beir_members)
    if "behavioural" in members:
        raise DataError(
            "a BEIR collection has no logs: the behavioural retriever cannot take part", path=folder
        )
    names = list(dict.fromkeys(["bm25", "splade", "dense", *members]))
    retrievers, _ = build_text_indexes(collection.passages, index_dir, settings, names, progress=progress)
    qids = list(collection.queries)
    texts = [collection.queries[q] for q in qids]
    depth = max(settings.fusion.depth, 100)
    runs = {name: _search_all(r, texts, depth, progress) for name, r in retrievers.items()}
    validation, test = split_queries(qids, settings.eval.validation_share, settings.eval.split_seed)
    index_of = {q: i for i, q in enumerate(qids)}

    def subset(name: str, ids: Sequence[str]) -> list[list[Hit]]:
        return [runs[name][index_of[q]] for q in ids]

    def ndcg10(ids: Sequence[str]) -> Callable[[list[list[Hit]]], float]:
        judged = [collection.qrels[q] for q in ids]
        return lambda fused: _ir_metrics(fused, judged)["ndcg@10"]

    tuned, validation_ndcg = tune(
        {m: subset(m, validation) for m in members}, ndcg10(validation), settings.fusion, 100
    )
    test_qrels = [collection.qrels[q] for q in test]
    result: dict[str, dict] = {}
    for name in ("bm25", "splade", "dense"):
        result[name] = {**_ir_metrics(subset(name, test), test_qrels), "queries": len(test)}
    fused_runs = [fuse({m: runs[m][index_of[q]] for m in members}, tuned, 100) for q in test]
    result["fused"] = {**_ir_metrics(fused_runs, test_qrels), "queries": len(test)}
    result["_eval"] = {
        "collection": collection.name,
        "split": "test",
        "validation_queries": len(validation),
        "test_queries": len(test),
        "fused_members": list(members),
        "fusion": {
            "method": tuned.method,
            "normalisation": tuned.normalisation,
            "weights": tuned.weights,
            "validation_ndcg@10_neighbourhood": round(validation_ndcg, 4),
        },
    }
    return result
