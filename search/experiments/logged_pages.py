"""The logged pages of one logging policy, as arrays, and that policy's greedy page per query and day.

A logged placement (block b at position k) carries the logging policy's marginal probability of it,
``shown.propensity``. A placement with a propensity above 1/2 is the policy's own (greedy) choice: no other
block can hold a position that often, so the greedy page of a query-day is recovered from those placements.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import pyarrow.compute as pc

from data.errors import DataError
from data.layout import DataLayout

GREEDY = 0.5  # a placement with a marginal propensity above this is the policy's own choice, not exploration


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


def nearest_greedy(
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
