"""True expected clicks of a target's page, from the simulator's truth (evaluation only; never served).

The utilities are in ``truth/grades`` and the click model in ``truth/world_model.json``; a world without
them (a real log) has no truth and the estimates stand alone.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from data.layout import DataLayout
from search.experiments.estimators import Measured, Target, rounded
from search.experiments.logged_pages import Pages


def expected_click_probability(layout: DataLayout, pages: Pages) -> tuple[np.ndarray, np.ndarray] | None:
    """(Q, L) the click probability of each logged block *before* the position factor, i.e.
    E[sigmoid(slope (u + noise - midpoint))] from its true utility, and theta (L,) — or None without truth."""
    model_file = layout.truth / "world_model.json"
    folder = layout.truth / "grades"
    if not model_file.is_file() or not folder.is_dir():
        return None
    cm = json.loads(model_file.read_text(encoding="utf-8"))["click_model"]
    wanted = set(pages.days.tolist())
    files = [
        f for f in sorted(folder.glob("day=*/*.parquet")) if f.parent.name.removeprefix("day=") in wanted
    ]
    grades = pa.concat_tables(pq.read_table(f, columns=["request_id", "block_id", "utility"]) for f in files)
    utility = dict(
        zip(
            zip(grades["request_id"].to_pylist(), grades["block_id"].to_pylist(), strict=True),
            grades["utility"].to_pylist(),
            strict=True,
        )
    )
    u = np.zeros(pages.block.shape)
    for i, r in enumerate(pages.request_ids):
        for k in np.flatnonzero(pages.filled[i]):
            u[i, k] = utility[(r, pages.block[i, k])]
    # Gauss-Hermite quadrature of the logistic over the utility noise N(0, noise_sd).
    x, wq = np.polynomial.hermite.hermgauss(24)
    z = u[..., None] + math.sqrt(2) * cm["noise_sd"] * x
    p = (wq / (1 + np.exp(-cm["slope"] * (z - cm["midpoint"])))).sum(axis=-1) / math.sqrt(math.pi)
    theta = np.zeros(pages.block.shape[1])
    theta[: len(cm["theta"])] = cm["theta"][: len(theta)]
    return np.where(pages.filled, p, 0.0), theta


def true_clicks(pages: Pages, p: np.ndarray, theta: np.ndarray, target: Target, sel: np.ndarray) -> Measured:
    """Mean true expected clicks per page of ``target`` on the selected (greedy) pages, where the logged
    blocks are the greedy page's, so the target's page is made of blocks whose utility is known."""
    per = np.zeros(int(sel.sum()))
    for j, i in enumerate(np.flatnonzero(sel)):
        for k in np.flatnonzero(pages.filled[i]):
            pos = k if target.ranks is None else target.ranks[i][pages.block[i, k]] - 1
            per[j] += theta[pos] * p[i, k]
    se = per.std(ddof=1) / math.sqrt(per.size) if per.size > 1 else math.nan
    return Measured(
        pages=int(per.size),
        value=rounded(per.mean()),
        ci=[rounded(per.mean() - 1.96 * se), rounded(per.mean() + 1.96 * se)],
    )
