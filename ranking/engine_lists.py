"""Training lists dealt out to the engine's workers: shared by LightGBM and the torch rankers on Dask.

A list (one impression or query) is the unit: it never straddles two partitions, since listwise losses and
LambdaMART's gradients compare the rows of one list with each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ranking.errors import InputError

if TYPE_CHECKING:
    from distributed import Client


def list_partitions(n_lists: int, parts: int) -> list[np.ndarray]:
    """The lists of at most ``parts`` partitions, dealt out in turn: partition ``i`` holds lists ``i``,
    ``i + parts``, ... . Each partition then spans every day of the training range (the lists are in day
    order), and partition sizes differ by at most one list."""
    parts = max(1, min(parts, n_lists))
    return [np.arange(i, n_lists, parts) for i in range(parts)]


def engine_workers(client: Client) -> list[str]:
    """The addresses of the cluster's workers, sorted."""
    workers = sorted(client.scheduler_info()["workers"])
    if not workers:
        raise InputError("the Dask cluster has no workers to train on")
    return workers
