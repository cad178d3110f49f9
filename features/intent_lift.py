"""How much more (or less) a user, or a query's searchers, click blocks of an intent than shown blocks of
that intent are clicked on average: clicks over expected clicks per (user, intent) and (query, intent).

In: the logged impressions (shown blocks and positions) and clicks before a cutoff, the block catalogue.
Out: shrunk lifts per user and per query, for the daily batch snapshot (``features.batch``).

Why a lift and not a click share: a share counts what the logging policy chose to show as much as what the
person wanted (everyone's clicks lean to the intents shown most). Dividing by the clicks expected from the
same exposures (each shown block weighted by the examination prior of its position and the intent's
population click rate) leaves the person's own taste. Few exposures say little, so each lift is shrunk
towards the user's overall lift (for a user) or 1 (for a query) by ``prior_clicks`` expected clicks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data.logstats import dictionary_codes, shown_blocks
from features.block_attributes import BlockAttributes

RATE_PRIOR_EXAMS = 20.0


@dataclass(frozen=True)
class IntentLifts:
    """Lifts (>= 0, 1 = as clicked as the average shown block of that intent) keyed by intent id."""

    user: dict[str, dict[int, float]]
    query: dict[str, dict[int, float]]
    rate: dict[int, float]  # per intent: clicks per examination over everyone (what an average person does)
    evidence_user: dict[str, dict[int, float]]  # expected clicks behind each user lift (to keep the best)
    user_overall: dict[str, float]  # the user's lift over all intents: what an intent not kept falls back to


def intent_lifts(
    impressions: pa.Table,
    interactions: pa.Table,
    catalog: BlockAttributes,
    position_prior: tuple[float, ...],
    prior_clicks: float,
) -> IntentLifts:
    shown = shown_blocks(impressions, interactions)
    # One order whatever order the logs were read in (logs plus an archive, days in any order), so the
    # float sums, and the stored bytes, are the same: impressions by request id, each one's blocks in order.
    rank = np.empty(impressions.num_rows, dtype=np.int64)
    rank[pc.sort_indices(impressions["request_id"]).to_numpy()] = np.arange(impressions.num_rows)
    order = np.argsort(rank[shown.parent], kind="stable")
    parent = shown.parent[order]
    block_rows = np.array([catalog.index.get(b, -1) for b in shown.block_ids.to_pylist()], dtype=np.int64)
    rows = block_rows[shown.block[order]]
    intent = np.where(rows >= 0, catalog.intent[np.maximum(rows, 0)], 0)
    prior = np.asarray(position_prior, dtype=np.float64)
    exam = prior[np.clip(shown.position[order], 1, len(prior)) - 1]
    clicked = shown.clicked[order]
    keep = intent > 0
    intent, exam, clicked = intent[keep], exam[keep], clicked[keep].astype(np.float64)
    n_intents = len(catalog.intent_labels)
    # Population click rate per examination of each intent: what an average person does with it.
    intent_clicks, intent_exams = (
        np.bincount(intent, clicked, n_intents),
        np.bincount(intent, exam, n_intents),
    )
    rate = intent_clicks / np.maximum(intent_exams, 1e-12)
    expected = exam * rate[intent]
    user_codes, user_names = _first_seen(impressions["user_id"], parent[keep])
    query_codes, query_names = _first_seen(impressions["query"], parent[keep])

    user_clicks, user_expected = _sums(user_codes, intent, clicked, expected, n_intents)
    # A user's lift over all intents: how readily they click at all (the shrinkage target of their lifts).
    overall = (user_clicks.sum(axis=1) + prior_clicks) / (user_expected.sum(axis=1) + prior_clicks)
    user_lift = (user_clicks + prior_clicks * overall[:, None]) / (user_expected + prior_clicks)
    query_clicks, query_expected = _sums(query_codes, intent, clicked, expected, n_intents)
    # A query's searchers click some queries more than others: compare intents within the query.
    q_rate = query_clicks.sum(axis=1) / np.maximum(query_expected.sum(axis=1), 1e-12)
    q_expected = query_expected * q_rate[:, None]
    query_lift = (query_clicks + prior_clicks) / (q_expected + prior_clicks)
    # Rarely shown intents lean to the all-intent rate (RATE_PRIOR_EXAMS examinations' worth).
    overall_rate = intent_clicks.sum() / max(intent_exams.sum(), 1e-12)
    shrunk = (intent_clicks + RATE_PRIOR_EXAMS * overall_rate) / (intent_exams + RATE_PRIOR_EXAMS)
    return IntentLifts(
        rate={i: float(shrunk[i]) for i in np.flatnonzero(intent_exams > 0).tolist()},
        user=_by_name(user_names, user_lift, user_expected),
        query=_by_name(query_names, query_lift, query_expected),
        evidence_user=_by_name(user_names, user_expected, user_expected),
        user_overall=dict(zip(user_names, overall.tolist(), strict=True)),
    )


def _first_seen(column: pa.ChunkedArray, rows: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """``column`` at ``rows`` as codes numbered in order of first appearance, and the names in that order."""
    codes, names = dictionary_codes(column)
    distinct, first, inverse = np.unique(codes[rows], return_index=True, return_inverse=True)
    by_appearance = np.argsort(first)
    renumber = np.empty(len(distinct), dtype=np.int64)
    renumber[by_appearance] = np.arange(len(distinct))
    return renumber[inverse], names.take(pa.array(distinct[by_appearance])).to_pylist()


def _sums(
    codes: np.ndarray, intent: np.ndarray, clicked: np.ndarray, expected: np.ndarray, n_intents: int
) -> tuple[np.ndarray, np.ndarray]:
    n = int(codes.max()) + 1 if len(codes) else 0
    flat = codes * n_intents + intent
    size = n * n_intents
    return (
        np.bincount(flat, clicked, size).reshape(n, n_intents),
        np.bincount(flat, expected, size).reshape(n, n_intents),
    )


def _by_name(names: list[str], values: np.ndarray, exposure: np.ndarray) -> dict[str, dict[int, float]]:
    """Per name, the value of every intent it was shown (a never-shown intent has no lift)."""
    out: dict[str, dict[int, float]] = {}
    for n, name in enumerate(names):
        seen = np.flatnonzero(exposure[n] > 0)
        out[name] = dict(zip(seen.tolist(), values[n, seen].tolist(), strict=True))
    return out
