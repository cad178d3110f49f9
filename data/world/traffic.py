"""One simulated day of traffic: sessions, queries, the logging policy's pages, clicks and dwell.

Everything is vectorized over the day's impressions; a day depends only on (seed, day), so days can be
generated in parallel and still give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from data.contracts import Interaction, SearchImpression
from data.schemas import TIMESTAMP, arrow_schema
from data.world.catalog import N_FACETS, N_GENRES, TOPIC, Catalog, epoch_ms
from data.world.population import Population, affinity
from data.world.queries import AFFINITY_WEIGHT, BROAD, GENRE_Q, SPECIAL, TOPIC_Q, QueryBook
from data.world.scales import WorldScale

LOGGING_POLICY = "logging-policy-v1"
# Query-kind mix of a session's first query, and of a later query that stays on the same entity.
FIRST_QUERY_MIX = np.array([0.45, 0.30, 0.10, 0.15])
REFINE_QUERY_MIX = np.array([0.10, 0.60, 0.20, 0.10])
SAME_ENTITY_NEXT = 0.65


@dataclass
class World:
    scale: WorldScale
    catalog: Catalog
    population: Population
    queries: QueryBook
    block_ids: np.ndarray
    doc_ids: np.ndarray
    user_ids: np.ndarray
    mean_facet_affinity: np.ndarray  # (D, F)
    mean_genre_affinity: np.ndarray  # (G,)


@dataclass
class DayLog:
    impressions: pa.Table
    interactions: pa.Table
    grades: pa.Table  # truth: one row per shown (impression, block)


def _categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (N, C) probability matrix."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)


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
    scale, cat, pop, book = world.scale, world.catalog, world.population, world.queries
    rng = np.random.default_rng([seed, day])
    cm = scale.click_model
    page = scale.page_size

    # Sessions: who, which domain, and what this session is after (its facet and genre focus).
    n_sess = int(np.ceil(scale.impressions_per_day / 2.5))
    user = rng.choice(pop.n_users, size=n_sess, p=pop.activity)
    domain = _categorical(rng, pop.domain_pref[user])
    drift = pop.drift[user][:, None]
    focus_f = rng.integers(0, N_FACETS, n_sess)
    focus_g = rng.integers(0, N_GENRES, n_sess)
    sess_facet = (1 - drift) * pop.facet_pref[user, domain] + drift * np.eye(N_FACETS)[focus_f]
    sess_genre = (1 - drift) * pop.genre_pref[user] + drift * np.eye(N_GENRES)[focus_g]
    n_q = 1 + np.minimum(rng.poisson(1.5, n_sess), 5)

    # Queries, flattened: a session's later queries often refine the same entity (co-query structure).
    sess = np.repeat(np.arange(n_sess), n_q)
    step = np.arange(len(sess)) - np.repeat(np.cumsum(n_q) - n_q, n_q)
    nq = len(sess)
    epd = scale.entities_per_domain
    zipf = 1.0 / np.arange(1, epd + 1)
    new_entity = domain[sess] * epd + rng.choice(epd, size=nq, p=zipf / zipf.sum())
    keep = (step > 0) & (rng.random(nq) < SAME_ENTITY_NEXT)
    mix = np.where(keep[:, None], REFINE_QUERY_MIX[None, :], FIRST_QUERY_MIX[None, :])
    kind = _categorical(rng, mix)
    key = np.zeros(nq, dtype=np.int64)
    special_pick = rng.random(nq)
    for d, specials in enumerate(book.special_keys):
        rows = np.flatnonzero((kind == SPECIAL) & (domain[sess] == d))
        if len(specials) == 0:
            kind[rows] = TOPIC_Q
            continue
        key[rows] = specials[(special_pick[rows] * len(specials)).astype(np.int64)]
        new_entity[rows] = book.key_entity[key[rows]]
        keep[rows] = False
    source = np.maximum.accumulate(np.where(keep, 0, np.arange(nq)))
    entity = new_entity[source]
    facet = _categorical(rng, sess_facet[sess])
    genre = _categorical(rng, sess_genre[sess])
    key = np.where(kind == BROAD, book.broad_key[entity], key)
    key = np.where(kind == TOPIC_Q, book.topic_key[entity, facet], key)
    key = np.where(kind == GENRE_Q, book.genre_key[entity, genre], key)
    query = book.sample_strings(key, rng.random(nq))

    # Time: sessions start between 06:00 and 22:00; queries follow 15 s to 10 min apart.
    start_s = rng.uniform(6 * 3600, 22 * 3600, n_sess)
    gaps = np.where(step > 0, np.minimum(15 + rng.exponential(60, nq), 600), 0.0)
    offset_s = start_s[sess] + _cumsum_by_group(gaps, n_q)
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

    # Utility, clicks and truth grades.
    b_safe = np.where(shown_ok, block, 0)
    is_topic = cat.block_kind[b_safe] == TOPIC
    f_taste = np.take_along_axis(sess_facet[sess], np.maximum(cat.block_facet[b_safe], 0), axis=1) * N_FACETS
    g_taste = np.take_along_axis(sess_genre[sess], np.maximum(cat.block_genre[b_safe], 0), axis=1) * N_GENRES
    taste_weight = AFFINITY_WEIGHT[kind][:, None]
    personal = affinity(np.where(is_topic, f_taste, g_taste), 1) * taste_weight
    # What the best non-personal ranker could know: relevance with the population's average taste.
    b_dom = cat.entity_domain[cat.block_entity[b_safe]]
    average = (
        np.where(
            is_topic,
            world.mean_facet_affinity[b_dom, np.maximum(cat.block_facet[b_safe], 0)],
            world.mean_genre_affinity[np.maximum(cat.block_genre[b_safe], 0)],
        )
        * taste_weight
    )
    base = b_rel * cat.block_quality[b_safe]
    utility = base * (1 + personal)
    nonpersonal = base * (1 + average)
    realized = utility + rng.normal(0, cm.noise_sd, utility.shape)
    theta = np.asarray(cm.theta)[None, :]
    p_click = theta / (1 + np.exp(-cm.slope * (realized - cm.midpoint)))
    clicked = (rng.random(utility.shape) < p_click) & shown_ok
    grade = np.digitize(utility, cm.grade_cuts)

    request_ids = np.array([f"r{day:03d}-{i:07d}" for i in range(nq)], dtype=object)
    session_ids = np.array([f"s{day:03d}-{s:06d}" for s in range(n_sess)], dtype=object)
    users = world.user_ids[user[sess]]
    impressions = _impressions_table(
        world, request_ids, ts, users, session_ids[sess], book, query, block, propensity, shown_ok, m
    )
    interactions = _interactions_table(
        world, rng, request_ids, ts, users, block, realized, clicked, cm.midpoint
    )
    row, col = np.nonzero(shown_ok)
    grades = pa.table(
        {
            "request_id": pa.array(request_ids[row], pa.string()),
            "block_id": pa.array(world.block_ids[block[row, col]], pa.string()),
            "position": pa.array(col + 1, pa.int64()),
            "grade": pa.array(grade[row, col], pa.int8()),
            "utility": utility[row, col],
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
    midpoint: float,
) -> pa.Table:
    """A click row per click on one of the block's docs, then a dwell row when the reader comes back."""
    cat = world.catalog
    row, col = np.nonzero(clicked)
    b = block[row, col]
    n_docs = cat.doc_offsets[b + 1] - cat.doc_offsets[b]
    doc = cat.doc_offsets[b] + (rng.random(len(b)) * n_docs).astype(np.int64)
    click_ts = ts[row] + 2000 + col * 1500 + rng.exponential(3000, len(b)).astype(np.int64)
    dwell = np.exp(np.log(20_000) + 1.5 * (realized[row, col] - midpoint) + rng.normal(0, 0.7, len(b)))
    dwell_ms = np.clip(dwell, 500, 1_800_000).astype(np.int64)
    n = len(b)
    both = np.concatenate
    table = pa.Table.from_arrays(
        [
            pa.array(both([request_ids[row], request_ids[row]]), pa.string()),
            pa.array(both([click_ts, click_ts + dwell_ms]), pa.int64()).cast(TIMESTAMP),
            pa.array(both([users[row], users[row]]), pa.string()),
            pa.array(both([world.block_ids[b], world.block_ids[b]]), pa.string()),
            pa.array(both([world.doc_ids[doc], world.doc_ids[doc]]), pa.string()),
            pa.array(both([col + 1, col + 1]), pa.int64()),
            pa.array(["click"] * n + ["dwell"] * n, pa.string()),
            pa.array(
                both([np.zeros(n, dtype=np.int64), dwell_ms]),
                pa.int64(),
                mask=both([np.ones(n, bool), np.zeros(n, bool)]),
            ),
        ],
        schema=arrow_schema(Interaction),
    )
    return table.take(np.argsort(both([click_ts, click_ts + dwell_ms]), kind="stable"))
