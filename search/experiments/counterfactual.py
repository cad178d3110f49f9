"""Offline (counterfactual) estimates of a ranker's clicks per page from logged data: IPS and SNIPS.

The estimators (``search.experiments.estimators``) are unbiased when the target's page for a request does not
depend on what the logging policy happened to show there. That condition decides what a target may be here. A
ranker's page must come from the request alone, so "reorder whatever was shown" is not one (the world's
logging policy shows a random page 20% of the time, and a reordering of a random page is a different policy
with a different value). The target of a trained ranker is therefore "reorder the logging policy's greedy
page": its top page for the query that day, recovered from the logs (``search.experiments.logged_pages``),
with the ranker's scores on point-in-time features computed for those blocks at each request's time
(``search.experiments.candidate_features``), also on requests that were shown a random page. Every logged
request stays in the estimate: leaving out the query-days the logs only show on random pages would select on
the exploration itself (the kept pages would be greedy more often than the propensities say, and the greedy
page's IPS came out 4% high on the small world that way). Such a request takes its query's greedy page of the
nearest other day; a query never logged greedily credits the ranker with nothing there (counted in
``greedy_page.unknown``).

Reference targets: ``logging`` (the logging policy itself, weight 1: the estimate is the observed clicks
per page, exactly) and ``greedy`` (its greedy page without the exploration; a real test of the propensities:
its estimate must match the clicks observed on the pages that were greedy). With the simulator's truth
(evaluation only), the true expected clicks of the greedy page and of the ranker's reordering are computed
(``search.experiments.simulator_truth``).
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from data.days import Progress
from data.errors import ConfigError
from data.layout import DataLayout
from search.experiments.candidate_features import candidate_features
from search.experiments.estimators import Measured, Target, TargetEstimate, estimate_target, observed
from search.experiments.logged_pages import GREEDY, Pages, greedy_pages, logged_pages, nearest_greedy
from search.experiments.simulator_truth import expected_click_probability, true_clicks
from search.jobs.results import JobResult


class GreedyPageSources(JobResult):
    """Where each request's greedy page came from (``unknown``: none logged for its query)."""

    same_day: int
    other_day: int
    unknown: int
    conflicting_query_days: int  # (query, day) pairs whose greedy placements disagree: left out


class ObservedPages(JobResult):
    all_pages: Measured
    greedy_pages: Measured


class Estimate(JobResult):
    """The estimates of every target on the days ``days`` of ``world``, beside the clicks observed."""

    world: str
    days: str
    model: str
    version: str | None = None  # ranker targets: the registry's line@version estimated
    personalized: bool | None = None  # ranker targets: whether it reads the user features
    requests: int
    greedy_page: GreedyPageSources
    observed: ObservedPages
    estimates: dict[str, TargetEstimate]


def parse_days(spec: str) -> tuple[date, date]:
    try:
        lo, _, hi = spec.partition("..")
        return date.fromisoformat(lo), date.fromisoformat(hi or lo)
    except ValueError:
        raise ConfigError(f"--days takes YYYY-MM-DD..YYYY-MM-DD or one day, got '{spec}'") from None


