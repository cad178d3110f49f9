"""Online analysis of an experiment from its event log: per-variant metrics, lifts, SRM, interleaving.

In: the experiment config and a data folder with ``events/impressions`` and ``events/interactions`` (what
``smartblock events export`` writes, or a world). Out: one JSON-ready dict per experiment.

Which rows belong to an experiment: the impressions whose ``experiment`` lists it (comma-separated when the
user is in experiments of several layers; the i-th variant belongs to the i-th experiment). Held-back users
log "holdback" and users of the layer's other experiments log those, so neither enters. A user seen in two
variants of one experiment (the config changed its salt or weights mid-run) is excluded and counted in
``mixed_users``: their exposure is a blend and would bias both arms.

Per impression: ``clicked`` (any click), ``clicks@3`` (distinct blocks clicked at positions 1-3) and the
reciprocal rank of the first click (0 without a click). A click counts once per (request, block), however
many docs of the block were opened, and only when the block was shown on that request. Each metric is a
ratio of per-user sums (``search.experiments.stats``): users are the randomization unit.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc

from data.errors import DataError
from data.layout import DataLayout
from search.experiments.stats import Z95, compare, ratio, sample_ratio, sign_test
from serving.experiments.config import Experiment, ExperimentConfig, Variant
from serving.experiments.interleaving import credit

METRICS = ("ctr", "clicks@3", "mrr")
TOP = 3  # clicks@3


@dataclass
class _Page:
    """One impression, reduced to what the metrics need."""

    user_id: str
    experiments: list[str]
    variants: list[str]
    clicked: set[int] = field(default_factory=set)  # 1-based ranks on the page (positions in order)
    teams: list[str] | None = None


def events_root(folder: Path) -> DataLayout:
    """The data folder holding ``events/``; the ``events`` folder itself is accepted too."""
    folder = Path(folder)
    if (folder / "events").is_dir():
        return DataLayout(folder)
    if folder.name == "events" and (folder / "impressions").is_dir():
        return DataLayout(folder.parent)
    raise DataError(
        "no events/impressions here (expected the layout smartblock events export writes)", path=folder
    )


def load_pages(layout: DataLayout) -> dict[str, _Page]:
    """Impressions by request id (duplicates from at-least-once delivery dropped) with their clicks.

    Rows are schema-checked but their rules are not checked again: the exporter and the simulator validate
    every record before writing it.
    """
    imps = layout.read_events("impressions", validate_rows=False)
    try:
        acts = layout.read_events("interactions", validate_rows=False)
    except DataError:
        acts = None  # an experiment that has not had a click yet has no interactions folder
    pages: dict[str, _Page] = {}
    rank_of: dict[tuple[str, str], int] = {}
    cols = imps.select(["request_id", "user_id", "experiment", "variant", "shown", "teams"]).to_pydict()
    for rid, user, exp, var, shown, teams in zip(
        cols["request_id"],
        cols["user_id"],
        cols["experiment"],
        cols["variant"],
        cols["shown"],
        cols["teams"],
        strict=True,
    ):
        if rid in pages:
            continue
        # Ranks in position order: the page as the user saw it, whatever order ``shown`` was written in;
        # ``teams`` follows ``shown``, so it is reordered the same way.
        order = sorted(range(len(shown)), key=lambda i: shown[i]["position"])
        for rank, i in enumerate(order, start=1):
            rank_of[(rid, shown[i]["block_id"])] = rank
        pages[rid] = _Page(
            user,
            exp.split(","),
            var.split(","),
            teams=[teams[i] for i in order] if teams is not None else None,
        )
    if acts is not None and acts.num_rows:
        clicks = acts.filter(pc.equal(acts["type"], "click")).select(["request_id", "block_id"])
        for rid, block in zip(clicks["request_id"].to_pylist(), clicks["block_id"].to_pylist(), strict=True):
            rank = rank_of.get((rid, block))
            if rank is not None:  # a click on a block this request did not show cannot be attributed
                pages[rid].clicked.add(rank)
    return pages


def analyze(
    config: ExperimentConfig,
    events: Path,
    experiment: str | None = None,
    *,
    pages: dict[str, _Page] | None = None,
) -> dict[str, Any]:
    """``{"events": .., "impressions": .., "experiments": [per-experiment report]}``; see ``analyze_one``."""
    layout = events_root(events)
    experiments = [config.experiment(experiment)] if experiment else config.experiments()
    pages = load_pages(layout) if pages is None else pages
    return {
        "events": str(layout.root),
        "impressions": len(pages),
        "experiments": [analyze_one(e, pages) for e in experiments],
    }


def analyze_one(experiment: Experiment, pages: dict[str, _Page]) -> dict[str, Any]:
    """One experiment: SRM over users, then per variant users, impressions, metrics with 95% CIs (user
    level), lift and p-value vs the control variant, and for interleaving variants the team-draft credit."""
    name = experiment.name
    configured = {v.name: v for v in experiment.variants}
    # user -> variant -> per-user sums [impressions, clicked, clicks@3, reciprocal rank]
    sums: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    credits: dict[str, list[tuple[str, str]]] = defaultdict(list)  # variant -> [(user, outcome)]
    unknown: dict[str, int] = defaultdict(int)
    for page in pages.values():
        if name not in page.experiments:
            continue
        idx = page.experiments.index(name)
        if idx >= len(page.variants):
            raise DataError(
                f"an impression lists experiments {page.experiments} but variants {page.variants}: "
                "the i-th variant belongs to the i-th experiment"
            )
        variant = page.variants[idx]
        if variant not in configured:
            unknown[variant] += 1
            continue
        row = sums[page.user_id].setdefault(variant, np.zeros(4))
        first = min(page.clicked) if page.clicked else 0
        row += (1, bool(page.clicked), sum(r <= TOP for r in page.clicked), 1 / first if first else 0)
        if configured[variant].interleave is not None and page.teams is not None:
            credits[variant].append((page.user_id, credit(page.teams, page.clicked)))
    mixed = {u for u, by_variant in sums.items() if len(by_variant) > 1}
    per_variant: dict[str, list[np.ndarray]] = {v: [] for v in configured}
    for user, by_variant in sums.items():
        if user not in mixed:
            ((variant, row),) = by_variant.items()
            per_variant[variant].append(row)
    arrays = {v: np.array(rows).reshape(-1, 4) for v, rows in per_variant.items()}
    weights = {v.name: v.weight for v in experiment.variants}
    srm = sample_ratio({v: len(a) for v, a in arrays.items()}, weights)
    control = experiment.control_variant.name
    ratios = {v: _ratios(a) for v, a in arrays.items()}
    variants = []
    for v in experiment.variants:
        a = arrays[v.name]
        metrics = {}
        for metric, r in ratios[v.name].items():
            entry: dict[str, Any] = {"value": _num(r.value), "ci": [_num(x) for x in r.ci]}
            if v.name != control:
                entry.update(compare(r, ratios[control][metric]).to_json())
            metrics[metric] = entry
        row: dict[str, Any] = {
            "name": v.name,
            "kind": v.kind,
            "weight": v.weight,
            "users": len(a),
            "impressions": int(a[:, 0].sum()),
            "metrics": metrics,
        }
        if v.interleave is not None:
            row["interleaving"] = _interleaving(v, [(u, o) for u, o in credits[v.name] if u not in mixed])
        variants.append(row)
    return {
        "experiment": name,
        "control": control,
        "users": sum(len(a) for a in arrays.values()),
        "impressions": int(sum(a[:, 0].sum() for a in arrays.values())),
        "mixed_users": len(mixed),
        "unknown_variants": dict(unknown),
        "srm": srm.to_json(),
        "variants": variants,
    }


def _ratios(a: np.ndarray) -> dict[str, Any]:
    n = a[:, 0]
    return {"ctr": ratio(a[:, 1], n), "clicks@3": ratio(a[:, 2], n), "mrr": ratio(a[:, 3], n)}


def _interleaving(variant: Variant, outcomes: list[tuple[str, str]]) -> dict[str, Any]:
    """Wins per ranker over interleaved impressions, the preference for b and two sign tests.

    The impression-level sign test is the textbook one; impressions of one user are correlated, so a
    user-level test (each user votes for the ranker that won more of their impressions) is reported too: it
    is the conservative reading when a few heavy users dominate.
    """
    assert variant.interleave is not None
    count = {"a": 0, "b": 0, "tie": 0}
    per_user: dict[str, int] = defaultdict(int)
    for user, outcome in outcomes:
        count[outcome] += 1
        per_user[user] += {"a": -1, "b": 1, "tie": 0}[outcome]
    decided = count["a"] + count["b"]
    share = count["b"] / decided if decided else math.nan
    half = Z95 * math.sqrt(share * (1 - share) / decided) if decided else math.nan
    users_a = sum(1 for s in per_user.values() if s < 0)
    users_b = sum(1 for s in per_user.values() if s > 0)
    return {
        "a": variant.interleave.a,
        "b": variant.interleave.b,
        "impressions": len(outcomes),
        "wins_a": count["a"],
        "wins_b": count["b"],
        "ties": count["tie"],
        "preference_b": _num(share),  # share of decided impressions won by b; 0.5 = no preference
        "preference_b_ci": [_num(share - half), _num(share + half)],
        "p_value": _num(sign_test(count["a"], count["b"])),
        "users_a": users_a,
        "users_b": users_b,
        "user_p_value": _num(sign_test(users_a, users_b)),
    }


def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


def table_rows(report: dict[str, Any]) -> list[tuple[str, ...]]:
    """Rows (variant, users, impressions, metric, value +- CI half-width, lift +- half-width, p) for a text
    table; the delta-method intervals are symmetric, so the half-width says all of it compactly."""
    rows = []
    for v in report["variants"]:
        for i, metric in enumerate(METRICS):
            m = v["metrics"][metric]
            lift = "control" if "lift" not in m else _pm(m["lift"], m["lift_ci"], 100, "{:+.1f}%")
            rows.append(
                (
                    v["name"] if i == 0 else "",
                    str(v["users"]) if i == 0 else "",
                    str(v["impressions"]) if i == 0 else "",
                    metric,
                    _pm(m["value"], m["ci"], 1, "{:.4f}"),
                    lift,
                    "" if "p_value" not in m else format_p(m["p_value"]),
                )
            )
    return rows


def _pm(value: float | None, ci: list[float | None], scale: float, fmt: str) -> str:
    if value is None:
        return "-"
    lo, hi = ci
    half = "inf" if lo is None or hi is None else fmt.format(scale * (hi - lo) / 2).lstrip("+")
    return f"{fmt.format(scale * value)} ± {half}"


def format_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.2g}" if p >= 1e-4 else "<1e-4"
