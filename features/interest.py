"""Short-range interest: what a person searched and read lately, matched against each candidate block.

Two tallies feed it, with one set of functions: the user's recent query words and clicks (decayed over
hours, ``rt_*``) and the current session's own (``session_*``), which interleaved sessions cannot blur.
Each function returns columns without their prefix; ``features.definitions`` names them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from features.block_attributes import BlockAttributes

NEGLIGIBLE_INTEREST = 1e-3  # decayed recent-click weight below which a click no longer counts


def query_interest(
    interest: dict[int, float], catalog: BlockAttributes, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Recent query words (hash -> decayed count) against each block's keyword tokens and intent words."""
    if sum(interest.values()) <= 0:
        return {}
    return query_interest_many([interest], catalog, rows, np.zeros(len(rows), dtype=np.int64))[0]


def query_interest_many(
    interests: Sequence[dict[int, float]], catalog: BlockAttributes, rows: np.ndarray, owner: np.ndarray
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``query_interest`` of many requests in one pass: ``rows[j]`` is a candidate of request ``owner[j]``.
    Returns the columns over all rows and which rows' requests have any interest (the others' values are 0
    and are left to their defaults). Each row's sum runs over its tokens in the same order either way."""
    totals = np.array([sum(i.values()) for i in interests], dtype=np.float64)
    active = (totals > 0)[owner]
    tokens = catalog.tokens
    width = max(len(tokens.column), 1)
    keys: list[int] = []
    weights: list[float] = []
    for r, interest in enumerate(interests):
        if totals[r] > 0:
            for t, value in interest.items():
                c = tokens.column.get(t)
                if c is not None:
                    keys.append(r * width + c)
                    weights.append(value)
    scores = np.zeros(len(rows))
    if keys:
        key_arr = np.asarray(keys, dtype=np.int64)
        order = np.argsort(key_arr, kind="stable")
        key_arr, weight_arr = key_arr[order], np.asarray(weights)[order]
        at_row, cols = tokens.gather(rows)
        wanted = owner[at_row] * width + cols
        at = np.minimum(np.searchsorted(key_arr, wanted), len(key_arr) - 1)
        scores = np.bincount(
            at_row, weights=np.where(key_arr[at] == wanted, weight_arr[at], 0.0), minlength=len(rows)
        )
    intents = catalog.intent[rows].tolist()
    shares: dict[tuple[int, int], float] = {}
    intent_query = np.zeros(len(rows))
    for j, (r, i) in enumerate(zip(owner.tolist(), intents, strict=True)):
        if i and totals[r] > 0:
            share = shares.get((r, i))
            if share is None:
                interest = interests[r]
                share = shares[r, i] = (
                    sum(interest.get(t, 0.0) for t in catalog.intent_token_ids[i]) / totals[r]
                )
            intent_query[j] = share
    with np.errstate(divide="ignore", invalid="ignore"):
        share_of_all = np.where(active, scores / np.where(active, totals[owner], 1.0), 0.0)
    return {"keyword_score": scores, "keyword_share": share_of_all, "intent_query": intent_query}, active


def click_interest(
    clicked: dict[int, float], catalog: BlockAttributes, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Recent clicks (block-id hash -> decayed weight): each click times the keyword-token overlap (Jaccard)
    of the clicked block and the candidate, and the weight of clicks on blocks of the candidate's intent.
    Clicks on blocks the catalogue does not know count 0."""
    by_intent = np.zeros(len(catalog.intent_labels))
    total = 0.0
    known: list[int] = []
    weights: list[float] = []
    for block_hash, weight in clicked.items():
        if weight < NEGLIGIBLE_INTEREST:
            continue  # a click from long ago: its overlaps would add less than this
        total += weight
        row = catalog.row_of_hash(block_hash)
        if row is None:
            continue
        known.append(row)
        weights.append(weight)
        by_intent[catalog.intent[row]] += weight
    if total <= 0:
        return {}
    score = np.zeros(len(rows))
    if known:
        # Jaccard of every (candidate, clicked block) pair from one sparse product of their token rows.
        tokens = catalog.tokens
        inter = tokens.overlaps(rows, np.asarray(known))  # (n, k) shared tokens
        union = tokens.counts[rows][:, None] + tokens.counts[known][None, :] - inter
        score = (inter / np.maximum(union, 1.0)) @ np.asarray(weights)
    by_intent[0] = 0.0  # blocks without an intent share none
    mine = by_intent[catalog.intent[rows]]
    return {"click_score": score, "intent_click": mine, "intent_click_share": mine / total}


def shown_interest(
    shown: dict[int, float], catalog: BlockAttributes, rows: np.ndarray
) -> dict[str, np.ndarray]:
    """Blocks shown earlier (block-id hash -> decayed count): how often each candidate itself and blocks of
    its intent were put before the reader. Beside the clicks, they tell what was seen and left."""
    block = np.zeros(len(rows))
    by_intent = np.zeros(len(catalog.intent_labels))
    index = {int(r): j for j, r in enumerate(rows)}
    for block_hash, weight in shown.items():
        row = catalog.row_of_hash(block_hash)
        if row is None or weight < NEGLIGIBLE_INTEREST:
            continue
        by_intent[catalog.intent[row]] += weight
        if row in index:
            block[index[row]] += weight
    if not by_intent.any() and not block.any():
        return {}
    by_intent[0] = 0.0
    return {"block_shown": block, "intent_shown": by_intent[catalog.intent[rows]]}