def estimate(
    world: Path,
    model: str,
    settings: Any,
    *,
    days: tuple[date, date] | None = None,
    registry: Path | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Estimate:
    """Estimates for ``logging``, ``greedy`` and (unless ``model`` is one of those) the ranker ``model``
    (``line`` or ``line@version`` of the registry) on days ``days`` (default: the world's test days)."""
    from ranking.world import day_split

    layout = DataLayout(Path(world))
    if days is None:
        days = day_split(layout, settings.ranking.world).test
    start, end = days
    # Greedy pages come from every logged day up to ``end``: a query-day logged only on random pages takes
    # its query's greedy page of the nearest other day (the page changes only when new blocks appear).
    history = logged_pages(layout, layout.days("impressions")[0], end)
    greedy, conflicts = greedy_pages(history)
    in_range = (history.days >= start.isoformat()) & (history.days <= end.isoformat())
    pages = history.take(in_range)
    lookup = nearest_greedy(greedy)
    pages_of: list[list[str] | None] = []
    source = {"same_day": 0, "other_day": 0, "unknown": 0}
    for q, d in zip(pages.queries, pages.days, strict=True):
        page, where = lookup(q, d)
        pages_of.append(page)
        source[where] += 1
    width = pages.block.shape[1]
    # A request with no greedy page anywhere keeps its own page length (only the ranker target needs more).
    length = np.array(
        [len(t) if t is not None else int(f.sum()) for t, f in zip(pages_of, pages.filled, strict=True)]
    )
    fill = np.arange(width)[None, :] < length[:, None]
    targets = [
        Target("logging", pages.filled, pages.filled, same_as_logging=True),
        Target("greedy", pages.filled & (np.nan_to_num(pages.propensity) > GREEDY), fill),
    ]
    ranker: dict[str, Any] = {}
    if model not in ("logging", "greedy"):
        target, ranker["version"], ranker["personalized"] = _ranker_target(
            layout, pages, pages_of, fill, model, settings, registry, start, end, progress
        )
        targets.append(target)
    sel = pages.greedy_page
    truth = expected_click_probability(layout, pages)
    results: dict[str, TargetEstimate] = {}
    for t in targets:
        row = estimate_target(pages, t, seed=seed)
        if truth is not None and t.name != "logging":
            row = row.model_copy(update={"truth_on_greedy_pages": true_clicks(pages, *truth, t, sel)})
        results[t.name] = row
    return Estimate(
        world=str(world),
        days=f"{start}..{end}",
        model=model,
        **ranker,
        requests=len(pages.request_ids),
        greedy_page=GreedyPageSources(**source, conflicting_query_days=conflicts),
        observed=ObservedPages(
            all_pages=observed(pages, np.ones(len(sel), bool), seed), greedy_pages=observed(pages, sel, seed)
        ),
        estimates=results,
    )


def _ranker_target(
    layout: DataLayout,
    pages: Pages,
    pages_of: list[list[str] | None],
    fill: np.ndarray,
    model: str,
    settings: Any,
    registry: Path | None,
    start: date,
    end: date,
    progress: Progress | None,
) -> tuple[Target, str, bool]:
    """The ranker's target (its reordering of each request's greedy page), its line@version and whether
    it reads the user features."""
    from ranking.base import read_manifest
    from ranking.registry import ModelRegistry
    from ranking.world import RELEVANCE_PREFIX, to_listwise
    from search.jobs.training import LazyReplay
    from serving.experiments.config import split_ranker

    line, version = split_ranker(model)
    reg = ModelRegistry(registry or settings.ranking.registry_dir)
    # Default: the line's current model, else its newest version (a candidate is estimated before promotion).
    versions = reg.versions(line) if line in reg.lines() else []
    version = version or reg.current(line) or (versions[-1] if versions else None)
    if version is None:
        raise ConfigError(f"model line '{line}' has no version in the registry {reg.root}")
    ranker = reg.load(line, version)
    personalized = bool(
        (read_manifest(reg.path(line, version))["metadata"].get("features") or {}).get("personalized", True)
    )
    blocks_of = {r: t for r, t in zip(pages.request_ids.tolist(), pages_of, strict=True) if t is not None}
    # A model trained with the rel_* features is scored on them as training computed them (the replay).
    relevance = any(n.startswith(RELEVANCE_PREFIX) for n in ranker.schema_.feature_names)
    replay = LazyReplay(settings, layout.root) if relevance else None
    table = candidate_features(layout, blocks_of, start, end, settings.features, progress, retrieval=replay)
    lists = to_listwise(table, personalized=personalized, relevance=relevance)
    scores = ranker.score(lists.data)
    ranks: dict[str, dict[str, int]] = {}
    offsets = lists.data.offsets
    for q, rid in enumerate(lists.request_ids.tolist()):
        lo, hi = offsets[q], offsets[q + 1]
        order = np.argsort(-scores[lo:hi], kind="stable")
        ranks[rid] = {lists.block_ids[lo + j]: pos for pos, j in enumerate(order, start=1)}
    # No greedy page known (a query logged only on random pages): the target's page is unknown, so it is
    # credited with no logged placement there (a small downward bias, reported as greedy_page.unknown).
    per_request = [ranks.get(r, {}) for r in pages.request_ids.tolist()]
    hit = np.zeros_like(pages.filled)
    for i, rank in enumerate(per_request):
        for k in np.flatnonzero(pages.filled[i]):
            hit[i, k] = rank.get(pages.block[i, k]) == k + 1
    return Target(model, hit, fill, ranks=per_request), f"{line}@{version}", personalized
