"""The generated world in memory: catalogue, population and query book, with the ids the logs use.

Its own module because the session, click and traffic models all take it (and the closed loop against a
running API builds one from a world folder).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.world.population import Population
from data.world.queries import QueryBook
from data.world.scales import WorldScale
from data.world.sim_catalog import SimCatalog


@dataclass
class World:
    scale: WorldScale
    catalog: SimCatalog
    population: Population
    queries: QueryBook
    block_ids: np.ndarray
    doc_ids: np.ndarray
    user_ids: np.ndarray
    mean_facet_affinity: np.ndarray  # (D, F)
    mean_genre_affinity: np.ndarray  # (G,)
