"""Token overlaps read straight from the CSR arrays equal scipy's sparse products exactly (the interest
features depend on every bit: training rows and served rows must match)."""

from __future__ import annotations

import numpy as np

from features.block_attributes import BlockAttributes


def test_overlaps_and_weights_equal_the_sparse_products(tiny_catalog: BlockAttributes) -> None:
    tokens = tiny_catalog.tokens
    rng = np.random.default_rng(0)
    blocks = len(tiny_catalog.ids)
    for _ in range(200):
        rows = rng.integers(0, blocks, rng.integers(1, 120))  # repeats allowed, as in any request
        others = rng.integers(0, blocks, rng.integers(1, 17))
        expected = (tokens.matrix[rows] @ tokens.matrix[others].T).toarray()
        assert np.array_equal(tokens.overlaps(rows, others), expected)
        weights = rng.random(tokens.matrix.shape[1]) * (rng.random(tokens.matrix.shape[1]) < 0.2)
        assert np.array_equal(tokens.weigh(rows, weights), tokens.matrix[rows] @ weights)
    none = np.array([], dtype=np.int64)
    assert tokens.overlaps(none, np.array([0])).shape == (0, 1)
    assert tokens.weigh(none, np.ones(tokens.matrix.shape[1])).shape == (0,)
