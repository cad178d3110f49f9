"""Simulated users: long-term preferences over domains, facets and genres, diversity, drift, activity.

Diversity is how widely a user's interest moves between sessions. A focused user's sessions follow one
stable long-term taste; a diverse user's session locks onto a facet of its own (drift), so their clicks
spread over many facets across sessions and stray far from what the population wants on average.
Personalization that knows the session therefore gains most for diverse users and on many-intent queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from data.world.sim_catalog import N_FACETS, N_GENRES
from data.world.taxonomy import DOMAINS

AFFINITY_CLIP = np.log(4.0)


@dataclass
class Population:
    diversity: np.ndarray  # (U,) in [0, 1]: 0 focused, 1 diverse
    drift: np.ndarray  # (U,) weight of the session's own focus over long-term taste
    activity: np.ndarray  # (U,) Zipf weights, sum to 1
    domain_pref: np.ndarray  # (U, D)
    facet_pref: np.ndarray  # (U, D, F) long-term facet taste per domain
    genre_pref: np.ndarray  # (U, G)
    domain_popularity: np.ndarray  # (D,)

    @property
    def n_users(self) -> int:
        return len(self.diversity)

    def user_ids(self) -> np.ndarray:
        return np.array([f"u{i:06d}" for i in range(self.n_users)], dtype=object)


def _dirichlet_rows(rng: np.random.Generator, alpha: np.ndarray) -> np.ndarray:
    """One Dirichlet draw per row of ``alpha`` (gamma trick, vectorized, floored to avoid exact zeros)."""
    g = rng.gamma(np.maximum(alpha, 1e-3))
    g = np.maximum(g, 1e-12)
    return g / g.sum(axis=-1, keepdims=True)


def build_population(n_users: int, rng: np.random.Generator) -> Population:
    n_domains = len(DOMAINS)
    diversity = rng.beta(1.2, 1.2, n_users)
    concentration = np.exp(np.log(0.3) + diversity * (np.log(1.5) - np.log(0.3)))
    drift = 0.1 + 0.8 * diversity
    ranks = rng.permutation(n_users) + 1.0
    activity = ranks**-1.1
    activity /= activity.sum()
    domain_pop = rng.dirichlet(np.full(n_domains, 4.0))
    facet_pop = rng.dirichlet(np.full(N_FACETS, 3.0), size=n_domains)  # (D, F)
    genre_pop = rng.dirichlet(np.full(N_GENRES, 3.0))
    c = concentration[:, None]
    domain_pref = _dirichlet_rows(rng, c * n_domains * domain_pop[None, :])
    facet_pref = _dirichlet_rows(rng, c[:, :, None] * N_FACETS * facet_pop[None, :, :])
    genre_pref = _dirichlet_rows(rng, c * N_GENRES * genre_pop[None, :])
    return Population(diversity, drift, activity, domain_pref, facet_pref, genre_pref, domain_pop)


def truth_users(pop: Population) -> pa.Table:
    n = pop.n_users
    return pa.table(
        {
            "user_id": pa.array(pop.user_ids(), pa.string()),
            "diversity": pop.diversity,
            "drift": pop.drift,
            "activity": pop.activity,
            "domain_pref": pa.array(list(pop.domain_pref), pa.list_(pa.float64())),
            # Flattened (domain, facet) row-major; facet names are in truth/taxonomy.json.
            "facet_pref": pa.array(list(pop.facet_pref.reshape(n, -1)), pa.list_(pa.float64())),
            "genre_pref": pa.array(list(pop.genre_pref), pa.list_(pa.float64())),
        }
    )


def affinity(taste: np.ndarray, n_options: int) -> np.ndarray:
    """Personal affinity in [-1, 1] from a taste share: 0 at the uniform share, +-1 at 4x above or below."""
    return (
        np.clip(np.log(np.maximum(taste, 1e-12) * n_options), -AFFINITY_CLIP, AFFINITY_CLIP) / AFFINITY_CLIP
    )


def mean_affinity(pop: Population) -> tuple[np.ndarray, np.ndarray]:
    """Population-average affinity per (domain, facet) and per genre, over sessions.

    Sessions pick their focus uniformly, so the expectation mixes the focused and unfocused cases exactly;
    users weigh in by activity (and, for facets, by how often they search the domain).
    """
    drift = pop.drift[:, None, None]
    lt = pop.facet_pref  # (U, D, F)
    on = affinity((1 - drift) * lt + drift, N_FACETS)
    off = affinity((1 - drift) * lt, N_FACETS)
    per_user = on / N_FACETS + off * (N_FACETS - 1) / N_FACETS
    w = pop.activity[:, None] * pop.domain_pref  # (U, D)
    facet = (w[:, :, None] * per_user).sum(axis=0) / w.sum(axis=0)[:, None]
    drift_g = pop.drift[:, None]
    on_g = affinity((1 - drift_g) * pop.genre_pref + drift_g, N_GENRES)
    off_g = affinity((1 - drift_g) * pop.genre_pref, N_GENRES)
    per_user_g = on_g / N_GENRES + off_g * (N_GENRES - 1) / N_GENRES
    genre = (pop.activity[:, None] * per_user_g).sum(axis=0)
    return facet, genre
