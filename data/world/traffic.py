"""One simulated day of traffic: sessions, queries, the logging policy's pages, clicks and dwell.

Everything is vectorized over the day's impressions; a day depends only on (seed, day), so days can be
generated in parallel and still give the same bytes. The session model (``sessions``) and the click model
(``clicks``) live in their own modules because the closed loop against a running API uses them too.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from data.contracts import Interaction, SearchImpression
from data.schemas import TIMESTAMP, arrow_schema
from data.world.clicks import (
    click_probability,
    draw_clicks,
    dwell_ms,
    nonpersonal_utility,
    pick_docs,
    realize,
    utility,
)
from data.world.queries import QueryBook
from data.world.sessions import (
    ACTIVE_HOURS_S,
    MEAN_QUERIES_PER_SESSION,
    draw_queries,
    draw_sessions,
    draw_users,
    query_gaps_s,
)
from data.world.sim_catalog import epoch_ms
from data.world.state import World

LOGGING_POLICY = "logging-policy-v1"


@dataclass
class DayLog:
    impressions: pa.Table
    interactions: pa.Table
    grades: pa.Table  # truth: one row per shown (impression, block)


def policy_candidates(world: World, day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The logging policy's candidate lists for every query key on ``day``.

    Returns (cand, rel, n): cand (K, M) block indices best-first by the policy's non-personal score, padded
    with -1; rel (K, M) their intent relevance; n (K,) the number of candidates.
    """
    cat, book, m = world.catalog, world.queries, world.scale.candidates
    cand = np.full((book.n_keys, m), -1, dtype=np.int64)
    rel = np.zeros((book.n_keys, m))
    n = np.zeros(book.n_keys, dtype=np.int64)
    keys_of_entity: list[list[int]] = [[] for _ in cat.entity_names]
    for k, e in enumerate(book.key_entity):
        keys_of_entity[e].append(k)
    for e, blocks in enumerate(cat.entity_blocks):
        live = blocks[cat.block_created_day[blocks] <= day]
        for k in keys_of_entity[e]:
            r = book.relevance(k, cat, live)
            score = r * cat.block_prior[live]
            order = np.argsort(-score, kind="stable")[:m]
            cand[k, : len(order)] = live[order]
            rel[k, : len(order)] = r[order]
            n[k] = len(order)
    return cand, rel, n


def simulate_day(world: World, day: int, seed: int) -> DayLog:
    scale, book = world.scale, world.queries
    rng = np.random.default_rng([seed, day])
    cm = scale.click_model
    page = scale.page_size

    # Sessions (who, which domain, what this one is after) and their queries: the shared session model.
    n_sess = int(np.ceil(scale.impressions_per_day / MEAN_QUERIES_PER_SESSION))
    sessions = draw_sessions(world, rng, draw_users(world, rng, n_sess))
    n_q = sessions.n_queries
    queries = draw_queries(world, rng, sessions)
    sess, step, kind, key, query = queries.session, queries.step, queries.kind, queries.key, queries.string
    nq = len(sess)

    # Time: sessions start in the active hours; queries follow 15 s to 10 min apart.
    start_s = rng.uniform(*ACTIVE_HOURS_S, n_sess)
    offset_s = start_s[sess] + _cumsum_by_group(query_gaps_s(rng, step), n_q)
    ts = epoch_ms(scale, day) + (offset_s * 1000).astype(np.int64)
    order = np.argsort(ts, kind="stable")
    sess, kind, key, query, ts = sess[order], kind[order], key[order], query[order], ts[order]

    # The logging policy: its deterministic top of the page, or with probability epsilon a uniformly
    # random page from its candidates, so every shown (block, position) has a known, positive propensity.
    cand_all, rel_all, n_all = policy_candidates(world, day)
    cand, rel, m = cand_all[key], rel_all[key], n_all[key]
    randomized = rng.random(nq) < scale.epsilon
    local = np.tile(np.arange(page), (nq, 1))
    if randomized.any():
        r = rng.random((int(randomized.sum()), cand.shape[1]))
        r[np.arange(cand.shape[1])[None, :] >= m[randomized][:, None]] = np.inf
        local[randomized] = np.argsort(r, axis=1)[:, :page]
    shown_ok = local < m[:, None]  # pages of entities with few blocks are shorter
    block = np.take_along_axis(cand, local, axis=1)
    b_rel = np.take_along_axis(rel, local, axis=1)
    positions = np.arange(page)[None, :]
    propensity = (1 - scale.epsilon) * (local == positions) + scale.epsilon / np.maximum(m, 1)[:, None]

    # Utility and clicks from the shared click model, and truth grades.
    b_safe = np.where(shown_ok, block, 0)
    util = utility(world, b_safe, b_rel, kind, sessions.facet_taste[sess], sessions.genre_taste[sess])
    nonpersonal = nonpersonal_utility(world, b_safe, b_rel, kind)
    realized = realize(cm, util, rng)
    p_click = click_probability(cm, realized, np.arange(1, page + 1)[None, :])
    clicked = draw_clicks(rng, p_click) & shown_ok
    grade = np.digitize(util, cm.grade_cuts)

    request_ids = np.array([f"r{day:03d}-{i:07d}" for i in range(nq)], dtype=object)
    session_ids = np.array([f"s{day:03d}-{s:06d}" for s in range(n_sess)], dtype=object)
    users = world.user_ids[sessions.user[sess]]
    impressions = _impressions_table(
        world, request_ids, ts, users, session_ids[sess], book, query, block, propensity, shown_ok, m
    )
    interactions = _interactions_table(world, rng, request_ids, ts, users, block, realized, clicked)
    row, col = np.nonzero(shown_ok)
    grades = pa.table(
        {
            "request_id": pa.array(request_ids[row], pa.string()),
            "block_id": pa.array(world.block_ids[block[row, col]], pa.string()),
            "position": pa.array(col + 1, pa.int64()),
            "grade": pa.array(grade[row, col], pa.int8()),
            "utility": util[row, col],
            # The best non-personal ranker's view: relevance x quality x the population's average taste.
            "relevance": nonpersonal[row, col],
            "randomized": pa.array(randomized[row]),
        }
    )
    return DayLog(impressions, interactions, grades)


