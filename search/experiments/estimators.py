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

import numpy as np
from pydantic import Field

from search.experiments.logged_pages import Pages
from search.jobs.results import JobResult

KS = (1, 3)  # clicks@k reported beside clicks per page: the fields of ClickEstimates
BOOTSTRAP = 500


class Interval(JobResult):
    """A point estimate and its 95% interval (None where not finite)."""

    value: float | None
    ci: list[float | None]


class Measured(Interval):
    """Clicks per page measured on ``pages`` pages (observed, or the simulator's true expectation)."""

    pages: int


class ClickEstimates(JobResult):
    clicks_per_page: Interval
    clicks_at_1: Interval = Field(alias="clicks@1")
    clicks_at_3: Interval = Field(alias="clicks@3")


class TargetEstimate(JobResult):
    ips: ClickEstimates
    snips: ClickEstimates
    effective_pages: float | None  # how many logged pages the estimate really rests on
    truth_on_greedy_pages: Measured | None = None  # simulated worlds only


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


def estimate_target(pages: Pages, target: Target, seed: int = 0, reps: int = BOOTSTRAP) -> TargetEstimate:
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
    methods: dict[str, dict[str, Interval]] = {"ips": {}, "snips": {}}
    for name in cuts:
        for j, method in enumerate(methods):
            draws = np.array([b[name][j] for b in boot])
            lo, hi = np.percentile(draws, [2.5, 97.5])
            methods[method][name] = Interval(value=rounded(point[name][j]), ci=[rounded(lo), rounded(hi)])
    # Effective sample size of the weights: how many logged pages the estimate really rests on.
    total = w.sum(axis=1)
    return TargetEstimate(
        ips=ClickEstimates.model_validate(methods["ips"]),
        snips=ClickEstimates.model_validate(methods["snips"]),
        effective_pages=rounded(total.sum() ** 2 / max((total**2).sum(), 1e-12), 1),
    )


def observed(pages: Pages, sel: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> Measured:
    """Observed clicks per page on the selected pages, with a bootstrap CI over them."""
    per = pages.click[sel].sum(axis=1).astype(np.float64)
    if per.size == 0:
        return Measured(pages=0, value=None, ci=[None, None])
    rng = np.random.default_rng(seed)
    draws = [per[rng.integers(0, per.size, per.size)].mean() for _ in range(reps)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return Measured(pages=int(per.size), value=rounded(per.mean()), ci=[rounded(lo), rounded(hi)])


def rounded(x: float, digits: int = 6) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None
