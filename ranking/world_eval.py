"""Evaluate rankers on a world's held-out days: NDCG against the truth grades, click MRR, by slice.

Models are fitted on the training days (early stopping on the validation day) and scored on the test days.
Besides the registered model types, three reference rows exist:

- ``logging``: the logged order (by position), i.e. the policy that produced the clicks;
- ``<model>-np``: the model without user-dependent features (``ranking.world.USER_PREFIXES``);
- ``oracle``: sorted by the truth grade itself, the ceiling.

NDCG@k uses the truth grades (0-4) of ``truth/grades``, averaged over impressions with at least one grade
above 0 (NDCG is undefined otherwise, as in ``smartblock world stats``); MRR uses the logged clicks,
averaged over impressions with a click. Truth is read here only, never as a model input.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.layout import DataLayout
from ranking.config import RankingSettings
from ranking.errors import ParameterError, WorldDataError
from ranking.evaluate import DEFAULT_KS, per_list_metrics
from ranking.models import MODELS, make_ranker
from ranking.world import WorldLists, WorldSource

REFERENCES = ("logging", "oracle")
NP_SUFFIX = "-np"
SLICES = {"entropy_bucket": "by_entropy", "diversity_bucket": "by_diversity"}


def parse_world_models(spec: str) -> list[str]:
    """``"logging,dcn,dcn-np,oracle"`` -> names; every name is a reference, a model, or a model + ``-np``."""
    names = [n.strip() for n in spec.split(",") if n.strip()]
    bad = [n for n in names if n not in REFERENCES and n.removesuffix(NP_SUFFIX) not in MODELS]
    if bad or not names:
        choices = ", ".join([*REFERENCES, *MODELS, *(f"{m}{NP_SUFFIX}" for m in MODELS)])
        raise ParameterError(f"unknown model(s) {bad or [spec]}; choose from {choices}")
    return names


def truth_grades(layout: DataLayout, lists: WorldLists) -> np.ndarray:
    """(N,) the truth grade of every row of ``lists``, joined on (request_id, block_id)."""
    folder = layout.truth / "grades"
    files = sorted(folder.glob("day=*/*.parquet")) if folder.is_dir() else []
    if not files:
        raise WorldDataError(
            f"{folder} holds no grades: evaluating against truth needs the simulator's truth/"
        )
    grades = pa.concat_tables(pq.read_table(f, columns=["request_id", "block_id", "grade"]) for f in files)
    lookup = {
        (r, b): g
        for r, b, g in zip(
            grades["request_id"].to_pylist(),
            grades["block_id"].to_pylist(),
            grades["grade"].to_pylist(),
            strict=True,
        )
    }
    req = np.repeat(lists.request_ids, lists.data.list_sizes)
    out = np.empty(lists.data.n_rows, np.float32)
    for i, key in enumerate(zip(req.tolist(), lists.block_ids.tolist(), strict=True)):
        grade = lookup.get(key)
        if grade is None:
            raise WorldDataError(f"no truth grade for request {key[0]}, block {key[1]}")
        out[i] = grade
    return out


def world_metrics(
    lists: WorldLists, grades: np.ndarray, scores: np.ndarray, ks: Sequence[int] = DEFAULT_KS
) -> dict:
    """``{"ndcg@k": .., "mrr": .., "lists": .., "by_entropy": {bucket: {...}}, "by_diversity": {...}}``."""
    graded = dataclasses.replace(lists.data, labels=grades)
    ndcgs = per_list_metrics(graded, scores, ks)
    mrr = per_list_metrics(lists.data, scores, ks=())["mrr"]
    sizes = lists.data.offsets[:-1]
    has_gain = np.maximum.reduceat(grades, sizes) > 0  # (Q,)
    has_click = np.maximum.reduceat(lists.data.labels, sizes) > 0  # (Q,)

    def summary(sel: np.ndarray) -> dict[str, Any]:
        row: dict[str, Any] = {}
        for k in ks:
            v = ndcgs[f"ndcg@{k}"][sel & has_gain]
            row[f"ndcg@{k}"] = round(float(v.mean()), 6) if v.size else None
        v = mrr[sel & has_click]
        row["mrr"] = round(float(v.mean()), 6) if v.size else None
        row["lists"] = int((sel & has_gain).sum())
        row["clicked_lists"] = int((sel & has_click).sum())
        return row

    result = summary(np.ones(lists.data.n_lists, bool))
    for meta, key in SLICES.items():
        if meta in lists.data.list_meta:
            values = lists.data.list_meta[meta]
            result[key] = {v: summary(values == v) for v in sorted(set(values.tolist()))}
    return result


def evaluate_world(
    source: WorldSource,
    names: Sequence[str],
    settings: RankingSettings,
    on_model: Callable[[str, dict[str, Any]], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Fit each model on the training days and report ``world_metrics`` on the test days, per model."""
    split = source.split
    test = source.lists(split.test, slices=True, with_truth=True)
    grades = truth_grades(source.layout, test)
    cache: dict[bool, tuple[WorldLists, WorldLists, WorldLists]] = {}

    def lists(personalized: bool) -> tuple[WorldLists, WorldLists, WorldLists]:
        if personalized not in cache:
            t = (
                test
                if personalized
                else source.lists(split.test, personalized=False, slices=True, with_truth=True)
            )
            cache[personalized] = (
                source.lists(split.train, personalized=personalized),
                source.lists(split.valid, personalized=personalized),
                t,
            )
        return cache[personalized]

    train_cfg = settings.for_world()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        extra: dict[str, Any] = {}
        if name == "logging":
            scores = -test.positions.astype(np.float64)
        elif name == "oracle":
            scores = grades.astype(np.float64)
        else:
            base = name.removesuffix(NP_SUFFIX)
            train, valid, tst = lists(not name.endswith(NP_SUFFIX))
            started = time.perf_counter()
            ranker = make_ranker(base, train_cfg).fit(train.data, valid.data)
            extra["train_seconds"] = round(time.perf_counter() - started, 1)
            scores = ranker.score(tst.data)
        results[name] = world_metrics(test, grades, scores)
        if on_model is not None:
            on_model(name, {**results[name], **extra})
    return results


def plot_by_entropy(results: dict[str, dict[str, Any]], path: Path, metric: str = "ndcg@10") -> Path:
    """A grouped bar chart of ``metric`` per entropy bucket (and overall), one bar colour per model."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    buckets = ["low", "mid", "high", "unseen"]
    present = [b for b in buckets if any(b in r.get("by_entropy", {}) for r in results.values())]
    groups = [*present, "all"]
    width = 0.8 / max(len(results), 1)
    fig, ax = plt.subplots(figsize=(1.6 * len(groups) + 3, 4.5))
    for i, (name, row) in enumerate(results.items()):
        values = [row.get("by_entropy", {}).get(b, {}).get(metric) or 0.0 for b in present] + [row[metric]]
        ax.bar(np.arange(len(groups)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(groups)) + width * (len(results) - 1) / 2, groups)
    ax.set_xlabel("query click-entropy bucket (tertiles on the training days)")
    ax.set_ylabel(f"{metric} (truth grades)")
    finite = [r[metric] for r in results.values() if r[metric] is not None]
    ax.set_ylim(max(0.0, min(finite) - 0.15) if finite else 0.0, 1.0)
    ax.legend(fontsize=8, ncol=2)
    ax.set_title(f"{metric} on the held-out days by query click entropy")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