def _cumsum_by_group(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    total = np.cumsum(values)
    starts = np.cumsum(sizes) - sizes
    return total - np.repeat(total[starts] - values[starts], sizes)


def _impressions_table(
    world: World,
    request_ids: np.ndarray,
    ts: np.ndarray,
    users: np.ndarray,
    sessions: np.ndarray,
    book: QueryBook,
    query: np.ndarray,
    block: np.ndarray,
    propensity: np.ndarray,
    shown_ok: np.ndarray,
    n_candidates: np.ndarray,
) -> pa.Table:
    schema = arrow_schema(SearchImpression)
    row, col = np.nonzero(shown_ok)
    shown_type = schema.field("shown").type
    items = pa.StructArray.from_arrays(
        [
            pa.array(world.block_ids[block[row, col]], pa.string()),
            pa.array(col + 1, pa.int64()),
            pa.array(propensity[row, col], pa.float64()),
        ],
        fields=list(shown_type.value_type),
    )
    offsets = np.concatenate([[0], np.cumsum(shown_ok.sum(axis=1))]).astype(np.int32)
    shown = pa.ListArray.from_arrays(pa.array(offsets), items, type=shown_type)
    n = len(request_ids)
    strings = np.array(book.strings, dtype=object)
    return pa.Table.from_arrays(
        [
            pa.array(request_ids, pa.string()),
            pa.array(ts, pa.int64()).cast(TIMESTAMP),
            pa.array(users, pa.string()),
            pa.array(sessions, pa.string()),
            pa.array(strings[query], pa.string()),
            shown,
            pa.array(n_candidates, pa.int64()),
            pa.array(["default"] * n, pa.string()),
            pa.array(["logging"] * n, pa.string()),
            pa.array([LOGGING_POLICY] * n, pa.string()),
            pa.nulls(n, schema.field("teams").type),  # no interleaving in the logging policy's pages
        ],
        schema=schema,
    )


def _interactions_table(
    world: World,
    rng: np.random.Generator,
    request_ids: np.ndarray,
    ts: np.ndarray,
    users: np.ndarray,
    block: np.ndarray,
    realized: np.ndarray,
    clicked: np.ndarray,
) -> pa.Table:
    """A click row per click on one of the block's docs, then a dwell row when the reader comes back."""
    row, col = np.nonzero(clicked)
    b = block[row, col]
    doc = pick_docs(world, b, rng)
    click_ts = ts[row] + 2000 + col * 1500 + rng.exponential(3000, len(b)).astype(np.int64)
    dwell = dwell_ms(world.scale.click_model, realized[row, col], rng)
    n = len(b)
    both = np.concatenate
    table = pa.Table.from_arrays(
        [
            pa.array(both([request_ids[row], request_ids[row]]), pa.string()),
            pa.array(both([click_ts, click_ts + dwell]), pa.int64()).cast(TIMESTAMP),
            pa.array(both([users[row], users[row]]), pa.string()),
            pa.array(both([world.block_ids[b], world.block_ids[b]]), pa.string()),
            pa.array(both([world.doc_ids[doc], world.doc_ids[doc]]), pa.string()),
            pa.array(both([col + 1, col + 1]), pa.int64()),
            pa.array(["click"] * n + ["dwell"] * n, pa.string()),
            pa.array(
                both([np.zeros(n, dtype=np.int64), dwell]),
                pa.int64(),
                mask=both([np.ones(n, bool), np.zeros(n, bool)]),
            ),
            pa.nulls(2 * n, pa.string()),  # event_id: simulated clients do not retry
        ],
        schema=arrow_schema(Interaction),
    )
    return table.take(np.argsort(both([click_ts, click_ts + dwell]), kind="stable"))
