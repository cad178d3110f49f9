"""The session model: who searches, what a session is after, and the queries it types.

One definition, used by the day simulator (``traffic.simulate_day``, vectorized over a day's sessions) and by
the closed loop against a running API (``search.experiments.traffic``, one session at a time). Both draw from
the same random stream layout, so the functions are written once and called with any number of sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from data.world.queries import BROAD, GENRE_Q, SPECIAL, TOPIC_Q
from data.world.sim_catalog import N_FACETS, N_GENRES

if TYPE_CHECKING:
    from data.world.state import World

# Query-kind mix of a session's first query, and of a later query that stays on the same entity.
FIRST_QUERY_MIX = np.array([0.45, 0.30, 0.10, 0.15])
REFINE_QUERY_MIX = np.array([0.10, 0.60, 0.20, 0.10])
SAME_ENTITY_NEXT = 0.65
# When people search: sessions start between 06:00 and 22:00 (seconds into the day).
ACTIVE_HOURS_S = (6 * 3600, 22 * 3600)
MEAN_QUERIES_PER_SESSION = 2.5  # 1 + min(Poisson(1.5), 5), rounded


@dataclass
class Sessions:
    """S sessions: their user, domain, taste for this session, and how many queries they type."""

    user: np.ndarray  # (S,) user index
    domain: np.ndarray  # (S,) domain index
    facet_taste: np.ndarray  # (S, F) the session's facet shares within its domain (rows sum to 1)
    genre_taste: np.ndarray  # (S, G) the session's genre shares (rows sum to 1)
    n_queries: np.ndarray  # (S,) 1-6

    def __len__(self) -> int:
        return len(self.user)


@dataclass
class Queries:
    """Q queries of some sessions, flattened in session order (``session`` indexes into a ``Sessions``)."""

    session: np.ndarray  # (Q,)
    step: np.ndarray  # (Q,) 0 for a session's first query
    kind: np.ndarray  # (Q,) BROAD, TOPIC_Q, GENRE_Q or SPECIAL
    key: np.ndarray  # (Q,) query key (intent)
    string: np.ndarray  # (Q,) index into QueryBook.strings: what the user types


def categorical(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One draw per row of a (N, C) probability matrix."""
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(len(probs)) * cdf[:, -1]
    return np.minimum((cdf < u[:, None]).sum(axis=1), probs.shape[1] - 1)


def draw_users(world: World, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` user indices, each drawn by activity (heavy users search more)."""
    pop = world.population
    return rng.choice(pop.n_users, size=n, p=pop.activity)


def draw_sessions(world: World, rng: np.random.Generator, user: np.ndarray) -> Sessions:
    """A session for each of ``user``: its domain, its taste and its length.

    A session mixes the user's long-term taste with a focus of its own, weighted by the user's drift: a
    diverse user's sessions each lock onto a different facet and genre.
    """
    pop = world.population
    n = len(user)
    domain = categorical(rng, pop.domain_pref[user])
    drift = pop.drift[user][:, None]
    focus_f = rng.integers(0, N_FACETS, n)
    focus_g = rng.integers(0, N_GENRES, n)
    facet_taste = (1 - drift) * pop.facet_pref[user, domain] + drift * np.eye(N_FACETS)[focus_f]
    genre_taste = (1 - drift) * pop.genre_pref[user] + drift * np.eye(N_GENRES)[focus_g]
    n_queries = 1 + np.minimum(rng.poisson(1.5, n), 5)
    return Sessions(user, domain, facet_taste, genre_taste, n_queries)


def draw_queries(world: World, rng: np.random.Generator, sessions: Sessions) -> Queries:
    """Every query of ``sessions``, in order: later queries often refine the same entity (co-queries)."""
    scale, book = world.scale, world.queries
    n_q = sessions.n_queries
    domain = sessions.domain
    sess = np.repeat(np.arange(len(sessions)), n_q)
    step = np.arange(len(sess)) - np.repeat(np.cumsum(n_q) - n_q, n_q)
    nq = len(sess)
    epd = scale.entities_per_domain
    zipf = 1.0 / np.arange(1, epd + 1)
    new_entity = domain[sess] * epd + rng.choice(epd, size=nq, p=zipf / zipf.sum())
    keep = (step > 0) & (rng.random(nq) < SAME_ENTITY_NEXT)
    mix = np.where(keep[:, None], REFINE_QUERY_MIX[None, :], FIRST_QUERY_MIX[None, :])
    kind = categorical(rng, mix)
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
    # A query that keeps the entity takes it from the last query that chose one.
    source = np.maximum.accumulate(np.where(keep, 0, np.arange(nq)))
    entity = new_entity[source]
    facet = categorical(rng, sessions.facet_taste[sess])
    genre = categorical(rng, sessions.genre_taste[sess])
    key = np.where(kind == BROAD, book.broad_key[entity], key)
    key = np.where(kind == TOPIC_Q, book.topic_key[entity, facet], key)
    key = np.where(kind == GENRE_Q, book.genre_key[entity, genre], key)
    string = book.sample_strings(key, rng.random(nq))
    return Queries(sess, step, kind, key, string)


def query_gaps_s(rng: np.random.Generator, step: np.ndarray) -> np.ndarray:
    """Seconds from each query to its session's previous one (0 for a first query): 15 s to 10 min."""
    return np.where(step > 0, np.minimum(15 + rng.exponential(60, len(step)), 600), 0.0)
