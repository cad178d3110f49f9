"""Offline (counterfactual) estimates of a ranker's clicks per page from logged data: IPS and SNIPS.

The estimator is the item-position model of Li et al. (2018, "Offline Evaluation of Ranking Policies with
Click Models"): a click depends on the block and its position only, so for every logged shown (block b,
position k) with click c and logged propensity mu(b, k) (the logging policy's marginal probability of that
placement, ``shown.propensity``), a target policy that puts b at k gets weight ``w = 1[target puts b at k] /
mu(b, k)``. IPS = sum(c w) / N over the N logged pages; SNIPS divides position k's sum by the sum of its
weights instead (then multiplies by the share of pages the target fills at k), trading a little bias for
much less variance. Unbiased when the target's page for a request does not depend on what the logging
policy happened to show there.

That last condition decides what a target may be here. A ranker's page must come from the request alone,
so "reorder whatever was shown" is not one (the world's logging policy shows a random page 20% of the time,
and a reordering of a random page is a different policy with a different value). The target of a trained
ranker is therefore "reorder the logging policy's greedy page": its top page for the query that day,
recovered from the logs (the placements with propensity > 1/2: no other block can hold a position that
often), with the ranker's scores on point-in-time features computed for those blocks at each request's
time, also on requests that were shown a random page. Every logged request stays in the estimate: leaving
out the query-days the logs only show on random pages would select on the exploration itself (the kept
pages would be greedy more often than the propensities say, and the greedy page's IPS came out 4% high on
the small world that way). Such a request takes its query's greedy page of the nearest other day; a query
never logged greedily credits the ranker with nothing there (counted in ``greedy_page.unknown``).

Reference targets: ``logging`` (the logging policy itself, weight 1: the estimate is the observed clicks
per page, exactly) and ``greedy`` (its greedy page without the exploration; a real test of the propensities:
its estimate must match the clicks observed on the pages that were greedy). With the simulator's truth
(evaluation only), the true expected clicks of the greedy page and of the ranker's reordering are computed
from the utilities in ``truth/grades`` and the click model in ``truth/world_model.json``.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from data.days import Progress
from data.errors import ConfigError, DataError
from data.layout import DataLayout
from data.schemas import TIMESTAMP

GREEDY = 0.5  # a placement with a marginal propensity above this is the policy's own choice, not exploration
KS = (1, 3)  # clicks@k reported beside clicks per page
BOOTSTRAP = 500



@dataclass
class Pages:
    """Logged pages as (Q, L) arrays in position order (L = longest page); padding: "" / nan / False."""

    request_ids: np.ndarray  # (Q,)
    queries: np.ndarray  # (Q,)
    days: np.ndarray  # (Q,) ISO day
    block: np.ndarray  # (Q, L) str
    propensity: np.ndarray  # (Q, L)
    click: np.ndarray  # (Q, L) 0/1: the block was clicked (once however many docs)
    filled: np.ndarray  # (Q, L) bool

    @property
    def greedy_page(self) -> np.ndarray:
        """(Q,) whether every shown block sits where the logging policy puts it without exploring."""
        return np.where(self.filled, self.propensity > GREEDY, True).all(axis=1)

    def take(self, keep: np.ndarray) -> Pages:
        return Pages(*(getattr(self, f)[keep] for f in self.__dataclass_fields__))


def logged_pages(layout: DataLayout, start: date, end: date) -> Pages:
    """The impressions of days [start, end] with their clicks (a click on a block not shown is ignored)."""
    imps = layout.read_events("impressions", start=start, end=end, validate_rows=False)
    if imps.num_rows == 0:
        raise DataError(f"no impressions between {start} and {end}", path=layout.root)
    acts = layout.read_events("interactions", start=start, end=end, validate_rows=False)
    # Interleaved pages are random (the draft's coin flips) with untracked marginals: no IPS source.
    if "teams" in imps.schema.names:
        imps = imps.filter(pc.is_null(imps["teams"]))
    versions = sorted(set(imps["ranker_version"].to_pylist()))
    if len(versions) > 1:
        # Pages of several policies, each logging its own propensities, are not one policy's randomization.
        raise DataError(
            f"impressions of {len(versions)} rankers between {start} and {end} ({versions[:4]}): "
            "the estimate needs the pages of one logging policy",
            path=layout.root,
        )
    # At-least-once archives may repeat an impression: keep its first copy.
    rid = imps["request_id"].to_numpy(zero_copy_only=False)
    _, first = np.unique(rid, return_index=True)
    imps = imps.take(np.sort(first))
    clicks = acts.filter(pc.equal(acts["type"], "click"))
    clicked = set(zip(clicks["request_id"].to_pylist(), clicks["block_id"].to_pylist(), strict=True))
    shown = imps["shown"].to_pylist()
    width = max(len(s) for s in shown)
    q = imps.num_rows
    block = np.full((q, width), "", dtype=object)
    prop = np.full((q, width), np.nan)
    click = np.zeros((q, width), np.int8)
    rids = imps["request_id"].to_pylist()
    for i, (r, items) in enumerate(zip(rids, shown, strict=True)):
        for item in items:
            k = item["position"] - 1
            if k >= width:
                raise DataError(f"request {r}: position {k + 1} on a page of {len(items)} blocks")
            block[i, k] = item["block_id"]
            prop[i, k] = item["propensity"]
            click[i, k] = (r, item["block_id"]) in clicked
    days = pc.strftime(imps["ts"], format="%Y-%m-%d", locale="C").to_numpy(zero_copy_only=False)
    return Pages(
        np.array(rids, dtype=object),
        imps["query"].to_numpy(zero_copy_only=False),
        days,
        block,
        prop,
        click,
        block != "",
    )


def greedy_pages(pages: Pages) -> tuple[dict[tuple[str, str], list[str]], int]:
    """The logging policy's greedy page per (query, day), from its greedy placements; and how many
    (query, day) pairs were left out because their placements conflict (two blocks claim one position)."""
    slots: dict[tuple[str, str], dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    length: dict[tuple[str, str], int] = defaultdict(int)
    for i in np.flatnonzero(pages.greedy_page):
        key = (pages.queries[i], pages.days[i])
        n = int(pages.filled[i].sum())
        length[key] = max(length[key], n)
        for k in range(n):
            slots[key][k].add(pages.block[i, k])
    out, conflicts = {}, 0
    for key, by_pos in slots.items():
        if any(len(v) != 1 for v in by_pos.values()) or len(by_pos) != length[key]:
            conflicts += 1  # e.g. one query string of two intents: no single greedy page
            continue
        out[key] = [next(iter(by_pos[k])) for k in range(length[key])]
    return out, conflicts


def _nearest_greedy(
    greedy: dict[tuple[str, str], list[str]],
) -> Callable[[str, str], tuple[list[str] | None, str]]:
    """(query, day) -> (greedy page, "same_day" | "other_day" | "unknown"); an earlier day is preferred
    (its blocks all existed already), then a later one."""
    days_of: dict[str, list[str]] = defaultdict(list)
    for q, d in sorted(greedy):
        days_of[q].append(d)

    def lookup(query: str, day: str) -> tuple[list[str] | None, str]:
        if (query, day) in greedy:
            return greedy[(query, day)], "same_day"
        days = days_of.get(query)
        if not days:
            return None, "unknown"
        earlier = [d for d in days if d < day]
        return greedy[(query, earlier[-1] if earlier else days[0])], "other_day"

    return lookup


# Features of the greedy page's blocks at every request's time -----------------------------------------------


def candidate_features(
    layout: DataLayout,
    blocks_of: dict[str, list[str]],
    start: date,
    end: date,
    settings: Any,
    progress: Progress | None = None,
) -> pa.Table:
    """Point-in-time features (as ``features.dataset.build_training_set`` computes them) of the given
    blocks of each request in ``blocks_of``, in the training-set layout ``ranking.world.to_listwise`` reads.

    The replay is the training set's own (live state before the request, batch snapshot of its day); only
    the blocks differ: ``blocks_of[request_id]`` instead of the blocks shown. Position is the block's place
    in that list; propensity and click are placeholders (this table is only scored).
    """
    from features.catalog import BlockCatalog
    from features.dataset import feature_arrays, point_in_time_rows
    from features.definitions import FEATURES

    catalog = BlockCatalog.from_tables(layout.read_blocks(), layout.read_docs())
    imps = layout.read_events("impressions", end=end, validate_rows=False)
    acts = layout.read_events("interactions", end=end, validate_rows=False)
    rows: list[np.ndarray] = []
    cols: dict[str, list] = defaultdict(list)

    def blocks_for(event: Any) -> tuple[str, ...] | None:
        found = blocks_of.get(event.request_id)
        return tuple(found) if found is not None else None

    for event, blocks, features in point_in_time_rows(
        imps, acts, start, end, catalog, settings, blocks_for, progress=progress
    ):
        rows.append(features)
        for k, b in enumerate(blocks, start=1):
            cols["request_id"].append(event.request_id)
            cols["ts"].append(event.ts_ms)
            cols["user_id"].append(event.user_id)
            cols["query"].append(event.query)
            cols["block_id"].append(b)
            cols["position"].append(k)
    features = np.concatenate(rows) if rows else np.zeros((0, len(FEATURES)))
    arrays: dict[str, pa.Array] = {k: pa.array(v) for k, v in cols.items()}
    arrays["ts"] = pa.array(cols["ts"], pa.int64()).cast(TIMESTAMP)
    arrays["propensity"] = pa.array(np.ones(len(features)))
    arrays["click"] = pa.array(np.zeros(len(features), np.int8))
    return pa.table({**arrays, **feature_arrays(features)})


# Targets and the estimator ----------------------------------------------------------------------------------


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
            result[method][name] = {"value": _r(point[name][j]), "ci": [_r(lo), _r(hi)]}
    # Effective sample size of the weights: how many logged pages the estimate really rests on.
    total = w.sum(axis=1)
    result["effective_pages"] = _r(total.sum() ** 2 / max((total**2).sum(), 1e-12), 1)
    return result


def observed(pages: Pages, sel: np.ndarray, seed: int = 0, reps: int = BOOTSTRAP) -> dict[str, Any]:
    """Observed clicks per page on the selected pages, with a bootstrap CI over them."""
    per = pages.click[sel].sum(axis=1).astype(np.float64)
    if per.size == 0:
        return {"pages": 0, "value": None, "ci": [None, None]}
    rng = np.random.default_rng(seed)
    draws = [per[rng.integers(0, per.size, per.size)].mean() for _ in range(reps)]
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return {"pages": int(per.size), "value": _r(per.mean()), "ci": [_r(lo), _r(hi)]}


def _r(x: float, digits: int = 6) -> float | None:
    return round(float(x), digits) if math.isfinite(x) else None


# Truth (simulator only; evaluation may read it) -----------------------------------------------------------


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


def true_clicks(pages: Pages, p: np.ndarray, theta: np.ndarray, target: Target, sel: np.ndarray) -> dict:
    """Mean true expected clicks per page of ``target`` on the selected (greedy) pages, where the logged
    blocks are the greedy page's, so the target's page is made of blocks whose utility is known."""
    per = np.zeros(int(sel.sum()))
    for j, i in enumerate(np.flatnonzero(sel)):
        for k in np.flatnonzero(pages.filled[i]):
            pos = k if target.ranks is None else target.ranks[i][pages.block[i, k]] - 1
            per[j] += theta[pos] * p[i, k]
    se = per.std(ddof=1) / math.sqrt(per.size) if per.size > 1 else math.nan
    return {
        "pages": int(per.size),
        "value": _r(per.mean()),
        "ci": [_r(per.mean() - 1.96 * se), _r(per.mean() + 1.96 * se)],
    }


# The whole job ----------------------------------------------------------------------------------------------


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
) -> dict[str, Any]:
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
    lookup = _nearest_greedy(greedy)
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
    info: dict[str, Any] = {}
    if model not in ("logging", "greedy"):
        target, info = _ranker_target(
            layout, pages, pages_of, fill, model, settings, registry, start, end, progress
        )
        targets.append(target)
    sel = pages.greedy_page
    truth = expected_click_probability(layout, pages)
    results: dict[str, Any] = {}
    for t in targets:
        row = estimate_target(pages, t, seed=seed)
        if truth is not None and t.name != "logging":
            row["truth_on_greedy_pages"] = true_clicks(pages, *truth, t, sel)
        results[t.name] = row
    return {
        "world": str(world),
        "days": f"{start}..{end}",
        "model": model,
        **info,
        "requests": len(pages.request_ids),
        "greedy_page": {**source, "conflicting_query_days": conflicts},
        "observed": {
            "all_pages": observed(pages, np.ones(len(sel), bool), seed),
            "greedy_pages": observed(pages, sel, seed),
        },
        "estimates": results,
    }


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
) -> tuple[Target, dict[str, Any]]:
    from ranking.base import read_manifest
    from ranking.registry import ModelRegistry
    from ranking.world import to_listwise
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
        (read_manifest(reg.path(line, version)).get("features") or {}).get("personalized", True)
    )
    blocks_of = {r: t for r, t in zip(pages.request_ids.tolist(), pages_of, strict=True) if t is not None}
    table = candidate_features(layout, blocks_of, start, end, settings.features, progress)
    lists = to_listwise(table, personalized=personalized)
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
    return Target(model, hit, fill, ranks=per_request), {
        "version": f"{line}@{version}",
        "personalized": personalized,
    }
