"""IPS and SNIPS estimates of a target policy's clicks per page from logged pages, and observed clicks.

The estimator is the item-position model of Li et al. (2018, "Offline Evaluation of Ranking Policies with
Click Models"): a click depends on the block and its position only, so for every logged shown (block b,
position k) with click c and logged propensity mu(b, k) (the logging policy's marginal probability of that
placement, ``shown.propensity``), a target policy that puts b at k gets weight ``w = 1[target puts b at k] /
mu(b, k)``. IPS = sum(c w) / N over the N logged pages; SNIPS divides position k's sum by the sum of its
weights instead (then multiplies by the share of pages the target fills at k), trading a little bias for
much less variance. Unbiased when the target's page for a request does not depend on what the logging
policy happened to show there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from search.experiments.logged_pages import Pages

KS = (1, 3)  # clicks@k reported beside clicks per page
BOOTSTRAP = 500


@dataclass
class Target:
    """What a target policy does with each logged slot: ``hit`` (Q, L) it puts the logged block at its
    logged position; ``fill`` (Q, L) its page has a block at that position. ``same_as_logging``: the target
    is the logging policy itself (weight 1 everywhere)."""

    name: str
    hit: np.ndarray
    fill: np.ndarray
    same_as_logging: bool = False
    ranks: list[dict[str, int]] | None = None  # per request: block -> the target's position (truth check)


def estimate_target(pages: Pages, target: Target, seed: int = 0, reps: int = BOOTSTRAP) -> dict[str, Any]:
    """IPS and SNIPS clicks per page (and clicks@k) with 95% percentile-bootstrap CIs over requests."""
    if target.same_as_logging:
        w = pages.filled.astype(np.float64)
    else:
        w = np.where(target.hit & pages.filled, 1.0 / np.where(pages.filled, pages.propensity, 1.0), 0.0)
    num = pages.click * w
    fill = target.fill.astype(np.float64)
    cuts = {"clicks_per_page": num.shape[1], **{f"clicks@{k}": k for k in KS}}

    def values(idx: np.ndarray | None) -> dict[str, tuple[float, float]]:
        n_, w_, f_ = (num, w, fill) if idx is None else (num[idx], w[idx], fill[idx])
        col_num, col_w, col_fill = n_.sum(axis=0), w_.sum(axis=0), f_.mean(axis=0)
        per_pos = np.divide(col_num, col_w, out=np.zeros_like(col_num), where=col_w > 0) * col_fill
        out = {}
        for name, cut in cuts.items():
            out[name] = (float(col_num[:cut].sum() / len(n_)), float(per_pos[:cut].sum()))
        return out

    point = values(None)
    rng = np.random.default_rng(seed)
    boot = [values(rng.integers(0, len(num), len(num))) for _ in range(reps)]
    result: dict[str, Any] = {"ips": {}, "snips": {}}
    for name in cuts:
        for j, method in enumerate(("ips", "snips")):
            draws = np.array([b[name][j] for b in boot])
            lo, hi = np.percentile(draws, [2.5, 97.5])
            result[method][name] = {"value": rounded(point[name][j]), "ci": [rounded(lo), rounded(hi)]}
    # Effective sample size of the weights: how many logged pages the estimate really rests on.
    total = w.sum(axis=1)
    result["effective_pages"] = rounded(total.sum() ** 2 / max((total**2).sum(), 1e-12), 1)
    return result


def observed(pages: Pages, sel: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> dict[str, Any]:
    """Observed clicks per page on the selected pages, with a bootstrap CI over them."""
    per = pages.click[sel].sum(axis=1).astype(np.float64)
    if per.size == 0:
        return {"pages": 0, "value": None, "ci": [None, None]}
    rng = np.random.default_rng(seed)
    draws = [per[rng.integers(0, per.size, per.size)].mean() for _ in range(reps)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"pages": int(per.size), "value": rounded(per.mean()), "ci": [rounded(lo), rounded(hi)]}


def rounded(x: float, digits: int = 6) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None
