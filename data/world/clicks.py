"""The click model: what a shown block is worth to a session, whether it is clicked, and how long it is read.

One definition for the day simulator (``traffic.simulate_day``) and the closed loop that plays the world's
users against a running API (``search.experiments.traffic``), so a click logged by either comes from the same
users. Shapes: N pages of P blocks; arrays are (N, P) unless noted.

utility = relevance x quality x (1 + w x affinity), with affinity in [-1, 1] the session's taste for the
block's facet (topic blocks) or genre (genre blocks) and w the query kind's room for taste; realized utility
adds N(0, noise_sd); P(click at position k) = theta_k x sigmoid(slope x (realized - midpoint)); dwell grows
with the realized utility.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from data.world.population import affinity
from data.world.queries import AFFINITY_WEIGHT
from data.world.scales import ClickModel
from data.world.sim_catalog import N_FACETS, N_GENRES, TOPIC

if TYPE_CHECKING:
    from data.world.state import World

DWELL_MEDIAN_MS = 20_000  # at the click model's midpoint utility
DWELL_RANGE_MS = (500, 1_800_000)


def page_relevance(world: World, key: int, blocks: np.ndarray) -> np.ndarray:
    """Intent relevance of any ``blocks`` (1-D) to query key ``key``: 0 for blocks of another entity.

    The logging policy only ranks the key's own entity; a served page may hold any block of the catalogue.
    """
    cat, book = world.catalog, world.queries
    rel = book.relevance(key, cat, blocks)
    return np.where(cat.block_entity[blocks] == book.key_entity[key], rel, 0.0)


def _taste_weight(kind: np.ndarray) -> np.ndarray:
    return AFFINITY_WEIGHT[kind][:, None]


def utility(
    world: World,
    blocks: np.ndarray,
    relevance: np.ndarray,
    kind: np.ndarray,
    facet_taste: np.ndarray,
    genre_taste: np.ndarray,
) -> np.ndarray:
    """Expected (noise-free) utility of each shown block for its page's session and query.

    ``blocks`` valid block indices, ``relevance`` their intent relevance to the page's query, ``kind`` (N,)
    the query kinds, ``facet_taste`` (N, F) and ``genre_taste`` (N, G) the pages' session tastes.
    """
    cat = world.catalog
    is_topic = cat.block_kind[blocks] == TOPIC
    f_taste = np.take_along_axis(facet_taste, np.maximum(cat.block_facet[blocks], 0), axis=1) * N_FACETS
    g_taste = np.take_along_axis(genre_taste, np.maximum(cat.block_genre[blocks], 0), axis=1) * N_GENRES
    personal = affinity(np.where(is_topic, f_taste, g_taste), 1) * _taste_weight(kind)
    return relevance * cat.block_quality[blocks] * (1 + personal)


def nonpersonal_utility(
    world: World, blocks: np.ndarray, relevance: np.ndarray, kind: np.ndarray
) -> np.ndarray:
    """What the best non-personal ranker could know: the utility with the population's average taste."""
    cat = world.catalog
    is_topic = cat.block_kind[blocks] == TOPIC
    b_dom = cat.entity_domain[cat.block_entity[blocks]]
    average = np.where(
        is_topic,
        world.mean_facet_affinity[b_dom, np.maximum(cat.block_facet[blocks], 0)],
        world.mean_genre_affinity[np.maximum(cat.block_genre[blocks], 0)],
    ) * _taste_weight(kind)
    return relevance * cat.block_quality[blocks] * (1 + average)


def oracle_page_utility(
    world: World, key: int, kind: int, facet_taste: np.ndarray, genre_taste: np.ndarray, k: int
) -> float:
    """Mean true utility of the best ``k`` blocks of the whole catalogue for this session and query: the
    ceiling of utility@k (only the query entity's blocks are relevant, so only they are scored)."""
    blocks = world.catalog.entity_blocks[world.queries.key_entity[key]]
    rel = page_relevance(world, key, blocks)[None, :]
    u = utility(world, blocks[None, :], rel, np.array([kind]), facet_taste[None, :], genre_taste[None, :])[0]
    return float(np.sort(u)[::-1][:k].sum()) / k


def realize(cm: ClickModel, expected: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The utility this reader gets this time: the expectation plus per-(page, block) noise."""
    return expected + rng.normal(0, cm.noise_sd, expected.shape)


def click_probability(cm: ClickModel, realized: np.ndarray, position: np.ndarray) -> np.ndarray:
    """Position-based model: P(click) = theta[position] x sigmoid(slope x (realized - midpoint)).

    ``position`` is 1-based (as logged) and at most the model's page size, broadcastable to ``realized``.
    """
    theta = np.asarray(cm.theta)[np.asarray(position) - 1]
    return theta / (1 + np.exp(-cm.slope * (realized - cm.midpoint)))


def draw_clicks(rng: np.random.Generator, p_click: np.ndarray) -> np.ndarray:
    return rng.random(p_click.shape) < p_click


def pick_docs(world: World, blocks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The doc index a click on each of ``blocks`` (1-D) lands on, uniform over the block's docs."""
    offsets = world.catalog.doc_offsets
    n_docs = offsets[blocks + 1] - offsets[blocks]
    return offsets[blocks] + (rng.random(len(blocks)) * n_docs).astype(np.int64)


def dwell_ms(cm: ClickModel, realized: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Time (ms) until a reader who clicked comes back: log-normal, longer for a more useful block."""
    dwell = np.exp(
        np.log(DWELL_MEDIAN_MS) + 1.5 * (realized - cm.midpoint) + rng.normal(0, 0.7, realized.shape)
    )
    return np.clip(dwell, *DWELL_RANGE_MS).astype(np.int64)
